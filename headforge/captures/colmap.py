"""COLMAP text models: ``sparse/0/{cameras,images,points3D}.txt`` with images in ``images/``.

- cameras.txt: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS...``. Models read: SIMPLE_PINHOLE (f cx cy),
  PINHOLE (fx fy cx cy), SIMPLE_RADIAL (f cx cy k), RADIAL (f cx cy k1 k2), OPENCV (fx fy cx cy k1 k2 p1
  p2) and FULL_OPENCV when its rational terms k4 k5 k6 are zero (then it is OPENCV plus k3). They map
  to headforge's (k1, k2, k3, k4, p1, p2); COLMAP's pixel convention (centres at +0.5) is headforge's.
- images.txt: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (world-to-camera, OpenCV), then one line
  of 2D points which may be empty. As in COLMAP's own reader the points line is required: a file without
  it is refused (see :func:`_image_lines`), and so is one whose ``# Number of images`` header disagrees
  with the images read, or that lists an image NAME twice. Views are sorted by NAME (as 3DGS and
  nerfstudio do) before splitting.
- points3D.txt (optional): ``POINT3D_ID X Y Z R G B ERROR TRACK...``; see :func:`read_points3d`.
- Images live in ``ROOT/images`` where ROOT is the folder above ``sparse/`` (or the model folder itself
  when the model is not under ``sparse/``); failing that, the nearest ``images/`` above the model.

The writer picks PINHOLE, OPENCV or FULL_OPENCV per camera, shares identical cameras, writes empty
2D-point lines and carries the source's 3D points over when the capture was read from COLMAP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from headforge.atomic import atomic_directory, write_text
from headforge.captures.capture import Capture, CaptureFormat, View
from headforge.captures.format_base import (
    FormatSpec,
    cameras_from_arrays,
    check_exportable,
    export_image,
    finish_capture,
    plan_image_names,
    refuse_duplicates,
)
from headforge.errors import CameraError, InputError
from headforge.geometry.rotations import make_rigid, quat_to_rotmat, rotmat_to_quat
from headforge.io.files import read_text, resolve_input

# model -> number of parameters
MODELS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8, "FULL_OPENCV": 12}


def _lines(path: Path) -> list[str]:
    resolve_input(path, what="COLMAP model file",
                  fix="a COLMAP text model needs cameras.txt and images.txt (export it with "
                      "`colmap model_converter --output_type TXT`)")
    return read_text(path, "COLMAP model file", allow_empty=True).splitlines()


def _numbers(tokens: Sequence[str], path: Path, lineno: int, what: str) -> list[float]:
    try:
        values = [float(t) for t in tokens]
    except ValueError as e:
        raise InputError(f"line {lineno}: {what} must be numbers, got {' '.join(tokens)!r}", path=path,
                         fix="repair the line or re-export the model") from e
    if not all(math.isfinite(v) for v in values):
        raise CameraError(f"line {lineno}: {what} has non-finite values", path=path,
                          fix="re-run or re-export the reconstruction; every value must be finite")
    return values


def _camera_params(model: str, p: list[float], path: Path, lineno: int) -> tuple[list[float], list[float]]:
    """([fx, fy, cx, cy], [k1, k2, k3, k4, p1, p2]) of one cameras.txt entry."""
    z = 0.0
    if model == "SIMPLE_PINHOLE":
        return [p[0], p[0], p[1], p[2]], [z] * 6
    if model == "PINHOLE":
        return p[:4], [z] * 6
    if model == "SIMPLE_RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], z, z, z, z, z]
    if model == "RADIAL":
        return [p[0], p[0], p[1], p[2]], [p[3], p[4], z, z, z, z]
    if model == "OPENCV":
        return p[:4], [p[4], p[5], z, z, p[6], p[7]]
    if any(p[9:12]):  # FULL_OPENCV with a rational denominator
        raise CameraError(f"line {lineno}: FULL_OPENCV camera with rational terms k4..k6 = {p[9:12]} "
                          "is not supported", path=path, fix="undistort the images (colmap image_undistorter)")
    return p[:4], [p[4], p[5], p[8], z, p[6], p[7]]


def _read_cameras(path: Path) -> dict[int, tuple[list[float], tuple[int, int], list[float]]]:
    cameras = {}
    for lineno, raw in enumerate(_lines(path), 1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 4:
            raise InputError(f"line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...", path=path,
                             fix="repair the line or re-export the model")
        model = tokens[1]
        if model not in MODELS:
            raise CameraError(f"line {lineno}: camera model {model} is not supported (supported: "
                              f"{', '.join(MODELS)})", path=path,
                              fix="undistort the images to PINHOLE with `colmap image_undistorter`")
        if len(tokens) != 4 + MODELS[model]:
            raise InputError(f"line {lineno}: {model} needs {MODELS[model]} parameters, got {len(tokens) - 4}",
                             path=path, fix="repair the line or re-export the model")
        cam_id, w, h = (int(v) for v in _numbers(tokens[:1] + tokens[2:4], path, lineno, "id and size"))
        intr, dist = _camera_params(model, _numbers(tokens[4:], path, lineno, "camera parameters"), path, lineno)
        cameras[cam_id] = (intr, (w, h), dist)
    return cameras


def read_points3d(model_dir: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(xyz [P, 3] float64, rgb [P, 3] uint8) from ``model_dir/points3D.txt``; None if there is none."""
    path = Path(model_dir) / "points3D.txt"
    if not path.is_file():
        return None
    xyz, rgb = [], []
    for lineno, raw in enumerate(_lines(path), 1):
        tokens = raw.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 8:
            raise InputError(f"line {lineno}: expected POINT3D_ID X Y Z R G B ERROR TRACK...", path=path,
                             fix="repair the line or re-export the model")
        values = _numbers(tokens[1:7], path, lineno, "point position and colour")
        xyz.append(values[:3])
        rgb.append(values[3:6])
    return np.array(xyz, dtype=np.float64).reshape(-1, 3), np.array(rgb, dtype=np.uint8).reshape(-1, 3)


