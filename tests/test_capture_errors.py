"""Bad inputs through every reader: each error names the file and the problem."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from headforge.captures.capture import Capture, Split, View
from headforge.captures.formats import FORMATS, CaptureFormat, read_capture, write_capture
from headforge.captures.images import write_image
from headforge.errors import CameraError, CaptureError, InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at

W, H = 32, 24
JSON_FORMATS = [CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON, CaptureFormat.NERSEMBLE]


def written(tmp_path, fmt: CaptureFormat, n: int = 4):
    """Write a small valid capture; return its camera file."""
    a = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    eyes = torch.stack([3 * a.cos(), 3 * a.sin(), torch.zeros_like(a)], -1)
    w2c = look_at(eyes, torch.zeros(3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64))
    cams = Cameras.create(w2c, 30.0, 30.0, 16.0, 12.0, W, H)
    images = torch.rand(n, H, W, 4, generator=torch.Generator().manual_seed(0))
    capture = Capture(cams, tuple(View(None) for _ in range(n)), Split.every(n), images=images)
    return write_capture(capture, tmp_path / str(fmt), fmt)


def edit_json(path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))  # NaN is written as the JSON literal NaN


def raises(exc, path, pattern):
    """pytest.raises that also checks the message names ``path``."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc, match=pattern)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            if handled:
                assert str(path) in str(self.info.value), str(self.info.value)
            return handled
    return _Check()


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_missing_camera_file(tmp_path, fmt):
    missing = tmp_path / "nothing"
    missing.mkdir()
    with raises(InputError, missing, "not found"):
        read_capture(missing, format=fmt)
    with raises(InputError, missing, "no camera file found; looked for"):
        read_capture(missing)


@pytest.mark.parametrize("fmt", JSON_FORMATS)
def test_invalid_json_names_line(tmp_path, fmt):
    path = written(tmp_path, fmt)
    path.write_text('{\n  "frames": [\n    {"w": 3,}\n  ]\n}\n')
    with raises(InputError, path, "invalid JSON at line 3"):
        read_capture(path)


@pytest.mark.parametrize(("fmt", "change", "pattern"), [
    (CaptureFormat.NERFSTUDIO, lambda m: m["frames"][2].pop("transform_matrix"),
     "frame 2 is missing key 'transform_matrix'"),
    (CaptureFormat.NERFSTUDIO, lambda m: m["frames"][1].pop("file_path"), "frame 1 is missing key 'file_path'"),
    (CaptureFormat.NERFSTUDIO, lambda m: m.pop("fl_x"), "frame 0 has neither 'fl_x' nor 'camera_angle_x'"),
    (CaptureFormat.OPENCV_JSON, lambda m: m["frames"][3].pop("fy"), "frame 3 is missing key 'fy'"),
    (CaptureFormat.OPENCV_JSON, lambda m: m["frames"][0].pop("w2c"), "frame 0 is missing key 'w2c'"),
    (CaptureFormat.NERSEMBLE, lambda m: m.pop("intrinsics"), "missing key 'intrinsics'"),
    (CaptureFormat.NERSEMBLE, lambda m: m.pop("world_2_cam"), "missing key 'world_2_cam'"),
])
def test_missing_key(tmp_path, fmt, change, pattern):
    path = written(tmp_path, fmt)
    edit_json(path, change)
    with raises(InputError, path, pattern):
        read_capture(path)


def _set_nan_nersemble(m):
    m["world_2_cam"][sorted(m["world_2_cam"])[1]][0][3] = float("nan")


@pytest.mark.parametrize(("fmt", "change", "pattern"), [
    (CaptureFormat.NERFSTUDIO, lambda m: m.update(fl_x=float("inf")), "'fl_x' is not finite"),
    (CaptureFormat.NERFSTUDIO, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")),
     "frame 1: 'transform_matrix' has non-finite"),
    (CaptureFormat.OPENCV_JSON, lambda m: m["frames"][2].update(cx=float("nan")), "frame 2: 'cx' is not finite"),
    (CaptureFormat.NERSEMBLE, _set_nan_nersemble, r"world_2_cam\['.*'\] has non-finite"),
])
def test_non_finite(tmp_path, fmt, change, pattern):
    path = written(tmp_path, fmt)
    edit_json(path, change)
    with raises(CameraError, path, pattern):
        read_capture(path)


@pytest.mark.parametrize(("fmt", "key"), [(CaptureFormat.NERFSTUDIO, "transform_matrix"),
                                           (CaptureFormat.OPENCV_JSON, "w2c")])
def test_degenerate_rotation(tmp_path, fmt, key):
    path = written(tmp_path, fmt)
    edit_json(path, lambda m: m["frames"][1][key][0].__setitem__(0, 5.0))
    with raises(CameraError, path, r"frame 1 \(images/00001.png\) has a degenerate pose"):
        read_capture(path)


