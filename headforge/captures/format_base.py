"""What the camera-file format modules share: :class:`FormatSpec` and the parsing / writing helpers.

Each format module (nerfstudio.py, opencv_json.py, nersemble.py, colmap.py) imports this module and
declares one ``FORMAT = FormatSpec(...)``; formats.py collects those specs into its registry and
dispatches on them. Nothing here imports a format module, so there is no import cycle.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headforge.captures.capture import Capture, CaptureFormat, Split, View
from headforge.captures.images import read_image, read_mask, write_image
from headforge.errors import CameraError, CaptureError, InputError
from headforge.geometry.cameras import Cameras
from headforge.io.files import image_header, is_missing, read_json

# read(camera_file, *, test_every, test_views, **options) -> Capture
Reader = Callable[..., Capture]
# write(capture, out_dir, *, overwrite, lossy) -> the camera file written
Writer = Callable[..., Path]
# linked_meta(capture, directory) -> the camera file's JSON content, pointing at the capture's files where they are
LinkedMeta = Callable[[Capture, Path], dict]


@dataclass(frozen=True)
class FormatSpec:
    """One camera-file format: where its camera file lives, what it stores, and its reader and writer."""

    format: CaptureFormat
    camera_files: tuple[str, ...]  # camera-file locations tried inside a capture directory, in order
    stores_depth: bool
    stores_frames: bool  # View.frame (timestep) survives a round trip
    stores_world_transform: bool
    read: Reader
    write: Writer
    linked_meta: LinkedMeta | None = None  # None: write_camera_file cannot write this format
    read_options: tuple[str, ...] = ()  # extra keyword options ``read`` accepts (beyond test_every / test_views)
    file_pattern: str | None = None  # other camera-file names it owns (fnmatch), e.g. transforms*.json

    def owns_file(self, name: str) -> bool:
        """Whether a camera file called ``name`` is in this format."""
        if self.file_pattern is not None and fnmatch(name, self.file_pattern):
            return True
        return name in {Path(c).name for c in self.camera_files}


def relative_file(path: Path | None, directory: Path) -> str | None:
    """``path`` relative to ``directory`` in POSIX form (what camera files store), None stays None."""
    return None if path is None else Path(os.path.relpath(path, directory)).as_posix()


def image_mode(path: Path) -> str:
    """PIL mode (``RGB``, ``RGBA``, ``L``, ...) from the image header."""
    return image_header(path)[2]


# ---------------------------------------------------------------------------------------- reading helpers
_MISSING: Any = object()


def load_json(path: Path) -> Any:
    """A camera file's JSON (an object at the top level), through :func:`headforge.io.files.read_json`."""
    return read_json(path, "camera file", expect=dict)


def _absent(obj: Any, key: str, default: Any) -> bool:
    return default is not _MISSING and isinstance(obj, dict) and key not in obj


def json_value(obj: Any, key: str, path: Path, where: str, default: Any = _MISSING) -> Any:
    if not isinstance(obj, dict):
        raise InputError(f"{where} is not a JSON object", path=path, fix="check the file's structure")
    if key not in obj:
        if default is not _MISSING:
            return default
        raise InputError(f"{where} is missing key {key!r}", path=path, fix=f"add {key!r} to {where}")
    return obj[key]


def json_number(obj: Any, key: str, path: Path, where: str, default: Any = _MISSING) -> float:
    """``obj[key]`` as a finite float, naming the key, the place (``where``) and the file otherwise."""
    if _absent(obj, key, default):
        return default
    value = json_value(obj, key, path, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {key!r} must be a number, got {value!r}", path=path,
                         fix=f"write {key!r} as a number")
    if not math.isfinite(value):
        raise CameraError(f"{where}: {key!r} is not finite ({value})", path=path,
                          fix="re-export the calibration; every value must be a finite number")
    return float(value)


