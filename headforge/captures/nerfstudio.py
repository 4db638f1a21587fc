"""nerfstudio ``transforms.json`` (also instant-ngp / Blender style files that give ``camera_angle_x``).

Reading:
- Intrinsics ``fl_x, fl_y, cx, cy, w, h, k1, k2, k3, k4, p1, p2`` per frame or at the top level (per frame
  wins). Without ``fl_x``, ``camera_angle_x`` (horizontal field of view, radians) gives
  ``fl_x = w / (2 tan(angle / 2))``; ``fl_y`` falls back to ``camera_angle_y`` then ``fl_x``; ``cx, cy``
  to the image centre; ``w, h`` to the size of the frame's image.
- ``camera_model``: OPENCV (default, as in nerfstudio) or PINHOLE; anything else is refused.
- ``transform_matrix`` is camera-to-world in the OpenGL convention (x right, y up, z back), 4x4 or 3x4.
- ``mask_path`` (0 = background), ``depth_file_path`` with top-level ``depth_unit_scale_factor``
  (metres per unit, nerfstudio's default 1e-3), RGBA images (alpha = mask). Paths are relative to the
  json's folder. Frames are sorted by ``file_path``, as nerfstudio does, before splitting.
- ``applied_transform`` (3x4 or 4x4): ns-process-data records the rigid transform it applied to the
  original (e.g. COLMAP) world, so ``x_file_world = A @ x_original_world``. The poses in the file are
  already in the transformed world; headforge keeps them as they are and stores ``A`` as
  ``Capture.world_transform`` (a pose in the original world is ``w2c @ A``). Writers write it back.
- ``frame_index`` (a headforge extension, written only for multi-timestep captures) -> ``View.frame``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
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
    export_mask,
    finish_capture,
    image_size,
    json_int,
    json_list,
    json_matrix,
    json_number,
    json_str,
    json_text,
    load_json,
    plan_image_names,
    refuse_duplicates,
    relative_file,
    resolve_image,
)
from headforge.errors import CameraError, InputError
from headforge.geometry.cameras import DISTORTION_NAMES
from headforge.geometry.rotations import opencv_w2c_to_opengl_c2w, opengl_c2w_to_opencv_w2c

SUPPORTED_MODELS = ("OPENCV", "PINHOLE")


@dataclass(frozen=True)
class _Frame:
    file_path: str
    view: View
    w2c: np.ndarray  # [4, 4] OpenCV
    intr: tuple[float, float, float, float]  # fx, fy, cx, cy
    size: tuple[int, int]
    distortion: tuple[float, ...]


def _intrinsics(frame: dict, meta: dict, i: int, path: Path, image: Path) -> tuple:
    where = f"frame {i} (or the top level)"

    def get(key: str, default=None):
        return json_number(frame if key in frame else meta, key, path, where, default)

    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = image_size(image, path)
    fx = get("fl_x")
    if fx is None:
        angle = get("camera_angle_x")
        if angle is None:
            raise InputError(f"frame {i} has neither 'fl_x' nor 'camera_angle_x' (per frame or at the top level)",
                             path=path, fix="add fl_x (focal length in pixels) or camera_angle_x (radians)")
        fx = 0.5 * w / math.tan(0.5 * angle)
    fy = get("fl_y")
    if fy is None:
        angle_y = get("camera_angle_y")
        fy = fx if angle_y is None else 0.5 * h / math.tan(0.5 * angle_y)
    intr = (fx, fy, get("cx", w / 2), get("cy", h / 2))
    return intr, (int(w), int(h)), tuple(get(k, 0.0) for k in DISTORTION_NAMES)


def read_nerfstudio(path: str | Path, *, test_every: int = 8, test_views: Sequence[int] | None = None
                    ) -> Capture:
    path = Path(path)
    meta = load_json(path)
    model = json_str(meta, "camera_model", path, "the top level", "OPENCV")
    if model not in SUPPORTED_MODELS:
        raise CameraError(f"camera_model {model!r} is not supported (headforge reads {', '.join(SUPPORTED_MODELS)})",
                          path=path, fix="undistort the images to a pinhole camera first (e.g. COLMAP "
                                         "image_undistorter, or ns-process-data --camera-type perspective)")
    frames_json = json_list(meta, "frames", path, "the top level")
    depth_unit = json_number(meta, "depth_unit_scale_factor", path, "the top level", 1e-3)
    world_transform = torch.eye(4)
    if "applied_transform" in meta:
        A = json_matrix(meta, "applied_transform", path, "the top level")
        world_transform = torch.from_numpy(A).float()
    root = path.parent
    frames = []
    for i, fj in enumerate(frames_json):
        where = f"frame {i}"
        file_path = json_str(fj, "file_path", path, where)
        image = resolve_image(root, file_path)
        c2w = json_matrix(fj, "transform_matrix", path, where)
        mask, depth = json_str(fj, "mask_path", path, where, None), json_str(fj, "depth_file_path", path, where, None)
        view = View(image, None if mask is None else resolve_image(root, mask),
                    None if depth is None else resolve_image(root, depth), json_int(fj, "frame_index", path, where, 0))
        intr, size, dist = _intrinsics(fj, meta, i, path, image)
        if model == "PINHOLE" and any(dist):
            raise CameraError(f"{where} has distortion coefficients but camera_model is PINHOLE", path=path,
                              fix="set camera_model to OPENCV or remove the coefficients")
        w2c = opengl_c2w_to_opencv_w2c(torch.from_numpy(c2w)).numpy()
        frames.append(_Frame(file_path, view, w2c, intr, size, dist))
    refuse_duplicates([f"{f.file_path} (frame_index {f.view.frame})" if f.view.frame else f.file_path
                       for f in frames], path)
    order = sorted(range(len(frames)), key=lambda k: frames[k].file_path)
    frames = [frames[k] for k in order]
    cameras = cameras_from_arrays([f.w2c for f in frames], np.array([f.intr for f in frames]),
                                  np.array([f.size for f in frames]), np.array([f.distortion for f in frames]),
                                  [f"frame {k} ({f.file_path})" for k, f in zip(order, frames, strict=True)])
    return finish_capture(cameras, [f.view for f in frames], CaptureFormat.NERFSTUDIO, path,
                          test_every=test_every, test_views=test_views, depth_unit=depth_unit,
                          world_transform=world_transform)


def _intrinsics_json(cameras, i: int, with_distortion: bool) -> dict:
    out = {"fl_x": float(cameras.fx[i]), "fl_y": float(cameras.fy[i]), "cx": float(cameras.cx[i]),
           "cy": float(cameras.cy[i]), "w": int(cameras.width[i]), "h": int(cameras.height[i])}
    if with_distortion:
        out.update(zip(DISTORTION_NAMES, (float(d) for d in cameras.distortion[i]), strict=True))
    return out


def nerfstudio_meta(capture: Capture, images: Sequence[str], masks: Sequence[str | None],
                    depths: Sequence[str | None]) -> dict:
    """The transforms.json content for ``capture`` with the given relative file paths per view."""
    cams = capture.native_cameras
    distorted = cams.has_distortion()
    per_view = [_intrinsics_json(cams, i, distorted) for i in range(len(cams))]
    shared = all(p == per_view[0] for p in per_view)
    c2w = opencv_w2c_to_opengl_c2w(cams.world_to_camera.double())
    multi_frame = len({v.frame for v in capture.views}) > 1
    frames = []
    for i, view in enumerate(capture.views):
        frame: dict = {"file_path": images[i], "transform_matrix": c2w[i].tolist()}
        if masks[i] is not None:
            frame["mask_path"] = masks[i]
        if depths[i] is not None:
            frame["depth_file_path"] = depths[i]
        if multi_frame:
            frame["frame_index"] = view.frame
        if not shared:
            frame.update(per_view[i])
        frames.append(frame)
    meta: dict = {"camera_model": "OPENCV" if distorted else "PINHOLE"}
    if shared:
        meta.update(per_view[0])
    if any(d is not None for d in depths):
        meta["depth_unit_scale_factor"] = capture.depth_unit
    if not torch.equal(capture.world_transform.float(), torch.eye(4)):
        meta["applied_transform"] = capture.world_transform.double()[:3].tolist()
    meta["frames"] = frames
    return meta


def write_nerfstudio(capture: Capture, out_dir: str | Path, *, overwrite: bool = False,
                     lossy: bool = False) -> Path:
    """Write ``out_dir/transforms.json`` with ``images/``, ``masks/`` and ``depths/`` beside it."""
    check_exportable(capture, FORMAT, lossy)
    out_dir = Path(out_dir)
    names = plan_image_names(capture, bake_mask=False)
    masks: list[str | None] = [None] * len(names)
    depths: list[str | None] = [None] * len(names)
    with atomic_directory(out_dir, overwrite=overwrite) as stage:
        for i, (view, name) in enumerate(zip(capture.views, names, strict=True)):
            export_image(capture, i, stage / "images" / name, bake_mask=False)
            if view.mask_path is not None:
                masks[i] = f"masks/{Path(name).stem}.png"
                export_mask(view.mask_path, stage / masks[i])
            if view.depth_path is not None:
                depths[i] = f"depths/{Path(name).stem}{view.depth_path.suffix}"
                (stage / "depths").mkdir(exist_ok=True)
                shutil.copyfile(view.depth_path, stage / depths[i])
        meta = nerfstudio_meta(capture, [f"images/{n}" for n in names], masks, depths)
        write_text(stage / "transforms.json", json_text(meta))
    return out_dir / "transforms.json"


def linked_nerfstudio_meta(capture: Capture, directory: Path) -> dict:
    """transforms.json content for ``directory`` pointing at the capture's files where they are."""
    views = capture.views
    return nerfstudio_meta(capture, [relative_file(v.image_path, directory) for v in views],
                           [relative_file(v.mask_path, directory) for v in views],
                           [relative_file(v.depth_path, directory) for v in views])


FORMAT = FormatSpec(CaptureFormat.NERFSTUDIO, ("transforms.json",), stores_depth=True, stores_frames=True,
                    stores_world_transform=True, read=read_nerfstudio, write=write_nerfstudio,
                    linked_meta=linked_nerfstudio_meta, file_pattern="transforms*.json")  # transforms_train.json too
