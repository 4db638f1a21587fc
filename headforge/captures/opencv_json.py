"""``opencv_cameras.json`` as used by GS-LRM and FaceLift data.

``{"frames": [{"w", "h", "fx", "fy", "cx", "cy", "w2c": 4x4 OpenCV world-to-camera, "file_path"}]}``.
Pinhole only (no distortion). Paths are relative to the json's folder. Masks come from RGBA images;
the writer bakes separate mask files into the alpha channel of PNG images. Frames are kept in file
order. ``frame_index`` (a headforge extension, written only for multi-timestep captures) -> View.frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headforge.atomic import atomic_directory, write_text
from headforge.captures.capture import Capture, CaptureFormat, View
from headforge.captures.format_base import (
    FormatSpec,
    cameras_from_arrays,
    check_exportable,
    export_image,
    finish_capture,
    image_mode,
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
from headforge.errors import CameraError, CaptureError


def read_opencv_json(path: str | Path, *, test_every: int = 8, test_views: Sequence[int] | None = None
                     ) -> Capture:
    path = Path(path)
    meta = load_json(path)
    frames = json_list(meta, "frames", path, "the top level")
    w2c, intr, sizes, views, names = [], [], [], [], []
    for i, fj in enumerate(frames):
        where = f"frame {i}"
        file_path = json_str(fj, "file_path", path, where)
        intr.append([json_number(fj, k, path, where) for k in ("fx", "fy", "cx", "cy")])
        sizes.append([json_int(fj, k, path, where) for k in ("w", "h")])
        w2c.append(json_matrix(fj, "w2c", path, where))
        views.append(View(resolve_image(path.parent, file_path), frame=json_int(fj, "frame_index", path, where, 0)))
        names.append(f"frame {i} ({file_path})")
    refuse_duplicates([json_str(fj, "file_path", path, "frame") for fj in frames], path)
    cameras = cameras_from_arrays(w2c, np.array(intr), np.array(sizes), None, names)
    return finish_capture(cameras, views, CaptureFormat.OPENCV_JSON, path,
                          test_every=test_every, test_views=test_views)


def _check_pinhole(capture: Capture) -> None:
    if capture.native_cameras.has_distortion():
        raise CameraError("opencv_cameras.json has no distortion model but the cameras are distorted",
                          path=capture.source_path, fix="undistort the capture first, or write nerfstudio/colmap")


def opencv_json_meta(capture: Capture, images: Sequence[str]) -> dict:
    """The opencv_cameras.json content for ``capture`` with the given relative image paths."""
    _check_pinhole(capture)
    cams = capture.native_cameras
    multi_frame = len({v.frame for v in capture.views}) > 1
    w2c = cams.world_to_camera.double()
    frames = []
    for i, image in enumerate(images):
        frame = {"w": int(cams.width[i]), "h": int(cams.height[i]), "fx": float(cams.fx[i]),
                 "fy": float(cams.fy[i]), "cx": float(cams.cx[i]), "cy": float(cams.cy[i]),
                 "w2c": w2c[i].tolist(), "file_path": image}
        if multi_frame:
            frame["frame_index"] = capture.views[i].frame
        frames.append(frame)
    return {"frames": frames}


def write_opencv_json(capture: Capture, out_dir: str | Path, *, overwrite: bool = False,
                      lossy: bool = False) -> Path:
    """Write ``out_dir/opencv_cameras.json`` and ``out_dir/images/`` (separate masks baked into alpha)."""
    check_exportable(capture, FORMAT, lossy)
    _check_pinhole(capture)
    out_dir = Path(out_dir)
    names = plan_image_names(capture, bake_mask=True)
    with atomic_directory(out_dir, overwrite=overwrite) as stage:
        for i, name in enumerate(names):
            export_image(capture, i, stage / "images" / name, bake_mask=True)
        meta = opencv_json_meta(capture, [f"images/{n}" for n in names])
        write_text(stage / "opencv_cameras.json", json_text(meta))
    return out_dir / "opencv_cameras.json"


def linked_opencv_json_meta(capture: Capture, directory: Path) -> dict:
    """opencv_cameras.json content for ``directory`` pointing at the capture's images where they are.

    The format has no mask slot, so views with separate mask files need RGBA (or LA) images."""
    for v in capture.views:
        if v.mask_path is not None and image_mode(v.image_path) not in ("RGBA", "LA"):
            raise CaptureError(f"opencv_cameras.json has no mask slot and {v.image_path.name} has no alpha "
                               "channel to carry its mask", path=v.image_path,
                               fix="use write_capture, which bakes masks into the images' alpha")
    return opencv_json_meta(capture, [relative_file(v.image_path, directory) for v in capture.views])


FORMAT = FormatSpec(CaptureFormat.OPENCV_JSON, ("opencv_cameras.json",), stores_depth=False, stores_frames=True,
                    stores_world_transform=False, read=read_opencv_json, write=write_opencv_json,
                    linked_meta=linked_opencv_json_meta)
