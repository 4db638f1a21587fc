"""NeRSemble v2 calibration: ``camera_params.json`` = ``{"intrinsics": 3x3, "world_2_cam": {serial: 4x4}}``.

The intrinsics are shared by all cameras (images are undistorted; no distortion model) and may be
given at a higher resolution than the images, e.g. the 3208x2200 sensor for 2x-downsampled images.
Pass ``calibration_size=(w, h)`` to rescale them to the image size; without it the principal point
must lie inside the images, else the reader stops and suggests that argument.

Images (all of one size, read from the first image's header) are looked up beside the json (or beside
its ``calibration/`` folder):
- one timestep: ``DIR/images/cam_<serial>.(png|jpg|jpeg)``, View.frame = 0;
- a sequence: ``DIR/timesteps/frame_<n>/images*/cam_<serial>.*``, View.frame = n (``image_folder``
  picks one of several ``images*`` folders, e.g. ``"images-2x"``).
Optional alpha maps ``alpha_map/cam_<serial>.png`` beside ``images*/`` become view masks. Views are
ordered by (frame, serial); every calibrated camera needs an image in every timestep.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from headforge.atomic import atomic_directory, write_text
from headforge.captures.capture import Capture, CaptureFormat, View
from headforge.captures.format_base import (
    FormatSpec,
    as_matrix,
    cameras_from_arrays,
    check_exportable,
    export_image,
    export_mask,
    finish_capture,
    image_size,
    json_matrix,
    json_text,
    json_value,
    load_json,
)
from headforge.captures.images import read_image, write_image
from headforge.errors import CameraError, CaptureError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_dirs(root: Path, camera_file: Path, image_folder: str | None) -> list[tuple[int, Path]]:
    """(frame index, images folder) of every timestep."""
    if image_folder is None and (root / "images").is_dir():
        return [(0, root / "images")]
    if not (root / "timesteps").is_dir():
        raise InputError(f"no images found: looked for {root / 'images'} and {root / 'timesteps'}/frame_<n>/images*",
                         path=camera_file, fix="put the images beside the calibration in one of those layouts")
    dirs = []
    for frame_dir in sorted((root / "timesteps").iterdir()):
        m = re.fullmatch(r"frame_(\d+)", frame_dir.name)
        if not m or not frame_dir.is_dir():
            continue
        candidates = sorted(p for p in frame_dir.glob("images*") if p.is_dir()
                            and (image_folder is None or p.name == image_folder))
        if len(candidates) != 1:
            raise CaptureError(f"{frame_dir} has {len(candidates)} image folders "
                               f"({', '.join(p.name for p in candidates) or 'none'})", path=camera_file,
                               fix="pass image_folder='<name>' to choose one" if candidates else
                               "every timestep needs an images folder")
        dirs.append((int(m.group(1)), candidates[0]))
    if not dirs:
        raise CaptureError(f"{root / 'timesteps'} holds no frame_<n> folders", path=camera_file,
                           fix="check the sequence layout")
    return sorted(dirs)


def _find_image(folder: Path, serial: str, camera_file: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"cam_{serial}{suffix}").is_file() or (folder / f"cam_{serial}{suffix}").is_symlink():
            return folder / f"cam_{serial}{suffix}"
    raise CaptureError(f"camera {serial} has no image in {folder} (looked for cam_{serial}"
                       f"{{{','.join(IMAGE_SUFFIXES)}}})", path=camera_file,
                       fix="restore the image, or remove the camera from world_2_cam")


def read_nersemble(path: str | Path, *, test_every: int = 8, test_views: Sequence[int] | None = None,
                   calibration_size: tuple[int, int] | None = None, image_folder: str | None = None) -> Capture:
    path = Path(path)
    meta = load_json(path)
    K = json_matrix(meta, "intrinsics", path, "the top level", shapes=((3, 3),))
    poses = json_value(meta, "world_2_cam", path, "the top level")
    if not isinstance(poses, dict):
        raise InputError("'world_2_cam' must be an object {serial: 4x4 matrix}", path=path,
                         fix="write it as a JSON object keyed by camera serial")
    if not poses:
        raise CaptureError("'world_2_cam' lists no cameras", path=path, fix="the calibration needs cameras")
    serials = sorted(poses)
    w2c = {s: as_matrix(poses[s], f"world_2_cam[{s!r}]", path) for s in serials}
    root = path.parent.parent if path.parent.name == "calibration" else path.parent
    views, names, w2cs = [], [], []
    for frame, folder in _image_dirs(root, path, image_folder):
        for s in serials:
            image = _find_image(folder, s, path)
            alpha = folder.parent / "alpha_map" / f"cam_{s}.png"
            views.append(View(image, alpha if alpha.is_file() or alpha.is_symlink() else None, frame=frame))
            names.append(f"cam_{s}" if frame == 0 else f"cam_{s} (frame {frame})")
            w2cs.append(w2c[s])
    width, height = image_size(views[0].image_path, path)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if calibration_size is not None:
        sx, sy = width / calibration_size[0], height / calibration_size[1]
        fx, fy, cx, cy = fx * sx, fy * sy, cx * sx, cy * sy
    elif not (0 < cx < width and 0 < cy < height):
        raise CameraError(f"the principal point ({cx:.1f}, {cy:.1f}) lies outside the {width}x{height} images: "
                          "the intrinsics are probably for a higher resolution", path=path,
                          fix=f"pass calibration_size=(W, H), the calibration resolution (about "
                              f"({2 * cx:.0f}, {2 * cy:.0f}) judging by the principal point)")
    n = len(views)
    cameras = cameras_from_arrays(w2cs, np.tile([fx, fy, cx, cy], (n, 1)), np.tile([width, height], (n, 1)),
                                  None, names)
    return finish_capture(cameras, views, CaptureFormat.NERSEMBLE, path, test_every=test_every,
                          test_views=test_views)


def _serials(capture: Capture) -> list[str]:
    """One serial per view: the capture's own ``cam_<serial>`` names, else numbers per distinct pose."""
    cams = capture.native_cameras
    keys = [tuple(np.round(cams.world_to_camera[i].double().numpy(), 6).ravel()) for i in range(len(cams))]
    unique = list(dict.fromkeys(keys))
    parsed = [re.match(r"cam_([A-Za-z0-9_-]+)", cams.name(i)) for i in range(len(cams))]
    by_pose: dict[tuple, str] = {}
    if all(parsed):
        for key, m in zip(keys, parsed, strict=True):
            by_pose.setdefault(key, m.group(1))
        if len(set(by_pose.values())) == len(unique) and all(by_pose[k] == m.group(1)
                                                              for k, m in zip(keys, parsed, strict=True)):
            return [by_pose[k] for k in keys]
    width = max(2, len(str(len(unique) - 1)))
    serial = {k: f"{j:0{width}d}" for j, k in enumerate(unique)}
    return [serial[k] for k in keys]


