"""Round trips through every capture format, a cross-format chain and format-specific features."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from headforge.captures.capture import Capture, Split, View
from headforge.captures.formats import (
    FORMATS,
    CaptureFormat,
    detect_format,
    read_capture,
    write_camera_file,
    write_capture,
)
from headforge.captures.images import read_image, write_image
from headforge.errors import CameraError, CaptureError, InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.geometry.rotations import look_at

W, H = 32, 24
FILE_FORMATS = list(FORMATS)  # the registry: every camera-file format


def ring_w2c(n_ring: int = 10, n_off: int = 3) -> torch.Tensor:
    a = torch.arange(n_ring, dtype=torch.float64) * 2 * math.pi / n_ring
    eyes = [torch.stack([3 * a.cos(), 3 * a.sin(), 0.2 * (3 * a).sin()], -1)]
    b = torch.arange(n_off, dtype=torch.float64) * 2 * math.pi / max(n_off, 1) + 0.3
    eyes.append(torch.stack([2 * b.cos(), 2 * b.sin(), torch.full_like(b, 2.0)], -1))
    eyes = torch.cat(eyes)
    return look_at(eyes, torch.zeros(3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64))


def memory_capture(w2c: torch.Tensor, *, distortion=None, vary_intrinsics=False, seed=0) -> Capture:
    n = len(w2c)
    g = torch.Generator().manual_seed(seed)
    fx = torch.full((n,), 30.0) + (torch.rand(n, generator=g) * 4 if vary_intrinsics else 0)
    cams = Cameras.create(w2c, fx, fx * 1.01, 16.3, 11.7, W, H, distortion, [f"v{i}" for i in range(n)])
    images = torch.randint(0, 256, (n, H, W, 4), generator=g).float() / 255
    return Capture(cams, tuple(View(None) for _ in range(n)), Split.every(n), images=images)


def assert_same_capture(a: Capture, b: Capture, *, pixels: bool = True) -> None:
    ca, cb = a.native_cameras, b.native_cameras
    assert len(ca) == len(cb)
    torch.testing.assert_close(cb.world_to_camera, ca.world_to_camera, atol=1e-5, rtol=0)
    for attr in ("fx", "fy", "cx", "cy"):
        torch.testing.assert_close(getattr(cb, attr), getattr(ca, attr), atol=1e-4, rtol=0)
    assert torch.equal(ca.width, cb.width) and torch.equal(ca.height, cb.height)
    zeros = torch.zeros(len(ca), 6)
    da = ca.distortion if ca.distortion is not None else zeros
    db = cb.distortion if cb.distortion is not None else zeros
    torch.testing.assert_close(db, da, atol=1e-6, rtol=0)
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 0.5
    uv_a, z_a = project_points(ca, points)
    uv_b, z_b = project_points(cb, points)
    torch.testing.assert_close(uv_b, uv_a, atol=1e-3, rtol=0)
    torch.testing.assert_close(z_b, z_a, atol=1e-5, rtol=0)
    assert torch.equal(a.frames, b.frames)
    if pixels:
        for i in range(len(a)):
            la, lb = a.load(i), b.load(i)
            torch.testing.assert_close(lb.rgb, la.rgb, atol=1e-6, rtol=0)
            assert (la.alpha is None) == (lb.alpha is None)
            if la.alpha is not None:
                torch.testing.assert_close(lb.alpha, la.alpha, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_round_trip(tmp_path, fmt):
    capture = memory_capture(ring_w2c())
    camera_file = write_capture(capture, tmp_path / "out", fmt)
    assert camera_file.is_file()
    assert not list(tmp_path.glob("*partial*"))
    back = read_capture(tmp_path / "out")
    assert back.source_format == fmt and back.source_path == camera_file
    assert back.split == Split.spread(back.native_cameras, 8) and len(back.split.test) == 2  # readers spread by azimuth
    assert_same_capture(capture, back)
    again = read_capture(camera_file, test_views=[1, 2])
    assert again.split.test == (1, 2)


def test_cross_format_chain(tmp_path):
    original = memory_capture(ring_w2c())
    current = original
    chain = [CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON, CaptureFormat.NERSEMBLE,
             CaptureFormat.COLMAP, CaptureFormat.NERFSTUDIO]
    for k, fmt in enumerate(chain):
        write_capture(current, tmp_path / f"{k}_{fmt}", fmt)
        current = read_capture(tmp_path / f"{k}_{fmt}")
        assert current.source_format == fmt
        assert_same_capture(original, current)


@pytest.mark.parametrize("fmt", [CaptureFormat.NERFSTUDIO, CaptureFormat.COLMAP])
@pytest.mark.parametrize("k3", [0.0, 0.01])
def test_distortion_and_per_view_intrinsics(tmp_path, fmt, k3):
    dist = torch.tensor([0.05, -0.01, k3, 0.0, 0.001, -0.002])
    capture = memory_capture(ring_w2c(6, 2), distortion=dist, vary_intrinsics=True)
    path = write_capture(capture, tmp_path / "out", fmt)
    if fmt is CaptureFormat.COLMAP:
        assert ("FULL_OPENCV" if k3 else "OPENCV ") in path.read_text()
    assert_same_capture(capture, read_capture(path))


def test_colmap_refuses_r8_term(tmp_path):
    capture = memory_capture(ring_w2c(4, 0), distortion=torch.tensor([0.0, 0, 0, 0.01, 0, 0]))
    with pytest.raises(CameraError, match="k4"):
        write_capture(capture, tmp_path / "out", CaptureFormat.COLMAP)
    assert not (tmp_path / "out").exists()


def file_capture(tmp_path, n=5) -> Capture:
    """A capture of RGB files with separate masks, 16-bit depth maps, two frames and a world transform."""
    rng = np.random.default_rng(0)
    views = []
    for i in range(n):
        img, mask, depth = (tmp_path / "src" / f"{d}{i:02d}.png" for d in ("img", "mask", "depth"))
        write_image(img, rng.integers(0, 256, (H, W, 3)) / 255)
        write_image(mask, (rng.random((H, W, 1)) > 0.5).astype(np.float32))
        write_image(depth, rng.integers(0, 65536, (H, W, 1)) / 65535, bits=16)
        views.append(View(img, mask, depth, frame=i % 2))
    cams = memory_capture(ring_w2c(n, 0)).native_cameras
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    T[:3, 3] = torch.tensor([0.1, 0.2, 0.3])
    return Capture(cams, tuple(views), Split.every(n), depth_unit=1e-3, world_transform=T)


def test_nerfstudio_masks_depth_frames_and_applied_transform(tmp_path):
    capture = file_capture(tmp_path)
    path = write_capture(capture, tmp_path / "ns", CaptureFormat.NERFSTUDIO)
    meta = json.loads(path.read_text())
    assert len(meta["applied_transform"]) == 3 and meta["depth_unit_scale_factor"] == 1e-3
    back = read_capture(path)
    assert_same_capture(capture, back)
    torch.testing.assert_close(back.world_transform, capture.world_transform)
    for a, b in zip(capture.views, back.views, strict=True):
        assert b.depth_path.read_bytes() == a.depth_path.read_bytes()
        assert b.mask_path is not None
    # formats without depth / world transform refuse unless told to drop them; masks become alpha
    with pytest.raises(CaptureError, match="(?s)cannot store depth maps.*lossy=True"):
        write_capture(back, tmp_path / "cv", CaptureFormat.OPENCV_JSON)
    cv = read_capture(write_capture(back, tmp_path / "cv", CaptureFormat.OPENCV_JSON, lossy=True))
    assert cv.views[0].mask_path is None and read_image(cv.views[0].image_path).shape[2] == 4
    assert_same_capture(capture, cv)
    with pytest.raises(CaptureError, match="frame"):
        write_capture(back, tmp_path / "colmap", CaptureFormat.COLMAP)


def test_nerfstudio_instant_ngp_style(tmp_path):
    write_image(tmp_path / "r_0.png", np.zeros((H, W, 4)))
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    meta = {"camera_angle_x": 0.8, "frames": [{"file_path": "./r_0", "transform_matrix": c2w.tolist()}]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
    capture = read_capture(tmp_path / "transforms_train.json")
    cam = capture.native_cameras
    assert (int(cam.width[0]), int(cam.height[0])) == (W, H)
    assert float(cam.fx[0]) == pytest.approx(0.5 * W / math.tan(0.4))
    assert float(cam.cx[0]) == W / 2 and float(cam.fy[0]) == float(cam.fx[0])
    torch.testing.assert_close(cam.centers()[0], torch.tensor([0, 0, 4.0]))
    torch.testing.assert_close(cam.forward_axes()[0], torch.tensor([0, 0, -1.0]))  # OpenGL looks down -z


def nersemble_sequence(tmp_path, serials=("220700191", "221501007", "222200037")) -> dict:
    """Two timesteps with images-2x folders, alpha maps and intrinsics at twice the image resolution."""
    w2c = ring_w2c(len(serials), 0)
    rng = np.random.default_rng(1)
    for frame in (0, 3):
        for s in serials:
            folder = tmp_path / "timesteps" / f"frame_{frame:05d}"
            write_image(folder / "images-2x" / f"cam_{s}.jpg", rng.random((H, W, 3)))
            write_image(folder / "alpha_map" / f"cam_{s}.png", rng.random((H, W, 1)))
    K = [[60.0, 0, 2 * 16.3], [0, 61.0, 2 * 11.7], [0, 0, 1]]
    meta = {"intrinsics": K, "world_2_cam": {s: w2c[i].tolist() for i, s in enumerate(serials)}}
    (tmp_path / "camera_params.json").write_text(json.dumps(meta))
    return meta


def test_nersemble_sequence_and_calibration_size(tmp_path):
    nersemble_sequence(tmp_path)
    with pytest.raises(CameraError, match=r"(?s)principal point .* calibration_size=\(W, H\).*\(65, 47\)"):
        read_capture(tmp_path)
    capture = read_capture(tmp_path, calibration_size=(2 * W, 2 * H))
    assert capture.frames.tolist() == [0, 0, 0, 3, 3, 3]
    assert capture.native_cameras.names[4] == "cam_221501007 (frame 3)"
    assert float(capture.native_cameras.fx[0]) == pytest.approx(30.0)
    assert float(capture.native_cameras.cy[0]) == pytest.approx(11.7)
    assert all(v.mask_path is not None for v in capture.views)
    out = write_capture(capture, tmp_path / "copy", CaptureFormat.NERSEMBLE)
    assert (out.parent / "timesteps" / "frame_00003" / "alpha_map" / "cam_222200037.png").is_file()
    back = read_capture(out)
    assert back.native_cameras.names == capture.native_cameras.names
    assert_same_capture(capture, back)
    with pytest.raises(InputError, match="only apply to nersemble captures"):
        read_capture(out.parent, format="nerfstudio", calibration_size=(1, 1))


def test_colmap_camera_models_and_points(tmp_path):
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text("# comment\n1 SIMPLE_PINHOLE 32 24 30 16 12\n"
                                       "2 SIMPLE_RADIAL 32 24 31 16.5 12 0.1\n3 RADIAL 32 24 29 16 12.5 0.1 -0.2\n")
    lines = ["# header"]
    for i, cam in enumerate((3, 1, 2)):
        lines += [f"{i + 1} 1 0 0 0 0 0 {3 + i} {cam} img_{cam}.png", "1.0 2.0 -1 3.5 4.5 7" if i else ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("# pts\n7 0.5 -0.5 1.0 255 0 10 0.3 1 0\n8 0 0 0 1 2 3 0.1\n")
    for cam in (1, 2, 3):
        write_image(tmp_path / "images" / f"img_{cam}.png", np.ones((H, W, 3)) * 0.5)
    capture = read_capture(tmp_path)
    cams = capture.native_cameras
    assert cams.names == ("img_1.png", "img_2.png", "img_3.png")  # sorted by name
    torch.testing.assert_close(cams.fx, torch.tensor([30.0, 31, 29]))
    torch.testing.assert_close(cams.fy, cams.fx)
    torch.testing.assert_close(cams.distortion[:, :2], torch.tensor([[0, 0], [0.1, 0], [0.1, -0.2]]))
    torch.testing.assert_close(cams.world_to_camera[:, 2, 3], torch.tensor([4.0, 5, 3]))
    out = write_capture(capture, tmp_path / "copy", CaptureFormat.COLMAP)
    assert "0.5 -0.5 1.0 255 0 10" in (out.parent / "points3D.txt").read_text()
    assert_same_capture(capture, read_capture(out))


def test_detect_format(tmp_path):
    for fmt in FORMATS:
        path = write_capture(memory_capture(ring_w2c(3, 0)), tmp_path / str(fmt), fmt)
        assert detect_format(tmp_path / str(fmt)) == (fmt, path)
        assert detect_format(path) == (fmt, path)
    with pytest.raises(InputError, match="looked for transforms.json, opencv_cameras.json"):
        detect_format(tmp_path)
    with pytest.raises(InputError, match="output directory already exists"):
        write_capture(memory_capture(ring_w2c(3, 0)), tmp_path / "colmap", CaptureFormat.COLMAP)


def test_alternative_layouts(tmp_path):
    """ns-process-data keeps COLMAP under colmap/sparse/0 beside images/; NeRSemble keeps calibration/."""
    capture = memory_capture(ring_w2c(4, 0))
    out = write_capture(capture, tmp_path / "ns", CaptureFormat.COLMAP).parents[2]
    (out / "colmap").mkdir()
    (out / "sparse").rename(out / "colmap" / "sparse")
    back = read_capture(out / "colmap" / "sparse" / "0" / "cameras.txt")
    assert back.views[0].image_path.parent == out / "images"
    assert_same_capture(capture, back)
    cal = write_capture(capture, tmp_path / "nersemble", CaptureFormat.NERSEMBLE)
    (cal.parent / "calibration").mkdir()
    cal.rename(cal.parent / "calibration" / cal.name)
    assert detect_format(cal.parent)[1] == cal.parent / "calibration" / cal.name
    assert_same_capture(capture, read_capture(cal.parent))


def test_write_camera_file_points_at_existing_files(tmp_path):
    capture = file_capture(tmp_path)
    path = write_camera_file(capture, tmp_path / "src", CaptureFormat.NERFSTUDIO)
    assert json.loads(path.read_text())["frames"][0]["file_path"] == "img00.png"
    back = read_capture(path)
    assert [v.image_path for v in back.views] == [v.image_path for v in capture.views]
    assert_same_capture(capture, back)
    with pytest.raises(CaptureError, match="cannot store depth maps"):
        write_camera_file(capture, tmp_path / "src", CaptureFormat.OPENCV_JSON, lossy=False)
    plain = replace(capture, views=tuple(replace(v, depth_path=None, frame=0) for v in capture.views),
                    world_transform=torch.eye(4))
    with pytest.raises(CaptureError, match="img00.png has no alpha channel"):
        write_camera_file(plain, tmp_path / "src", CaptureFormat.OPENCV_JSON)
    for v in plain.views:  # RGBA images carry the masks: fine
        write_image(v.image_path, np.concatenate([read_image(v.image_path), read_image(v.mask_path)], -1))
    cv = read_capture(write_camera_file(plain, tmp_path / "src", CaptureFormat.OPENCV_JSON))
    assert_same_capture(plain, cv)
    with pytest.raises(ValueError, match="not colmap"):
        write_camera_file(plain, tmp_path / "src", CaptureFormat.COLMAP)


def test_source_format_is_coerced_and_memory_is_not_a_file_format(tmp_path):
    capture = memory_capture(ring_w2c(3, 0))
    assert capture.source_format is None
    named = Capture(capture.native_cameras, capture.views, capture.split, source_format="colmap")
    assert named.source_format is CaptureFormat.COLMAP  # a plain string becomes the enum member
    with pytest.raises(ValueError, match="render"):
        Capture(capture.native_cameras, capture.views, capture.split, source_format="render")
    with pytest.raises(InputError, match="not a capture file format"):
        write_capture(capture, tmp_path / "x", "memory")
    with pytest.raises(InputError, match="not a capture file format"):
        read_capture(tmp_path, format="memory")