def _image_dir(model_dir: Path) -> Path:
    """``ROOT/images`` (ROOT = the folder above ``sparse/``), else the nearest ``images/`` up to three
    levels above the model (ns-process-data keeps ``DIR/images`` beside ``DIR/colmap/sparse/0``)."""
    root = model_dir
    if model_dir.name == "sparse":
        root = model_dir.parent
    elif model_dir.parent.name == "sparse":
        root = model_dir.parent.parent
    candidates = [root / "images"] + [p / "images" for p in model_dir.parents][:3]
    return next((c for c in candidates if c.is_dir()), candidates[0])


_IMAGE_COUNT = re.compile(r"#\s*Number of images:\s*(\d+)")


def _image_lines(lines: list[str], path: Path) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of every image line of images.txt, checking the two-lines-per-image layout.

    COLMAP writes two lines per image, the image line and its 2D points ``X Y POINT3D_ID ...`` (possibly
    empty), and its own reader takes the line after every image line as the points, whatever it holds.
    A file without the points lines is therefore refused, not guessed at: read pairwise it would take
    every second image for points and lose half the views. The points line must hold a multiple of 3
    values; a missing one at the very end of the file is accepted. When the header states
    ``# Number of images: N``, exactly N images must be read."""
    found, i = [], 0
    while i < len(lines):
        tokens, lineno = lines[i].split(), i + 1
        i += 1
        if not tokens or tokens[0].startswith("#"):
            continue
        found.append((lineno, tokens))
        if i < len(lines):
            points = lines[i].split()
            if len(points) % 3 or (points and points[0].startswith("#")):
                raise InputError(f"line {i + 1} should be the 2D points (X Y POINT3D_ID triples, possibly an empty "
                                 f"line) of the image on line {lineno}, but holds {len(points)} values",
                                 path=path, fix="COLMAP's images.txt has two lines per image: write an empty line "
                                                "after every image line, or re-export with `colmap model_converter`")
        i += 1
    stated = next((int(m.group(1)) for ln in lines if (m := _IMAGE_COUNT.match(ln.strip()))), None)
    if stated is not None and stated != len(found):
        raise InputError(f"the header says {stated} images but the file holds {len(found)}", path=path,
                         fix="restore the missing image lines, or re-export the model")
    return found