def json_int(obj: Any, key: str, path: Path, where: str, default: Any = _MISSING) -> int:
    if _absent(obj, key, default):
        return default
    value = json_number(obj, key, path, where)
    if value != int(value):
        raise InputError(f"{where}: {key!r} must be a whole number, got {value}", path=path,
                         fix=f"write {key!r} as an integer")
    return int(value)


def json_str(obj: Any, key: str, path: Path, where: str, default: Any = _MISSING) -> str:
    if _absent(obj, key, default):
        return default
    value = json_value(obj, key, path, where)
    if not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be a string, got {value!r}", path=path,
                         fix=f"write {key!r} as a string")
    return value


def json_list(obj: Any, key: str, path: Path, where: str) -> list:
    value = json_value(obj, key, path, where)
    if not isinstance(value, list):
        raise InputError(f"{where}: {key!r} must be a list", path=path, fix=f"write {key!r} as a JSON list")
    if not value:
        raise CaptureError(f"{where}: {key!r} is empty", path=path, fix="the capture must list at least one view")
    return value


def json_matrix(obj: Any, key: str, path: Path, where: str, shapes=((4, 4), (3, 4))) -> np.ndarray:
    """A finite matrix of one of ``shapes``; 3x4 rigid transforms are completed to 4x4."""
    return as_matrix(json_value(obj, key, path, where), f"{where}: {key!r}", path, shapes)


