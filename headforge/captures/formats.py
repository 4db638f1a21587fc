"""Capture file formats: detection, ``read_capture`` / ``write_capture`` dispatch, shared parsing helpers.

Formats (one module each): nerfstudio ``transforms.json``, GS-LRM / FaceLift ``opencv_cameras.json``,
NeRSemble v2 ``camera_params.json`` and COLMAP text models (``sparse/0/cameras.txt``).

Writers share one policy: they write the camera file plus the images (copied byte for byte when a
view has an image file; in-memory images become PNGs) under a staging directory that is renamed to
``out_dir`` only when complete. They write native-resolution cameras and images (``Capture.scale`` is
a working resolution, not data). What a format cannot hold (depth maps, frame indices,
``world_transform``) is an error unless ``lossy=True``; geometry a format cannot express (e.g.
distortion in a pinhole-only format) is always an error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headforge.atomic import write_text
from headforge.captures.capture import Capture, Split, View
from headforge.captures.images import read_image, read_mask, write_image
from headforge.errors import CameraError, CaptureError, InputError
from headforge.geometry.cameras import Cameras


class CaptureFormat(StrEnum):
    NERFSTUDIO = "nerfstudio"
    OPENCV_JSON = "opencv_json"
    NERSEMBLE = "nersemble"
    COLMAP = "colmap"


@dataclass(frozen=True)
class FormatInfo:
    camera_files: tuple[str, ...]  # camera-file locations tried inside a capture directory, in order
    stores_depth: bool
    stores_frames: bool  # View.frame (timestep) survives a round trip
    stores_world_transform: bool


FORMAT_INFO: dict[CaptureFormat, FormatInfo] = {
    CaptureFormat.NERFSTUDIO: FormatInfo(("transforms.json",), True, True, True),
    CaptureFormat.OPENCV_JSON: FormatInfo(("opencv_cameras.json",), False, True, False),
    CaptureFormat.NERSEMBLE: FormatInfo(("camera_params.json", "calibration/camera_params.json"),
                                        False, True, False),
    CaptureFormat.COLMAP: FormatInfo(("sparse/0/cameras.txt", "sparse/cameras.txt", "cameras.txt"),
                                     False, False, False),
}


# ---------------------------------------------------------------------------------------- detection
def _format_of_file(path: Path) -> CaptureFormat | None:
    name = path.name
    if name.startswith("transforms") and name.endswith(".json"):  # transforms_train.json too
        return CaptureFormat.NERFSTUDIO
    for fmt, info in FORMAT_INFO.items():
        if name in {Path(c).name for c in info.camera_files}:
            return fmt
    return None


def detect_format(path: str | Path) -> tuple[CaptureFormat, Path]:
    """(format, camera file) of a capture directory or of a camera file given directly.

    A directory holding both transforms.json and opencv_cameras.json (what render-capture writes) is
    read as nerfstudio; any other mix of camera files is ambiguous and an error.
    """
    path = Path(path)
    looked_for = [c for info in FORMAT_INFO.values() for c in info.camera_files]
    if not path.exists():
        raise InputError("capture path does not exist", path=path,
                         fix="give a capture directory or its camera file")
    if path.is_file():
        fmt = _format_of_file(path)
        if fmt is None:
            raise InputError(f"not a known camera file (known names: {', '.join(looked_for)})",
                             path=path, fix="rename the file or pass the capture directory")
        return fmt, path
    found = [(fmt, path / c) for fmt, info in FORMAT_INFO.items() for c in info.camera_files
             if (path / c).is_file()]
    formats = {fmt for fmt, _ in found}
    if not found:
        raise InputError(f"no camera file found; looked for {', '.join(looked_for)}", path=path,
                         fix="point at the capture directory that holds one of these files")
    if formats == {CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON}:
        # headforge's own rendered captures carry both; transforms.json also lists masks and depth
        return next(f for f in found if f[0] is CaptureFormat.NERFSTUDIO)
    if len(formats) > 1:
        raise InputError(f"several camera files found ({', '.join(str(p) for _, p in found)})", path=path,
                         fix="pass the camera file you mean instead of the directory")
    return found[0]


# ---------------------------------------------------------------------------------------- dispatch
def read_capture(path: str | Path, *, format: CaptureFormat | str | None = None, test_every: int = 8,
                 test_views: Sequence[int] | None = None, calibration_size: tuple[int, int] | None = None,
                 image_folder: str | None = None) -> Capture:
    """Read a capture of any supported format (detected unless ``format`` is given).

    ``calibration_size`` and ``image_folder`` apply to NeRSemble captures only (see nersemble.py).
    """
    if format is None:
        fmt, camera_file = detect_format(path)
    else:
        fmt = CaptureFormat(format)
        camera_file = Path(path)
        if camera_file.is_dir():
            candidates = [camera_file / c for c in FORMAT_INFO[fmt].camera_files]
            camera_file = next((c for c in candidates if c.is_file()), candidates[0])
    if fmt is not CaptureFormat.NERSEMBLE and (calibration_size is not None or image_folder is not None):
        raise InputError(f"calibration_size / image_folder only apply to NeRSemble captures, not {fmt}",
                         path=camera_file, fix="drop those options")
    if fmt is CaptureFormat.NERFSTUDIO:
        from headforge.captures.nerfstudio import read_nerfstudio
        return read_nerfstudio(camera_file, test_every=test_every, test_views=test_views)
    if fmt is CaptureFormat.OPENCV_JSON:
        from headforge.captures.opencv_json import read_opencv_json
        return read_opencv_json(camera_file, test_every=test_every, test_views=test_views)
    if fmt is CaptureFormat.NERSEMBLE:
        from headforge.captures.nersemble import read_nersemble
        return read_nersemble(camera_file, test_every=test_every, test_views=test_views,
                              calibration_size=calibration_size, image_folder=image_folder)
    from headforge.captures.colmap import read_colmap
    return read_colmap(camera_file, test_every=test_every, test_views=test_views)


def write_capture(capture: Capture, out_dir: str | Path, format: CaptureFormat | str, *,
                  overwrite: bool = False, lossy: bool = False) -> Path:
    """Write ``capture`` as a ``format`` capture directory ``out_dir``; returns the camera file written."""
    fmt = CaptureFormat(format)
    if fmt is CaptureFormat.NERFSTUDIO:
        from headforge.captures.nerfstudio import write_nerfstudio as writer
    elif fmt is CaptureFormat.OPENCV_JSON:
        from headforge.captures.opencv_json import write_opencv_json as writer
    elif fmt is CaptureFormat.NERSEMBLE:
        from headforge.captures.nersemble import write_nersemble as writer
    else:
        from headforge.captures.colmap import write_colmap as writer
    return writer(capture, out_dir, overwrite=overwrite, lossy=lossy)


def write_camera_file(capture: Capture, directory: str | Path, format: CaptureFormat | str, *,
                      lossy: bool = True) -> Path:
    """Write only the camera file (nerfstudio or opencv_json) into ``directory``, pointing at the
    capture's image, mask and depth files where they are (relative paths). Nothing is copied.

    The data files stay in place, so by default what the format cannot describe (depth maps, frame
    indices, the world transform) is simply left out of it; ``lossy=False`` refuses instead. Masks
    are never dropped: opencv_cameras.json has no mask slot, so views with separate mask files need
    RGBA images (checked from the image headers); otherwise use ``write_capture``, which bakes them.
    """
    fmt, directory = CaptureFormat(format), Path(directory)
    if fmt not in (CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON):
        raise ValueError(f"write_camera_file writes nerfstudio or opencv_json, not {fmt}; use write_capture")
    if capture.images is not None:
        raise CaptureError("an in-memory capture has no image files to point at", path=directory,
                           fix="use write_capture, which writes the images too")
    check_exportable(capture, fmt, lossy)
    rel = lambda p: None if p is None else Path(os.path.relpath(p, directory)).as_posix()  # noqa: E731
    images = [rel(v.image_path) for v in capture.views]
    if fmt is CaptureFormat.NERFSTUDIO:
        from headforge.captures.nerfstudio import nerfstudio_meta
        meta = nerfstudio_meta(capture, images, [rel(v.mask_path) for v in capture.views],
                               [rel(v.depth_path) for v in capture.views])
    else:
        from headforge.captures.opencv_json import opencv_json_meta
        for v in capture.views:
            if v.mask_path is not None and image_mode(v.image_path) not in ("RGBA", "LA"):
                raise CaptureError(f"opencv_cameras.json has no mask slot and {v.image_path.name} has no alpha "
                                   "channel to carry its mask", path=v.image_path,
                                   fix="use write_capture, which bakes masks into the images' alpha")
        meta = opencv_json_meta(capture, images)
    path = directory / FORMAT_INFO[fmt].camera_files[0]
    write_text(path, json_text(meta))
    return path


def image_mode(path: Path) -> str:
    """PIL mode (``RGB``, ``RGBA``, ``L``, ...) from the image header."""
    with Image.open(path) as im:
        return im.mode


# ---------------------------------------------------------------------------------------- reading helpers
_MISSING: Any = object()


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError("camera file not found", path=path, fix="check the capture path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", path=path,
                         fix="repair the JSON (a trailing comma or a missing bracket is common)") from e
    except UnicodeDecodeError as e:
        raise InputError("camera file is not UTF-8 text", path=path, fix="re-export it as JSON") from e


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
    p = (root / relative).resolve() if not Path(relative).is_absolute() else Path(relative)
    if not p.suffix and not p.exists() and p.with_suffix(".png").exists():
        return p.with_suffix(".png")
    return p


def image_size(path: Path, camera_file: Path) -> tuple[int, int]:
    """(width, height) from an image's header without decoding it."""
    if not path.is_file():
        raise CaptureError(f"image listed by the capture does not exist: {path}", path=camera_file,
                           fix="fix the path or restore the file")
    with Image.open(path) as im:
        return im.size