def read_colmap(path: str | Path, *, test_every: int = 8, test_views: Sequence[int] | None = None) -> Capture:
    """Read the model whose ``cameras.txt`` is ``path`` (``images.txt`` must sit beside it)."""
    path = Path(path)
    model_dir = path.parent
    cameras = _read_cameras(path)
    images_txt = model_dir / "images.txt"
    entries = []
    for lineno, tokens in _image_lines(_lines(images_txt), images_txt):
        if len(tokens) < 10:
            raise InputError(f"line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME",
                             path=images_txt, fix="repair the line or re-export the model")
        values = _numbers(tokens[:9], images_txt, lineno, "image id, pose and camera id")
        q = torch.tensor(values[1:5], dtype=torch.float64)
        if abs(float(q.norm()) - 1) > 1e-3:
            raise CameraError(f"line {lineno}: rotation quaternion has length {float(q.norm()):.4g}, not 1 "
                              "(degenerate rotation)", path=images_txt, fix="re-export the reconstruction")
        cam_id = int(values[8])
        if cam_id not in cameras:
            raise InputError(f"line {lineno}: CAMERA_ID {cam_id} is not in cameras.txt", path=images_txt,
                             fix="re-export the model so that every image's camera exists")
        w2c = make_rigid(quat_to_rotmat(q), torch.tensor(values[5:8], dtype=torch.float64)).numpy()
        entries.append((" ".join(tokens[9:]), w2c, *cameras[cam_id]))
    if not entries:
        raise InputError("images.txt lists no images", path=images_txt,
                         fix="the capture must list at least one registered image")
    refuse_duplicates([e[0] for e in entries], images_txt)
    entries.sort(key=lambda e: e[0])
    image_dir = _image_dir(model_dir)
    capture_cameras = cameras_from_arrays([e[1] for e in entries], np.array([e[2] for e in entries]),
                                          np.array([e[3] for e in entries]), np.array([e[4] for e in entries]),
                                          [e[0] for e in entries])
    views = [View(image_dir / e[0]) for e in entries]
    return finish_capture(capture_cameras, views, CaptureFormat.COLMAP, path,
                          test_every=test_every, test_views=test_views)


def _camera_line(cams, i: int) -> str:
    intr = [float(cams.fx[i]), float(cams.fy[i]), float(cams.cx[i]), float(cams.cy[i])]
    size = f"{int(cams.width[i])} {int(cams.height[i])}"
    if cams.distortion is None or not cams.distortion[i].any():
        model, params = "PINHOLE", intr
    else:
        k1, k2, k3, k4, p1, p2 = (float(d) for d in cams.distortion[i])
        if k4 != 0:
            raise CameraError(f"{cams.name(i)} has an r^8 distortion term (k4 = {k4}) that COLMAP cannot hold",
                              fix="write nerfstudio instead, or undistort the capture first")
        model, params = ("OPENCV", intr + [k1, k2, p1, p2]) if k3 == 0 else \
            ("FULL_OPENCV", intr + [k1, k2, p1, p2, k3, 0.0, 0.0, 0.0])
    return f"{model} {size} " + " ".join(repr(p) for p in params)


def write_colmap(capture: Capture, out_dir: str | Path, *, overwrite: bool = False, lossy: bool = False) -> Path:
    """Write ``out_dir/sparse/0/{cameras,images,points3D}.txt`` and ``out_dir/images/``."""
    check_exportable(capture, FORMAT, lossy)
    out_dir = Path(out_dir)
    cams = capture.native_cameras
    names = plan_image_names(capture, bake_mask=True)
    camera_ids: dict[str, int] = {}
    image_lines = []
    w2c = cams.world_to_camera.double()
    quats = rotmat_to_quat(w2c[:, :3, :3])
    for i, name in enumerate(names):
        cam_id = camera_ids.setdefault(_camera_line(cams, i), len(camera_ids) + 1)
        pose = " ".join(repr(float(v)) for v in (*quats[i], *w2c[i, :3, 3]))
        image_lines += [f"{i + 1} {pose} {cam_id} {name}", ""]
    points = None
    if capture.source_format is CaptureFormat.COLMAP and capture.source_path is not None:
        points = read_points3d(capture.source_path.parent)
    point_lines = [] if points is None else [
        f"{k + 1} {' '.join(repr(float(v)) for v in xyz)} {' '.join(str(int(c)) for c in rgb)} 0"
        for k, (xyz, rgb) in enumerate(zip(*points, strict=True))]
    with atomic_directory(out_dir, overwrite=overwrite) as stage:
        for i, name in enumerate(names):
            export_image(capture, i, stage / "images" / name, bake_mask=True)
        model = stage / "sparse" / "0"
        model.mkdir(parents=True)
        write_text(model / "cameras.txt", "# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]\n" + "".join(
            f"{cam_id} {line}\n" for line, cam_id in camera_ids.items()))
        write_text(model / "images.txt", "# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME\n# POINTS2D[] as "
                   "(X, Y, POINT3D_ID)\n" + "\n".join(image_lines) + "\n")
        write_text(model / "points3D.txt", "# POINT3D_ID X Y Z R G B ERROR TRACK[]\n"
                   + "".join(f"{line}\n" for line in point_lines))
    return out_dir / "sparse" / "0" / "cameras.txt"


FORMAT = FormatSpec(CaptureFormat.COLMAP, ("sparse/0/cameras.txt", "sparse/cameras.txt", "cameras.txt"),
                    stores_depth=False, stores_frames=False, stores_world_transform=False, read=read_colmap,
                    write=write_colmap)
