"""Capture file formats: the registry, detection, and ``read_capture`` / ``write_capture`` dispatch.

Formats (one module each): nerfstudio ``transforms.json``, GS-LRM / FaceLift ``opencv_cameras.json``,
NeRSemble v2 ``camera_params.json`` and COLMAP text models (``sparse/0/cameras.txt``). Each declares
a :class:`~headforge.captures.format_base.FormatSpec`; :data:`FORMATS` is the registry of them (the
format modules import only format_base, never this module).

Writers share one policy: they write the camera file plus the images (copied byte for byte when a
view has an image file; in-memory images become PNGs) under a staging directory that is renamed to
``out_dir`` only when complete. They write native-resolution cameras and images (``Capture.scale`` is
a working resolution, not data). What a format cannot hold (depth maps, frame indices,
``world_transform``) is an error unless ``lossy=True``; geometry a format cannot express (e.g.
distortion in a pinhole-only format) is always an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from headforge.atomic import write_text
from headforge.captures import colmap, nerfstudio, nersemble, opencv_json
from headforge.captures.capture import Capture, CaptureFormat
from headforge.captures.format_base import FormatSpec, check_exportable, json_text
from headforge.errors import CaptureError, InputError
from headforge.io.files import InputKind, is_missing, resolve_input

__all__ = ["FORMATS", "CaptureFormat", "FormatSpec", "detect_format", "format_spec", "read_capture",
           "write_camera_file", "write_capture"]

FORMATS: dict[CaptureFormat, FormatSpec] = {
    spec.format: spec for spec in (nerfstudio.FORMAT, opencv_json.FORMAT, nersemble.FORMAT, colmap.FORMAT)}


def format_spec(format: CaptureFormat | str) -> FormatSpec:
    """The registered spec of a camera-file format (unknown names are an InputError)."""
    try:
        return FORMATS[CaptureFormat(format)]
    except (ValueError, KeyError):
        raise InputError(f"{format!r} is not a capture file format",
                         fix=f"use one of {', '.join(FORMATS)}") from None


# ---------------------------------------------------------------------------------------- detection
def _format_of_file(path: Path) -> CaptureFormat | None:
    return next((fmt for fmt, spec in FORMATS.items() if spec.owns_file(path.name)), None)


def detect_format(path: str | Path) -> tuple[CaptureFormat, Path]:
    """(format, camera file) of a capture directory or of a camera file given directly.

    A directory holding both transforms.json and opencv_cameras.json (what render-capture writes) is
    read as nerfstudio; any other mix of camera files is ambiguous and an error.
    """
    path = Path(path)
    looked_for = [c for spec in FORMATS.values() for c in spec.camera_files]
    if is_missing(path):
        raise InputError("capture path does not exist", path=path,
                         fix="give a capture directory or its camera file")
    resolve_input(path, kind=InputKind.ANY, what="capture path")  # symlink loops, permissions
    if path.is_file():
        fmt = _format_of_file(path)
        if fmt is None:
            raise InputError(f"not a known camera file (known names: {', '.join(looked_for)})",
                             path=path, fix="rename the file or pass the capture directory")
        return fmt, path
    found = [(fmt, path / c) for fmt, spec in FORMATS.items() for c in spec.camera_files
             if (path / c).is_file() or (path / c).is_symlink()]  # a broken link is read, and refused
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
        spec = FORMATS[fmt]
    else:
        spec = format_spec(format)
        camera_file = Path(path)
        if camera_file.is_dir():
            candidates = [camera_file / c for c in spec.camera_files]
            camera_file = next((c for c in candidates if c.is_file()), candidates[0])
    given = {k: v for k, v in (("calibration_size", calibration_size), ("image_folder", image_folder))
             if v is not None}
    refused = sorted(set(given) - set(spec.read_options))
    if refused:
        takers = [str(f) for f, s in FORMATS.items() if set(refused) <= set(s.read_options)]
        raise InputError(f"the option(s) {', '.join(refused)} only apply to {' / '.join(takers)} captures, "
                         f"not {spec.format}", path=camera_file, fix="drop those options")
    return spec.read(camera_file, test_every=test_every, test_views=test_views, **given)


def write_capture(capture: Capture, out_dir: str | Path, format: CaptureFormat | str, *,
                  overwrite: bool = False, lossy: bool = False) -> Path:
    """Write ``capture`` as a ``format`` capture directory ``out_dir``; returns the camera file written."""
    return format_spec(format).write(capture, out_dir, overwrite=overwrite, lossy=lossy)


def write_camera_file(capture: Capture, directory: str | Path, format: CaptureFormat | str, *,
                      lossy: bool = True) -> Path:
    """Write only the camera file (nerfstudio or opencv_json) into ``directory``, pointing at the
    capture's image, mask and depth files where they are (relative paths). Nothing is copied.

    The data files stay in place, so by default what the format cannot describe (depth maps, frame
    indices, the world transform) is simply left out of it; ``lossy=False`` refuses instead. Masks
    are never dropped: opencv_cameras.json has no mask slot, so views with separate mask files need
    RGBA images (checked from the image headers); otherwise use ``write_capture``, which bakes them.
    """
    spec, directory = format_spec(format), Path(directory)
    if spec.linked_meta is None:
        linked = [str(f) for f, s in FORMATS.items() if s.linked_meta is not None]
        raise ValueError(f"write_camera_file writes {' or '.join(linked)}, not {spec.format}; use write_capture")
    if capture.images is not None:
        raise CaptureError("an in-memory capture has no image files to point at", path=directory,
                           fix="use write_capture, which writes the images too")
    check_exportable(capture, spec, lossy)
    path = directory / spec.camera_files[0]
    write_text(path, json_text(spec.linked_meta(capture, directory)))
    return path
