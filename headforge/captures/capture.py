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


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]
    test: tuple[int, ...]

    @staticmethod
    def every(num_views: int, test_every: int = 8) -> Split:
        """Every ``test_every``-th view (0, N, 2N, ...) is held out; ``test_every <= 0`` holds none."""
        if num_views == 0:
            raise CaptureError("the capture has no views", fix="check the camera file lists frames")
        if test_every <= 0 or num_views < 2:
            return Split(tuple(range(num_views)), ())
        test = tuple(i for i in range(num_views) if i % test_every == 0)
        return Split(tuple(i for i in range(num_views) if i % test_every != 0), test)

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
        d = read_image(path)
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
                if p is not None and not p.is_file():
                    raise CaptureError(f"{what} listed by the capture does not exist: {p}",
                                       path=self.source_path, fix="fix the path or restore the file")
        return self