def as_matrix(value: Any, label: str, path: Path, shapes=((4, 4), (3, 4))) -> np.ndarray:
    want = " or ".join(f"{r}x{c}" for r, c in shapes)
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{label} must be a {want} matrix of numbers", path=path,
                         fix="write it as a list of rows of numbers") from e
    if tuple(m.shape) not in shapes:
        raise InputError(f"{label} must be a {want} matrix, got shape {m.shape}", path=path,
                         fix="write it as a list of rows of numbers")
    if not np.isfinite(m).all():
        raise CameraError(f"{label} has non-finite values", path=path,
                          fix="re-export the calibration; every value must be a finite number")
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape == (4, 4) and np.abs(m[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise CameraError(f"{label} is not a rigid transform: its last row is {m[3].tolist()}", path=path,
                          fix="the last row of a pose must be 0 0 0 1")
    return m


def resolve_image(root: Path, relative: str) -> Path:
    """``root / relative``; extensionless paths (Blender / instant-ngp style) get ``.png`` if that exists."""
    try:
        p = (root / relative).resolve() if not Path(relative).is_absolute() else Path(relative)
    except RuntimeError:  # Python < 3.13 raises it for a symlink loop even when not strict
        raise InputError("image path is a symlink loop", path=root / relative,
                         fix="point the link at a real file") from None
    if not p.suffix and not p.exists() and p.with_suffix(".png").exists():
        return p.with_suffix(".png")
    return p


def image_size(path: Path, camera_file: Path) -> tuple[int, int]:
    """(width, height) from an image's header without decoding it; a file that is not an image is refused."""
    if is_missing(path):
        raise CaptureError(f"image listed by the capture does not exist: {path}", path=camera_file,
                           fix="fix the path or restore the file")
    width, height, _ = image_header(path, f"image listed by {camera_file}")
    return width, height


def refuse_duplicates(names: Sequence[str], path: Path) -> None:
    """Refuse a camera file that lists the same image more than once (e.g. every frame twice): the copies
    would weigh those views double in training and leak them into both sides of the split."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    repeated = [f"{n!r} ({c}x)" for n, c in counts.items() if c > 1]
    if repeated:
        shown = ", ".join(repeated[:5]) + (f" and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise InputError(f"{len(repeated)} image(s) listed more than once: {shown}", path=path,
                         fix="list every image once (remove the duplicated entries)")


def make_split(cameras: Cameras, test_every: int, test_views: Sequence[int] | None,
               frames: Sequence[int] | None = None) -> Split:
    """The given test views, else views spread over azimuth (within each timestep of a sequence)."""
    if test_views is not None:
        return Split.from_test_list(len(cameras), list(test_views))
    if frames is not None and len(set(frames)) > 1:
        return Split.spread_per_frame(cameras, frames, test_every)
    return Split.spread(cameras, test_every)


def finish_capture(cameras: Cameras, views: Sequence[View], fmt: CaptureFormat, source: Path, *,
                   test_every: int, test_views: Sequence[int] | None, **fields: Any) -> Capture:
    """Validate, split and check files: the common tail of every reader."""
    cameras.validate(source=source)
    split = make_split(cameras, test_every, test_views, [v.frame for v in views])
    capture = Capture(cameras, tuple(views), split, source_format=fmt, source_path=source, **fields)
    return capture.check_files()


def cameras_from_arrays(w2c: Sequence[np.ndarray], intr: np.ndarray, sizes: np.ndarray,
                        distortion: np.ndarray | None, names: Sequence[str]) -> Cameras:
    """intr [N, 4] (fx, fy, cx, cy), sizes [N, 2] (w, h), distortion [N, 6] or None."""
    if distortion is not None and not np.any(distortion):
        distortion = None
    return Cameras.create(torch.from_numpy(np.stack(w2c)), intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3],
                          sizes[:, 0], sizes[:, 1], distortion, names)


# ---------------------------------------------------------------------------------------- writing helpers
def check_exportable(capture: Capture, info: FormatSpec, lossy: bool) -> None:
    """Refuse (unless ``lossy``) to write what the format cannot store."""
    lost = []
    if not info.stores_depth and any(v.depth_path is not None for v in capture.views):
        lost.append("depth maps")
    if not info.stores_frames and len({v.frame for v in capture.views}) > 1:
        lost.append("frame (timestep) indices")
    if not info.stores_world_transform and not torch.equal(capture.world_transform.float(), torch.eye(4)):
        lost.append("the world transform (nerfstudio applied_transform)")
    if lost and not lossy:
        raise CaptureError(f"the {info.format} format cannot store {' and '.join(lost)} of this capture",
                           path=capture.source_path,
                           fix="write it as nerfstudio, or pass lossy=True (--lossy) to drop them")


def plan_image_names(capture: Capture, *, bake_mask: bool) -> list[str]:
    """Output file names: the source names when unique and in capture order, else index-prefixed."""
    names = []
    for i, v in enumerate(capture.views):
        if capture.images is not None or v.image_path is None:
            names.append(f"{i:05d}.png")
        elif bake_mask and v.mask_path is not None:
            names.append(Path(v.image_path.name).with_suffix(".png").name)
        else:
            names.append(v.image_path.name)
    if len(set(names)) == len(names) and names == sorted(names):
        return names
    return [n if n.startswith(f"{i:05d}") else f"{i:05d}_{n}" for i, n in enumerate(names)]


def export_image(capture: Capture, index: int, dst: Path, *, bake_mask: bool) -> None:
    """Write view ``index``'s image to ``dst``: a byte copy, or a PNG (in-memory, or mask baked into alpha)."""
    view = capture.views[index]
    dst.parent.mkdir(parents=True, exist_ok=True)
    if capture.images is not None:
        write_image(dst, capture.images[index].numpy())
    elif bake_mask and view.mask_path is not None:
        img, mask = read_image(view.image_path), read_mask(view.mask_path)
        if mask.shape != img.shape[:2]:
            raise CaptureError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                               f"{img.shape[1]}x{img.shape[0]}", path=view.mask_path,
                               fix="masks must have the size of their images")
        rgb = img[..., :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)
        write_image(dst, np.concatenate([rgb, mask[..., None]], -1))
    else:
        shutil.copyfile(view.image_path, dst)


def export_mask(mask_path: Path, dst: Path) -> None:
    """Copy a mask file to ``dst`` (a .png), re-encoding it when it is not a PNG."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mask_path.suffix.lower() == ".png":
        shutil.copyfile(mask_path, dst)
    else:
        write_image(dst, read_mask(mask_path))


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"