def test_degenerate_rotation_nersemble_and_colmap(tmp_path):
    path = written(tmp_path, CaptureFormat.NERSEMBLE)
    edit_json(path, lambda m: m["world_2_cam"]["01"].__setitem__(1, [0.0, 0.0, 0.0, 0.0]))
    with raises(CameraError, path, "cam_01 has a degenerate pose"):
        read_capture(path)
    images = written(tmp_path, CaptureFormat.COLMAP).parent / "images.txt"
    lines = images.read_text().splitlines()
    lines[4] = "2 0 0 0 0 0 0 3 1 00001.png"
    images.write_text("\n".join(lines) + "\n")
    with raises(CameraError, images, "line 5: rotation quaternion has length 0"):
        read_capture(images.parent / "cameras.txt")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_image_size_disagrees_with_intrinsics(tmp_path, fmt):
    path = written(tmp_path, fmt)
    capture = read_capture(path)
    bad = capture.views[2].image_path
    write_image(bad, np.zeros((H // 2, W // 2, 3)))
    capture = read_capture(path)
    capture.load(1)
    with raises(CaptureError, bad, f"image is 16x12 but its camera .* says {W}x{H}"):
        capture.load(2)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_missing_image(tmp_path, fmt):
    path = written(tmp_path, fmt)
    image = read_capture(path).views[1].image_path
    image.unlink()
    pattern = "camera 01 has no image" if fmt is CaptureFormat.NERSEMBLE else "image listed by the capture does not"
    with raises(CaptureError, path, pattern):
        read_capture(path)


@pytest.mark.parametrize(("fmt", "change", "pattern"), [
    (CaptureFormat.NERFSTUDIO, lambda m: m.update(frames=[]), "'frames' is empty"),
    (CaptureFormat.OPENCV_JSON, lambda m: m.update(frames=[]), "'frames' is empty"),
    (CaptureFormat.NERSEMBLE, lambda m: m.update(world_2_cam={}), "'world_2_cam' lists no cameras"),
])
def test_empty_frame_list(tmp_path, fmt, change, pattern):
    path = written(tmp_path, fmt)
    edit_json(path, change)
    with raises(CaptureError, path, pattern):
        read_capture(path)


def test_colmap_errors(tmp_path):
    cameras = written(tmp_path, CaptureFormat.COLMAP)
    images = cameras.parent / "images.txt"
    original = images.read_text()
    images.write_text("# only comments\n")
    with raises(InputError, images, "images.txt lists no images"):
        read_capture(cameras)
    images.write_text(original.replace(" 1 00002.png", " 9 00002.png"))
    with raises(InputError, images, "line 7: CAMERA_ID 9 is not in cameras.txt"):
        read_capture(cameras)
    lines = original.splitlines()
    lines[4] = " ".join(lines[4].split()[:5] + ["nan"] + lines[4].split()[6:])
    images.write_text("\n".join(lines) + "\n")
    with raises(CameraError, images, "line 5: image id, pose and camera id has non-finite"):
        read_capture(cameras)
    images.write_text(original)
    text = cameras.read_text()
    cameras.write_text(text.replace("PINHOLE 32 24", "OPENCV_FISHEYE 32 24"))
    with raises(CameraError, cameras, "camera model OPENCV_FISHEYE is not supported"):
        read_capture(cameras)
    cameras.write_text(text.replace("PINHOLE 32 24 30.0", "PINHOLE 32 24"))
    with raises(InputError, cameras, "line 2: PINHOLE needs 4 parameters, got 3"):
        read_capture(cameras)
    cameras.write_text(text)
    (cameras.parent / "images.txt").unlink()
    with raises(InputError, images, "COLMAP model file not found"):
        read_capture(cameras)


def test_nerfstudio_unsupported_camera_model(tmp_path):
    path = written(tmp_path, CaptureFormat.NERFSTUDIO)
    edit_json(path, lambda m: m.update(camera_model="OPENCV_FISHEYE"))
    with raises(CameraError, path, "camera_model 'OPENCV_FISHEYE' is not supported"):
        read_capture(path)
    edit_json(path, lambda m: m.update(camera_model="PINHOLE", k1=0.1))
    with raises(CameraError, path, "distortion coefficients but camera_model is PINHOLE"):
        read_capture(path)


def test_nersemble_layout_errors(tmp_path):
    path = written(tmp_path, CaptureFormat.NERSEMBLE)
    (path.parent / "images").rename(path.parent / "elsewhere")
    with raises(InputError, path, "no images found: looked for"):
        read_capture(path)
    for name in ("images", "images-2x"):
        (path.parent / "timesteps" / "frame_00000" / name).mkdir(parents=True)
    with raises(CaptureError, path, "2 image folders"):
        read_capture(path)


# ------------------------------------------------------------------------------------------ issue 10 holes
def test_colmap_images_txt_without_point_lines_is_refused(tmp_path):
    cameras = written(tmp_path, CaptureFormat.COLMAP, n=8)
    images = cameras.parent / "images.txt"
    assert len(read_capture(cameras)) == 8  # negative control: two lines per image, empty point lines
    lines = images.read_text().splitlines()
    image_lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(image_lines) == 8
    images.write_text("\n".join(lines[:2] + image_lines) + "\n")  # no 2D-point lines at all
    with raises(InputError, images, r"line 4 should be the 2D points .* of the image on line 3, but holds 10"):
        read_capture(cameras)
    points = "10.5 20.5 1 30.5 40.5 -1"  # real 2D points are read and skipped
    images.write_text("\n".join(lines[:2] + [x for ln in image_lines for x in (ln, points)]) + "\n")
    assert len(read_capture(cameras)) == 8


def test_colmap_stated_image_count_must_match(tmp_path):
    cameras = written(tmp_path, CaptureFormat.COLMAP, n=4)
    images = cameras.parent / "images.txt"
    text = images.read_text()
    images.write_text("# Number of images: 4, mean observations per image: 0\n" + text)
    assert len(read_capture(cameras)) == 4
    images.write_text("# Number of images: 32, mean observations per image: 0\n" + text)
    with raises(InputError, images, "the header says 32 images but the file holds 4"):
        read_capture(cameras)


def test_colmap_duplicate_image_and_non_utf8_cameras(tmp_path):
    cameras = written(tmp_path, CaptureFormat.COLMAP, n=4)
    images = cameras.parent / "images.txt"
    text = images.read_text()
    images.write_text(text.replace(" 00002.png", " 00001.png"))
    with raises(InputError, images, r"1 image\(s\) listed more than once: '00001.png' \(2x\)"):
        read_capture(cameras)
    images.write_text(text)
    cameras.write_bytes(cameras.read_bytes().replace(b"# CAMERA_ID", b"# CAM\xe9RA_ID"))
    with raises(InputError, cameras, r"not UTF-8 text \(byte 5, line 1\)"):
        read_capture(cameras)


@pytest.mark.parametrize("fmt", [CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON])
def test_every_frame_listed_twice_is_refused(tmp_path, fmt):
    path = written(tmp_path, fmt, n=4)
    edit_json(path, lambda m: m.update(frames=m["frames"] + m["frames"]))
    with raises(InputError, path, r"4 image\(s\) listed more than once: 'images/00000.png' \(2x\)"):
        read_capture(path)


def test_nerfstudio_without_size_reads_the_image_header(tmp_path):
    path = written(tmp_path, CaptureFormat.NERFSTUDIO)
    edit_json(path, lambda m: [m.pop("w"), m.pop("h")])
    capture = read_capture(path)  # negative control: w, h come from the images
    assert int(capture.native_cameras.width[0]) == W and int(capture.native_cameras.height[0]) == H
    bad = capture.views[1].image_path
    bad.write_text("not a PNG")
    with raises(InputError, bad, "is not an image"):
        read_capture(path)


def test_symlink_loops_in_a_capture(tmp_path):
    path = written(tmp_path, CaptureFormat.NERFSTUDIO)
    image = read_capture(path).views[2].image_path
    image.unlink()
    image.symlink_to(image)
    with raises(InputError, image, "symlink loop"):
        read_capture(path)
    loop_dir = tmp_path / "loop_capture"
    loop_dir.symlink_to(loop_dir)
    with raises(InputError, loop_dir, "symlink loop"):
        read_capture(loop_dir)
    cam_dir = written(tmp_path, CaptureFormat.OPENCV_JSON).parent
    camera_file = cam_dir / "opencv_cameras.json"
    camera_file.unlink()
    camera_file.symlink_to(camera_file)
    with raises(InputError, camera_file, "symlink loop"):
        read_capture(cam_dir)
    cameras = written(tmp_path, CaptureFormat.COLMAP)
    images = cameras.parent.parent.parent / "images"
    shutil.rmtree(images)
    images.symlink_to(images)  # every image path now runs through a looping folder
    with raises(InputError, str(images / "00000.png"), "symlink loop"):
        read_capture(cameras)


def test_float_image_with_nan_is_refused_at_load(tmp_path):
    import cv2

    path = written(tmp_path, CaptureFormat.NERFSTUDIO)
    capture = read_capture(path)
    tif = capture.views[0].image_path.with_suffix(".tiff")
    img = np.full((H, W, 3), 0.5, np.float32)
    assert cv2.imwrite(str(tif), img, [cv2.IMWRITE_TIFF_COMPRESSION, 1])  # uncompressed: exact floats
    edit_json(path, lambda m: m["frames"][0].update(file_path=f"images/{tif.name}"))
    loaded = read_capture(path)
    view = next(i for i, v in enumerate(loaded.views) if v.image_path.name == tif.name)
    assert float(loaded.load(view).rgb.mean()) == pytest.approx(0.5)  # negative control: finite floats load
    img[1, 2, 0], img[5, 6, :] = np.nan, np.inf
    assert cv2.imwrite(str(tif), img, [cv2.IMWRITE_TIFF_COMPRESSION, 1])  # uncompressed: exact floats
    with raises(InputError, tif, "image has 2 of 768 pixels with NaN or Inf"):
        loaded.load(view)
