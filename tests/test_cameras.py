"""Camera conventions, projection, rays, resizing and validation (tolerances stated per test)."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.errors import CameraError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import (
    distort,
    generate_rays,
    opencv_projection_matrix,
    project_points,
    rays_from_pixels,
    undistort,
    world_to_clip,
)
from headforge.geometry.rotations import (
    invert_rigid,
    look_at,
    opencv_w2c_to_opengl_c2w,
    opengl_c2w_to_opencv_w2c,
    quat_to_rotmat,
    rotmat_to_quat,
    transform_points,
)


def random_cameras(n: int, distortion: bool = False, dtype=torch.float64) -> Cameras:
    q = torch.randn(n, 4, dtype=dtype)
    R = quat_to_rotmat(q)
    t = torch.randn(n, 3, dtype=dtype)
    w2c = torch.zeros(n, 4, 4, dtype=dtype)
    w2c[:, :3, :3], w2c[:, :3, 3], w2c[:, 3, 3] = R, t, 1
    dist = None
    if distortion:
        dist = torch.randn(n, 6, dtype=dtype) * torch.tensor([0.05, 0.01, 0.002, 0.0005, 0.001, 0.001],
                                                             dtype=dtype)
    return Cameras.create(w2c, 300 + 200 * torch.rand(n), 300 + 200 * torch.rand(n), 160 + torch.randn(n),
                          120 + torch.randn(n), 320, 240, dist, dtype=dtype)


def test_quaternion_round_trip():  # 1e-10 in float64, sign fixed to w >= 0
    q = torch.randn(1000, 4, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(rotmat_to_quat(quat_to_rotmat(q)), q, atol=1e-10)
    R = quat_to_rotmat(q)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12)


def test_opencv_opengl_round_trip():  # 1e-12 in float64
    cams = random_cameras(200)
    c2w_gl = opencv_w2c_to_opengl_c2w(cams.world_to_camera)
    assert torch.allclose(opengl_c2w_to_opencv_w2c(c2w_gl), cams.world_to_camera, atol=1e-12)
    # OpenGL camera looks down its -z axis: the OpenCV forward axis equals -c2w_gl[:, :3, 2]
    assert torch.allclose(-c2w_gl[:, :3, 2], cams.forward_axes(), atol=1e-12)
    # both place the camera at the same centre
    assert torch.allclose(c2w_gl[:, :3, 3], cams.centers(), atol=1e-12)
    assert torch.allclose(invert_rigid(invert_rigid(cams.world_to_camera)), cams.world_to_camera, atol=1e-12)


def test_look_at_points_camera_at_target():  # target projects to the principal point within 1e-9 px
    eye = torch.randn(50, 3, dtype=torch.float64) * 3
    target = torch.randn(50, 3, dtype=torch.float64) * 0.1
    w2c = look_at(eye, target, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    cams = Cameras.create(w2c, 500, 500, 256, 256, 512, 512, dtype=torch.float64).validate()
    uv, z = project_points(cams, target[:, None, :].expand(50, 1, 3).reshape(50, 1, 3))
    assert torch.allclose(uv[:, 0], torch.tensor([256.0, 256.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z[:, 0], (eye - target).norm(dim=-1), atol=1e-9)
    # world up projects upward in the image (smaller v): OpenCV y points down
    above = target + torch.tensor([0.0, 0.01, 0.0], dtype=torch.float64)
    uv_up, _ = project_points(cams, above[:, None, :])
    assert bool((uv_up[:, 0, 1] < 256).all())


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError, match="parallel"):
        look_at(torch.tensor([0.0, 2.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("with_distortion", [False, True])
def test_rays_and_projection_are_inverse(with_distortion):  # reprojection within 1e-6 px (float64)
    cams = random_cameras(8, with_distortion)
    uv = torch.rand(8, 500, 2, dtype=torch.float64) * torch.tensor([320.0, 240.0], dtype=torch.float64)
    rays = rays_from_pixels(cams, uv)
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(8, 500, dtype=torch.float64), atol=1e-12)
    depth = 0.5 + torch.rand(8, 500, dtype=torch.float64) * 3
    pts = rays.origins + rays.directions * (depth / rays.z_scale)[..., None]
    uv2, z2 = project_points(cams, pts)
    assert torch.allclose(uv2, uv, atol=1e-6)
    assert torch.allclose(z2, depth, atol=1e-9)


def test_undistort_inverts_distort():  # 1e-9 over the image, realistic coefficients
    d = torch.tensor([[-0.2, 0.05, -0.01, 0.001, 0.001, -0.0005]], dtype=torch.float64)
    xy = (torch.rand(1, 2000, 2, dtype=torch.float64) - 0.5) * 1.2
    assert torch.allclose(undistort(distort(xy, d), d), xy, atol=1e-9)


def test_generate_rays_pixel_centre_convention():
    cams = Cameras.create(torch.eye(4), 100, 100, 2.0, 1.0, 4, 2, dtype=torch.float64)
    rays = generate_rays(cams)
    assert rays.directions.shape == (1, 2, 4, 3)
    # principal point (2, 1) is the corner between pixels (1, 0), (2, 0), (1, 1), (2, 1): the mean of
    # their normalised x, y must be 0
    d = rays.directions[0] / rays.directions[0, ..., 2:]
    assert torch.allclose(d[..., 0].mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(d[0, 0, :2], torch.tensor([-1.5 / 100, -0.5 / 100], dtype=torch.float64))


def test_resize_and_crop_keep_projection_consistent():  # 1e-9 px
    cams = random_cameras(4)
    pts = torch.randn(4, 100, 3, dtype=torch.float64)
    uv, _ = project_points(cams, pts)
    half = cams.resize(160, 120)
    uv_half, _ = project_points(half, pts)
    assert torch.allclose(uv_half, uv * 0.5, atol=1e-9)
    cropped = cams.crop(10, 20, 100, 80)
    uv_crop, _ = project_points(cropped, pts)
    assert torch.allclose(uv_crop, uv - torch.tensor([10.0, 20.0], dtype=torch.float64), atol=1e-9)
    assert cropped.width.tolist() == [100] * 4 and half.height.tolist() == [120] * 4
    # odd sizes round, and pixel edges (0 and W) map to 0 and the new W
    s = Cameras.create(torch.eye(4), 10, 10, 5, 5, 11, 11).scale(0.5)
    assert s.width.item() == 6 and math.isclose(s.cx.item(), 5 * 6 / 11, rel_tol=1e-6)


def test_clip_projection_matches_pixels():  # NDC <-> pixel mapping, 1e-9
    cams = random_cameras(3)
    pts = torch.randn(3, 50, 3, dtype=torch.float64)
    clip = world_to_clip(cams, pts, 0.1, 100.0)
    ndc = clip[..., :2] / clip[..., 3:]
    uv, z = project_points(cams, pts)
    size = torch.tensor([320.0, 240.0], dtype=torch.float64)
    assert torch.allclose((ndc + 1) / 2 * size, uv, atol=1e-9)
    assert torch.allclose(clip[..., 3], z, atol=1e-12)
    P = opencv_projection_matrix(cams, 0.1, 100.0)
    near = P[0] @ torch.tensor([0, 0, 0.1, 1.0], dtype=torch.float64)
    far = P[0] @ torch.tensor([0, 0, 100.0, 1.0], dtype=torch.float64)
    assert math.isclose(near[2] / near[3], -1, abs_tol=1e-9) and math.isclose(far[2] / far[3], 1, abs_tol=1e-9)


def test_transform_points_matches_matrix():
    cams = random_cameras(2)
    p = torch.randn(2, 7, 3, dtype=torch.float64)
    homo = torch.cat([p, torch.ones(2, 7, 1, dtype=torch.float64)], -1) @ cams.world_to_camera.transpose(-1, -2)
    assert torch.allclose(transform_points(cams.world_to_camera, p), homo[..., :3], atol=1e-12)


def test_indexing_and_cat_keep_names():
    cams = make_rig(RigConfig(kind=RigKind.RING, num_views=6))
    sub = cams[[1, 3]]
    assert sub.names == ("ring_01", "ring_03") and len(sub) == 2
    both = Cameras.cat([sub, cams[4:]])
    assert both.names == ("ring_01", "ring_03", "ring_04", "ring_05")
    assert torch.equal(both.world_to_camera[2], cams.world_to_camera[4])


@pytest.mark.parametrize("field,value,message", [
    ("fx", float("nan"), "non-finite fx"),
    ("fy", -3.0, "fy = -3.0"),
    ("w2c", float("inf"), "non-finite world_to_camera"),
    ("rot", 2.0, "degenerate pose"),
])
def test_validate_names_the_camera(field, value, message):
    cams = make_rig(RigConfig(kind=RigKind.RING, num_views=4))
    w2c, fx, fy = cams.world_to_camera.clone(), cams.fx.clone(), cams.fy.clone()
    if field == "fx":
        fx[2] = value
    elif field == "fy":
        fy[2] = value
    elif field == "w2c":
        w2c[2, 0, 3] = value
    else:
        w2c[2, :3, :3] *= value
    bad = Cameras(w2c, fx, fy, cams.cx, cams.cy, cams.width, cams.height, None, cams.names)
    with pytest.raises(CameraError, match=message) as info:
        bad.validate("cams.json")
    assert "ring_02" in str(info.value) and "cams.json" in str(info.value)


def test_rigs_look_at_the_subject():
    for kind in RigKind:
        cams = make_rig(RigConfig(kind=kind, num_views=12, resolution=128)).validate()
        uv, z = project_points(cams, torch.zeros(1, 3))
        w, h = cams.width.float(), cams.height.float()
        assert torch.allclose(uv[:, 0, 0], w / 2, atol=1e-3) and torch.allclose(uv[:, 0, 1], h / 2, atol=1e-3)
        assert bool((z > 0).all())
        # the subject ball (radius 0.16 m) fits inside every image
        assert float(z.min()) * math.tan(math.radians(15)) > 0.16
    assert len(make_rig(RigConfig(kind=RigKind.SPHERE32))) == 32
    assert len(make_rig(RigConfig(kind=RigKind.NERSEMBLE16))) == 16
    arc = make_rig(RigConfig(kind=RigKind.NERSEMBLE16))
    assert bool((arc.centers()[:, 2] > 0).all()), "the NeRSemble arc is in front of the face (+z)"