def make_split(cameras: Cameras, test_every: int, test_views: Sequence[int] | None) -> Split:
    if test_views is not None:
        return Split.from_test_list(len(cameras), list(test_views))
    return Split.spread(cameras, test_every)


def finish_capture(cameras: Cameras, views: Sequence[View], fmt: CaptureFormat, source: Path, *,
                   test_every: int, test_views: Sequence[int] | None, **fields: Any) -> Capture:
    """Validate, split and check files: the common tail of every reader."""
    cameras.validate(source=source)
    capture = Capture(cameras, tuple(views), make_split(cameras, test_every, test_views),
                      source_format=str(fmt), source_path=source, **fields)
    return capture.check_files()


def cameras_from_arrays(w2c: Sequence[np.ndarray], intr: np.ndarray, sizes: np.ndarray,
                        distortion: np.ndarray | None, names: Sequence[str]) -> Cameras:
    """intr [N, 4] (fx, fy, cx, cy), sizes [N, 2] (w, h), distortion [N, 6] or None."""
    if distortion is not None and not np.any(distortion):
        distortion = None
    return Cameras.create(torch.from_numpy(np.stack(w2c)), intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3],
                          sizes[:, 0], sizes[:, 1], distortion, names)


# ---------------------------------------------------------------------------------------- writing helpers
def check_exportable(capture: Capture, fmt: CaptureFormat, lossy: bool) -> None:
    info = FORMAT_INFO[fmt]
    lost = []
    if not info.stores_depth and any(v.depth_path is not None for v in capture.views):
        lost.append("depth maps")
    if not info.stores_frames and len({v.frame for v in capture.views}) > 1:
        lost.append("frame (timestep) indices")
    if not info.stores_world_transform and not torch.equal(capture.world_transform.float(), torch.eye(4)):
        lost.append("the world transform (nerfstudio applied_transform)")
    if lost and not lossy:
        raise CaptureError(f"the {fmt} format cannot store {' and '.join(lost)} of this capture",
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
