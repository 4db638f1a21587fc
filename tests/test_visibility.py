"""depth_map_visibility: exact on two facing planes; on a rendered capture, the surface is seen and the inside not."""

from __future__ import annotations

import pytest
import torch

from headforge.captures.formats import read_capture
from headforge.errors import CaptureError
from headforge.geometry.cameras import Cameras
from headforge.geometry.visibility import depth_map_visibility


def facing_cameras() -> Cameras:
    """Camera A at the origin looking down +z; camera B at z = 4 looking down -z (both 64x64, f = 32)."""
    w2c_b = torch.tensor([[-1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 4], [0, 0, 0, 1]])  # R = diag(-1, 1, -1)
    return Cameras.create(torch.stack([torch.eye(4), w2c_b]), 32.0, 32.0, 32.0, 32.0, 64, 64,
                          dtype=torch.float64)


def test_two_facing_planes():
    """Walls at z = 1 and z = 3: A's depth map is 1 everywhere (the z = 1 wall), B's is 1 (the z = 3 wall)."""
    cams = facing_cameras()
    depth_a, depth_b = torch.ones(64, 64), torch.ones(64, 64)
    depth_a[:, :8] = 0  # background in A's first 8 columns (u < 8: x / z < -0.75)
    pts = torch.tensor([
        [0.1, -0.2, 1.0],     # on A's wall: A only (for B it is 3 m away behind the 1 m wall)
        [0.1, -0.2, 3.0],     # on B's wall: B only
        [0.0, 0.0, 2.0],      # between the walls: nobody
        [0.0, 0.0, 1.0005],   # 0.5 mm behind A's wall, within the 1 mm tolerance: A
        [0.0, 0.0, 1.002],    # 2 mm behind it: nobody
        [-0.9, 0.0, 1.0],     # projects onto A's background columns: nobody (B: behind its wall)
        [5.0, 0.0, 1.0],      # outside both images
        [0.0, 0.0, -1.0],     # behind A; for B 5 m away behind its wall
        [0.0, 0.0, 0.5],      # in front of A's wall: seen by A (nothing occludes it)
    ], dtype=torch.float64)
    got = depth_map_visibility(pts, cams, [depth_a, depth_b], tolerance=1e-3)
    assert got.tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 1]
    # which camera: with B alone only the point on B's wall is seen
    assert depth_map_visibility(pts, cams[1], [depth_b], 1e-3).tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0]
    # chunking does not change the answer
    assert torch.equal(depth_map_visibility(pts, cams, [depth_a, depth_b], 1e-3, chunk=2), got)


def test_bad_arguments():
    cams = facing_cameras()
    with pytest.raises(ValueError, match="2 cameras but 1 depth maps"):
        depth_map_visibility(torch.zeros(3, 3), cams, [torch.ones(64, 64)], 1e-3)
    with pytest.raises(ValueError, match="depth map 1 is 32x64"):
        depth_map_visibility(torch.zeros(3, 3), cams, [torch.ones(64, 64), torch.ones(64, 32)], 1e-3)
    with pytest.raises(ValueError, match=r"points must be \[P, 3\]"):
        depth_map_visibility(torch.zeros(3, 2), cams, [torch.ones(64, 64)] * 2, 1e-3)


def test_rendered_capture_sees_the_surface_not_the_inside(tiny_capture_dir, sample_head):
    capture = read_capture(tiny_capture_dir)
    depths = [capture.load_depth(i) for i in range(len(capture))]
    verts = sample_head.mesh.vertices.double()
    seen = depth_map_visibility(verts, capture.native_cameras, depths, tolerance=0.003)
    assert float((seen > 0).double().mean()) > 0.9  # a few vertices sit in creases no camera looks into
    centre = verts.mean(0, keepdim=True)  # inside the head
    assert depth_map_visibility(centre, capture.native_cameras, depths, tolerance=0.003).item() == 0


def test_load_depth_errors(tiny_capture_dir):
    import dataclasses

    capture = read_capture(tiny_capture_dir)
    bare = dataclasses.replace(capture, views=tuple(dataclasses.replace(v, depth_path=None) for v in capture.views))
    with pytest.raises(CaptureError, match="has no depth map"):
        bare.load_depth(0)