def write_nersemble(capture: Capture, out_dir: str | Path, *, overwrite: bool = False,
                    lossy: bool = False) -> Path:
    """Write ``out_dir/camera_params.json`` and ``images/`` (one timestep at frame 0) or
    ``timesteps/frame_<n>/images/`` (+ ``alpha_map/`` for views with mask files)."""
    check_exportable(capture, FORMAT, lossy)
    cams = capture.native_cameras
    intr = torch.stack([cams.fx, cams.fy, cams.cx, cams.cy, cams.width.to(cams.fx), cams.height.to(cams.fx)], -1)
    if not bool((intr == intr[0]).all()):
        raise CameraError("NeRSemble calibration holds one set of intrinsics, but the cameras differ in "
                          "focal length, principal point or image size", path=capture.source_path,
                          fix="write nerfstudio or opencv_json instead")
    if cams.has_distortion():
        raise CameraError("NeRSemble calibration has no distortion model but the cameras are distorted",
                          path=capture.source_path, fix="undistort the capture first, or write nerfstudio/colmap")
    serials = _serials(capture)
    frames = sorted({v.frame for v in capture.views})
    seen = set()
    for s, v in zip(serials, capture.views, strict=True):
        if (s, v.frame) in seen:
            raise CaptureError(f"two views of frame {v.frame} share camera {s}", path=capture.source_path,
                               fix="NeRSemble holds one image per camera and timestep")
        seen.add((s, v.frame))
    if len(seen) != len({s for s in serials}) * len(frames):
        raise CaptureError("not every camera has a view in every frame", path=capture.source_path,
                           fix="NeRSemble needs every camera in every timestep; write nerfstudio instead")
    out_dir = Path(out_dir)
    single = frames == [0]
    K = [[float(cams.fx[0]), 0.0, float(cams.cx[0])], [0.0, float(cams.fy[0]), float(cams.cy[0])], [0, 0, 1.0]]
    w2c = {s: cams.world_to_camera[i].double().tolist() for i, s in enumerate(serials)}
    with atomic_directory(out_dir, overwrite=overwrite) as stage:
        for i, (s, view) in enumerate(zip(serials, capture.views, strict=True)):
            folder = stage / "images" if single else stage / "timesteps" / f"frame_{view.frame:05d}" / "images"
            suffix = ".png" if capture.images is not None else view.image_path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                export_image(capture, i, folder / f"cam_{s}{suffix}", bake_mask=False)
            else:  # e.g. .tif: re-encode, since the reader looks for png/jpg only
                write_image(folder / f"cam_{s}.png", read_image(view.image_path))
            if view.mask_path is not None:
                export_mask(view.mask_path, folder.parent / "alpha_map" / f"cam_{s}.png")
        write_text(stage / "camera_params.json", json_text({"intrinsics": K, "world_2_cam": dict(sorted(w2c.items()))}))
    return out_dir / "camera_params.json"


FORMAT = FormatSpec(CaptureFormat.NERSEMBLE, ("camera_params.json", "calibration/camera_params.json"),
                    stores_depth=False, stores_frames=True, stores_world_transform=False, read=read_nersemble,
                    write=write_nersemble, read_options=("calibration_size", "image_folder"))
