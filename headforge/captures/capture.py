"""The capture type: views (images, optional masks/depth), their cameras, frames and a train/test split.

Images are loaded lazily, one view at a time, and resampled to the capture's working resolution
(``Capture.downscale``). Cameras are kept at the files' native resolution (``native_cameras``) so that
every image can be checked against its intrinsics when it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headforge.captures.images import read_image, read_mask, resize_image
from headforge.errors import CaptureError
from headforge.geometry.cameras import Cameras
from headforge.io.files import is_missing, resolve_input


class CaptureFormat(StrEnum):
    """The camera-file formats (registered in captures/formats.py)."""

    NERFSTUDIO = "nerfstudio"
    OPENCV_JSON = "opencv_json"
    NERSEMBLE = "nersemble"
    COLMAP = "colmap"


class ColourSpace(StrEnum):
    SRGB = "srgb"  # 8-bit photos and renders (the default)
    LINEAR = "linear"  # HDR / linear-light captures


@dataclass(frozen=True)
class View:
    image_path: Path | None  # None for in-memory captures
    mask_path: Path | None = None  # separate mask file; RGBA images carry their own alpha
    depth_path: Path | None = None  # 16-bit PNG depth (see Capture.depth_unit)
    frame: int = 0  # timestep index for dynamic sequences


def viewing_angles(cameras: Cameras) -> Tensor:  # -> [N, 2] (azimuth, elevation) in degrees
    """Where each camera looks from, in the head frame (+y up, the face toward +z): the direction
    opposite its optical axis as azimuth (0 = in front of the face, 90 = the subject's left, +x) and
    elevation (90 = straight above). The same convention as ``geometry.camera_rigs.spherical_directions``."""
    d = -cameras.forward_axes().double()  # [N, 3] from the subject toward the camera
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    azimuth = torch.rad2deg(torch.atan2(d[:, 0], d[:, 2]))
    elevation = torch.rad2deg(torch.asin(d[:, 1].clamp(-1, 1)))
    return torch.stack([azimuth, elevation], -1)


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]
    test: tuple[int, ...]

    @staticmethod
    def every(num_views: int, test_every: int = 8) -> Split:
        """By index: views 0, N, 2N, ... are held out; ``test_every <= 0`` holds none.

        Blind to where the cameras are (on the 32-view sphere it holds out the left and top only);
        readers use :meth:`spread`."""
        if num_views == 0:
            raise CaptureError("the capture has no views", fix="check the camera file lists frames")
        if test_every <= 0 or num_views < 2:
            return Split(tuple(range(num_views)), ())
        test = tuple(i for i in range(num_views) if i % test_every == 0)
        return Split(tuple(i for i in range(num_views) if i % test_every != 0), test)

    @staticmethod
    def spread(cameras: Cameras, test_every: int = 8) -> Split:
        """Hold out ``ceil(N / test_every)`` views spread evenly over azimuth around the head (front,
        sides, back); ``test_every <= 0`` (or a single view) holds none.

        Targets: azimuths ``360 k / m`` (k = 0..m-1, so the first is the face) at the cameras' median
        elevation. Each target in turn takes the not yet chosen view whose viewing direction
        (:func:`viewing_angles`) is closest to it (lowest index on ties): deterministic, and top or
        bottom views are only chosen when nothing nearer the target's height exists."""
        n = len(cameras)
        if n == 0:
            raise CaptureError("the capture has no views", fix="check the camera file lists frames")
        if test_every <= 0 or n < 2:
            return Split(tuple(range(n)), ())
        m = -(-n // test_every)
        if m >= n:
            raise CaptureError(f"holding out every {test_every}. view leaves none of the {n} views to train on",
                               fix="use --test-every 2 or more (0 holds out none)")
        angles = viewing_angles(cameras)  # [N, 2]
        from_subject = _unit_directions(angles[:, 0], angles[:, 1])  # [N, 3]
        target_az = torch.arange(m, dtype=torch.float64) * (360.0 / m)
        targets = _unit_directions(target_az, torch.full_like(target_az, float(angles[:, 1].median())))  # [m, 3]
        free = torch.ones(n, dtype=torch.bool)
        chosen = []
        for t in targets:
            cos = torch.where(free, from_subject @ t, torch.tensor(-2.0, dtype=torch.float64))
            best = int(torch.argmax(cos))  # first maximum: the lowest index on ties
            chosen.append(best)
            free[best] = False
        return Split.from_test_list(n, chosen)

    @staticmethod
    def spread_per_frame(cameras: Cameras, frames: Sequence[int], test_every: int = 8) -> Split:
        """:meth:`spread` within each timestep of a sequence, so every timestep holds out its own views (the
        same cameras in each when the rig is fixed, as NeRSemble's protocol holds out cameras)."""
        frames = list(frames)
        if len(frames) != len(cameras):
            raise ValueError(f"{len(frames)} frame indices for {len(cameras)} cameras")
        test: list[int] = []
        for t in sorted(set(frames)):
            idx = [i for i, f in enumerate(frames) if f == t]
            test += [idx[k] for k in Split.spread(cameras[idx], test_every).test]
        if not test:
            return Split(tuple(range(len(frames))), ())
        return Split.from_test_list(len(frames), test)

    @staticmethod
    def from_test_list(num_views: int, test: Sequence[int]) -> Split:
        bad = [i for i in test if not 0 <= i < num_views]
        if bad:
            raise CaptureError(f"test views {bad} do not exist (capture has {num_views} views)",
                               fix="list test view indices between 0 and num_views - 1")
        test_set = set(test)
        if len(test_set) == num_views:
            raise CaptureError("every view is a test view; nothing is left to train on",
                               fix="hold out fewer views")
        return Split(tuple(i for i in range(num_views) if i not in test_set), tuple(sorted(test_set)))


def _unit_directions(azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:  # [N], [N] -> [N, 3] float64
    az, el = torch.deg2rad(azimuth_deg.double()), torch.deg2rad(elevation_deg.double())
    return torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)


@dataclass(frozen=True)
class ViewImage:
    rgb: Tensor  # [H, W, 3] float32 in [0, 1], in the capture's colour space
    alpha: Tensor | None  # [H, W] float32 in [0, 1] (mask or alpha channel), None if the view has none
    index: int


@dataclass(frozen=True)
class Capture:
    native_cameras: Cameras  # at the image files' resolution
    views: tuple[View, ...]
    split: Split
    source_format: CaptureFormat | None = None  # None: built in memory (synthetic or generated views)
    source_path: Path | None = None
    colour_space: ColourSpace = ColourSpace.SRGB
    scale: float = 1.0  # working resolution = native * scale
    depth_unit: float = 1e-4  # metres per depth-PNG unit (0.1 mm)
    # Maps the source's original world frame to this capture's world (nerfstudio's applied_transform).
    world_transform: Tensor = field(default_factory=lambda: torch.eye(4))
    images: Tensor | None = None  # in-memory RGBA [N, H, W, 4] at native resolution (synthetic captures)

    def __post_init__(self):
        if self.source_format is not None:  # a plain name becomes the enum member; unknown names raise
            object.__setattr__(self, "source_format", CaptureFormat(self.source_format))
        if len(self.views) == 0:
            raise CaptureError("the capture has no views", path=self.source_path,
                               fix="the camera file must list at least one image")
        if len(self.views) != len(self.native_cameras):
            raise ValueError(f"{len(self.views)} views but {len(self.native_cameras)} cameras")

    def __len__(self) -> int:
        return len(self.views)

    @property
    def cameras(self) -> Cameras:
        """Cameras at the working resolution."""
        return self.native_cameras if self.scale == 1.0 else self.native_cameras.scale(self.scale)

    @property
    def frames(self) -> Tensor:  # [N] int64
        return torch.tensor([v.frame for v in self.views], dtype=torch.int64)

    @property
    def has_masks(self) -> bool:
        if self.images is not None:
            return self.images.shape[-1] == 4
        return all(v.mask_path is not None for v in self.views) or self._first_image_has_alpha()

    def _first_image_has_alpha(self) -> bool:
        path = self.views[0].image_path
        return path is not None and read_image(path).shape[2] == 4

    def downscale(self, factor: float) -> Capture:
        """Work at ``1 / factor`` of the native resolution (2 halves width and height)."""
        if factor <= 0:
            raise ValueError("downscale factor must be positive")
        return replace(self, scale=1.0 / factor)

    def at_resolution(self, max_side: int) -> Capture:
        """Downscale so that the longest image side is at most ``max_side`` pixels (never upscale)."""
        longest = int(torch.maximum(self.native_cameras.width, self.native_cameras.height).max())
        return replace(self, scale=min(1.0, max_side / longest))

    def subset(self, indices: Sequence[int]) -> Capture:
        """A capture of the given views, all of them train views (their split role is dropped)."""
        idx = list(indices)
        return replace(self, native_cameras=self.native_cameras[idx], views=tuple(self.views[i] for i in idx),
                       split=Split(tuple(range(len(idx))), ()),
                       images=None if self.images is None else self.images[idx])

    def with_split(self, split: Split) -> Capture:
        return replace(self, split=split)

    def load(self, index: int) -> ViewImage:
        """Read view ``index`` at the working resolution, checking it against its intrinsics."""
        cam = self.native_cameras[index]
        w, h = int(cam.width), int(cam.height)
        view = self.views[index]
        if self.images is not None:
            img = self.images[index].numpy()
            where = f"in-memory view {index}"
        else:
            img = read_image(view.image_path)
            where = str(view.image_path)
        if img.shape[0] != h or img.shape[1] != w:
            raise CaptureError(
                f"image is {img.shape[1]}x{img.shape[0]} but its camera ({cam.name(0)}) says {w}x{h}",
                path=where, fix="give the intrinsics at the image resolution, or resize the images")
        alpha = img[..., 3] if img.shape[2] == 4 else None
        rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)
        if view.mask_path is not None:
            alpha = read_mask(view.mask_path)
            if alpha.shape != (h, w):
                raise CaptureError(f"mask is {alpha.shape[1]}x{alpha.shape[0]} but the image is {w}x{h}",
                                   path=view.mask_path, fix="masks must have the size of their images")
        tw, th = (int(x) for x in (self.cameras.width[index], self.cameras.height[index]))
        rgb = resize_image(rgb, tw, th)
        if alpha is not None:
            alpha = resize_image(alpha[..., None], tw, th)[..., 0]
            rgb = rgb * (alpha[..., None] > 0)  # no colour where there is no subject (RGBA fringe)
        return ViewImage(torch.from_numpy(np.ascontiguousarray(rgb)).float(),
                         None if alpha is None else torch.from_numpy(np.ascontiguousarray(alpha)).float(),
                         index)

    def load_depth(self, index: int) -> Tensor:
        """View ``index``'s depth map [H, W] in metres (camera-space z; 0 = no surface) at the native resolution.

        Depth is not resampled to the working resolution: averaging depths across an edge invents surfaces."""
        path = self.views[index].depth_path
        if path is None:
            raise CaptureError(f"view {index} ({self.native_cameras.name(index)}) has no depth map",
                               path=self.source_path, fix="use a capture rendered with depth (headforge render)")
        d = read_image(path, "depth map")
        if d.ndim == 3:
            d = d[..., 0]
        cam = self.native_cameras[index]
        if d.shape != (int(cam.height), int(cam.width)):
            raise CaptureError(f"depth map is {d.shape[1]}x{d.shape[0]} but its camera says "
                               f"{int(cam.width)}x{int(cam.height)}", path=path,
                               fix="depth maps must have the size of their images")
        return torch.from_numpy(np.ascontiguousarray(d)).double() * 65535 * self.depth_unit

    def check_files(self) -> Capture:
        """Fail early, naming the file, if any image or mask listed by the capture is missing."""
        if self.images is not None:
            return self
        for v in self.views:
            for p, what in ((v.image_path, "image"), (v.mask_path, "mask"), (v.depth_path, "depth map")):
                if p is None:
                    continue
                if is_missing(p):
                    raise CaptureError(f"{what} listed by the capture does not exist: {p}",
                                       path=self.source_path, fix="fix the path or restore the file")
                resolve_input(p, what=f"{what} listed by {self.source_path}")  # symlink loops, folders, permissions
        return self
