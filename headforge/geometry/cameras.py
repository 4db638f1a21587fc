"""One batched camera type: pinhole intrinsics with optional OpenCV distortion, OpenCV extrinsics.

Conventions (used everywhere in headforge):
- Extrinsics are world-to-camera [N, 4, 4] in the OpenCV convention: x right, y down, z forward.
- Pixel (i, j) (column i, row j) covers [i, i+1) x [j, j+1); its centre is (i + 0.5, j + 0.5).
  This is the convention of COLMAP, nerfstudio and gsplat; ``cx = width / 2`` is the image centre.
- Distortion is [N, 6] = (k1, k2, k3, k4, p1, p2): radial 1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8 and
  OpenCV's tangential terms, applied to normalised coordinates (nerfstudio's OPENCV model; COLMAP's
  OPENCV model is the k3 = k4 = 0 case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from headforge.errors import CameraError
from headforge.geometry.rotations import invert_rigid

DISTORTION_NAMES = ("k1", "k2", "k3", "k4", "p1", "p2")


@dataclass(frozen=True)
class Cameras:
    world_to_camera: Tensor  # [N, 4, 4] OpenCV
    fx: Tensor  # [N] pixels
    fy: Tensor  # [N]
    cx: Tensor  # [N]
    cy: Tensor  # [N]
    width: Tensor  # [N] int64
    height: Tensor  # [N] int64
    distortion: Tensor | None = None  # [N, 6] (k1, k2, k3, k4, p1, p2) or None for pinhole
    names: tuple[str, ...] | None = None  # per-camera labels used in error messages

    @staticmethod
    def create(world_to_camera, fx, fy, cx, cy, width, height, distortion=None, names=None,
               dtype: torch.dtype = torch.float32) -> Cameras:
        """Build cameras from anything tensor-like; scalars broadcast over the batch."""
        w2c = torch.as_tensor(world_to_camera, dtype=dtype)
        if w2c.ndim == 2:
            w2c = w2c[None]
        n = w2c.shape[0]

        def vec(v, dt=dtype):
            t = torch.as_tensor(v, dtype=dt)
            return t.expand(n).clone() if t.ndim == 0 else t.reshape(n)

        dist = None
        if distortion is not None:
            dist = torch.as_tensor(distortion, dtype=dtype)
            dist = dist.expand(n, 6).clone() if dist.ndim == 1 else dist.reshape(n, 6)
        return Cameras(w2c, vec(fx), vec(fy), vec(cx), vec(cy), vec(width, torch.int64),
                       vec(height, torch.int64), dist, None if names is None else tuple(names))

    # ------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    def __getitem__(self, index) -> Cameras:
        if isinstance(index, int):
            index = [index]
        idx = torch.as_tensor(index) if not isinstance(index, slice) else index
        names = None
        if self.names is not None:
            picked = range(len(self))[index] if isinstance(index, slice) else idx.reshape(-1).tolist()
            names = tuple(self.names[i] for i in picked)
        return Cameras(self.world_to_camera[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx],
                       self.width[idx], self.height[idx],
                       None if self.distortion is None else self.distortion[idx], names)

    @property
    def device(self) -> torch.device:
        return self.world_to_camera.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> Cameras:
        f = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return Cameras(f(self.world_to_camera), f(self.fx), f(self.fy), f(self.cx), f(self.cy),
                       self.width.to(device), self.height.to(device), f(self.distortion), self.names)

    @staticmethod
    def cat(cameras: Sequence[Cameras]) -> Cameras:
        if not cameras:
            raise ValueError("Cameras.cat needs at least one Cameras")
        has_dist = [c.distortion is not None for c in cameras]
        dist = None
        if any(has_dist):
            dist = torch.cat([c.distortion if c.distortion is not None
                              else c.fx.new_zeros(len(c), 6) for c in cameras])
        names = None
        if all(c.names is not None for c in cameras):
            names = tuple(n for c in cameras for n in c.names)
        cat = lambda attr: torch.cat([getattr(c, attr) for c in cameras])  # noqa: E731
        return Cameras(cat("world_to_camera"), cat("fx"), cat("fy"), cat("cx"), cat("cy"),
                       cat("width"), cat("height"), dist, names)

    def name(self, i: int) -> str:
        return self.names[i] if self.names is not None else f"camera {i}"

    # ------------------------------------------------------------------ derived quantities
    def intrinsics(self) -> Tensor:  # [N, 3, 3]
        K = self.fx.new_zeros(len(self), 3, 3)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1
        return K

    def camera_to_world(self) -> Tensor:  # [N, 4, 4] OpenCV
        return invert_rigid(self.world_to_camera)

    def centers(self) -> Tensor:  # [N, 3] camera positions in world coordinates
        return self.camera_to_world()[:, :3, 3]

    def forward_axes(self) -> Tensor:  # [N, 3] viewing directions (camera +z) in world coordinates
        return self.world_to_camera[:, 2, :3]

    def has_distortion(self) -> bool:
        return self.distortion is not None and bool((self.distortion != 0).any())

    def same_size(self) -> tuple[int, int]:
        """(width, height) shared by all cameras; raises if they differ (batched rendering needs it)."""
        w, h = self.width.unique(), self.height.unique()
        if len(w) != 1 or len(h) != 1:
            raise CameraError(f"cameras have different image sizes ({w.tolist()} x {h.tolist()})",
                              fix="render cameras of one size together (index the batch)")
        return int(w), int(h)

    # ------------------------------------------------------------------ image-space edits
    def resize(self, width: int | Tensor, height: int | Tensor) -> Cameras:
        """Cameras for the same views resampled to ``width`` x ``height`` (pixel-centre convention kept)."""
        width = torch.as_tensor(width, dtype=torch.int64).expand(len(self)).to(self.device)
        height = torch.as_tensor(height, dtype=torch.int64).expand(len(self)).to(self.device)
        sx, sy = width.to(self.fx) / self.width.to(self.fx), height.to(self.fy) / self.height.to(self.fy)
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                       width=width.clone(), height=height.clone())

    def scale(self, factor: float) -> Cameras:
        """Resize by ``factor`` (0.5 halves the resolution), rounding sizes to whole pixels."""
        w = torch.clamp((self.width.double() * factor).round().long(), min=1)
        h = torch.clamp((self.height.double() * factor).round().long(), min=1)
        return self.resize(w, h)

    def crop(self, x0: int, y0: int, width: int, height: int) -> Cameras:
        """Cameras of the sub-image whose top-left pixel is (x0, y0) in the current image."""
        n = len(self)
        return replace(self, cx=self.cx - x0, cy=self.cy - y0,
                       width=torch.full((n,), width, dtype=torch.int64, device=self.device),
                       height=torch.full((n,), height, dtype=torch.int64, device=self.device))

    def validate(self, source: str | Path | None = None) -> Cameras:
        """Raise :class:`CameraError` naming the camera and file for non-finite or degenerate values."""
        if len(self) == 0:
            raise CameraError("no cameras", path=source, fix="the capture must list at least one view")
        checks = [("world_to_camera", self.world_to_camera.reshape(len(self), -1)),
                  ("fx", self.fx[:, None]), ("fy", self.fy[:, None]), ("cx", self.cx[:, None]),
                  ("cy", self.cy[:, None])]
        if self.distortion is not None:
            checks.append(("distortion", self.distortion))
        for label, values in checks:
            bad = (~torch.isfinite(values)).any(-1).nonzero()
            if len(bad):
                i = int(bad[0])
                raise CameraError(f"{self.name(i)} has a non-finite {label}", path=source,
                                  fix="re-export the calibration; every value must be a finite number")
        for label, values in (("fx", self.fx), ("fy", self.fy), ("width", self.width), ("height", self.height)):
            bad = (values <= 0).nonzero()
            if len(bad):
                i = int(bad[0])
                raise CameraError(f"{self.name(i)} has {label} = {values[i].item()} (must be > 0)",
                                  path=source, fix="check the intrinsics of that camera")
        R = self.world_to_camera[:, :3, :3].double()
        ortho = (R @ R.transpose(-1, -2) - torch.eye(3, dtype=R.dtype)).abs().amax((-1, -2))
        det = torch.linalg.det(R)
        bottom = (self.world_to_camera[:, 3].double() - R.new_tensor([0, 0, 0, 1])).abs().amax(-1)
        for i in range(len(self)):
            if ortho[i] > 1e-3 or det[i] < 0.5 or bottom[i] > 1e-6:
                raise CameraError(
                    f"{self.name(i)} has a degenerate pose: its rotation is not a proper rotation "
                    f"(|R R^T - I| = {ortho[i]:.2g}, det = {det[i]:.3g}) or its last row is not 0 0 0 1",
                    path=source, fix="the pose must be a rigid transform (rotation + translation)")
        return self
