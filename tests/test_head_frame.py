"""Canonical head frame: axes, centre and scale on real scans; camera transforms keep pixels."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.errors import InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import (
    Axis,
    HeadFrameSpec,
    Units,
    axis_rotation,
    head_frame_transform,
    measure_head,
    to_head_frame,
    transform_cameras,
)
from headforge.geometry.rays import project_points
from headforge.geometry.rotations import look_at
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import load_mesh


@pytest.fixture
def ict_mesh(shared_data) -> TexturedMesh:
    path = shared_data / "ict_facekit" / "generic_neutral_mesh.obj"
    if not path.is_file():
        pytest.skip(f"ICT-FaceKit mesh not found at {path}")
    m = load_mesh(path, weld=False)
    skin = 11248  # face + head-and-neck geometries (README); the rest are eyes, teeth, mouth socket
    return TexturedMesh(m.vertices[:skin], m.faces[(m.faces < skin).all(1)])


def _check_head(h: TexturedMesh, width_m: float, tol: float):
    v = h.vertices
    face = v[(v[:, 1] > -0.12) & (v[:, 1] < 0.06)]
    nose = face[face[:, 2].argmax()]
    assert nose[2] > 0.07, nose  # the face looks toward +z
    assert abs(float(nose[0])) < 0.01 * width_m / 0.15, nose  # on the midline
    top = v[v[:, 1].argmax()]
    assert top[1] > 0.05 and abs(float(top[2])) < 0.1 * width_m / 0.15  # crown above the centre
    m = measure_head(v)
    assert m.head_width == pytest.approx(width_m, rel=tol)
    assert float(m.centre.abs().max()) < 1e-6  # the origin is the head centre


def test_lps_scaled_to_25cm(lps_head_dir):
    mesh = load_mesh(lps_head_dir / "head.obj")
    h, T = to_head_frame(mesh, HeadFrameSpec(head_width_m=0.25))
    _check_head(h, 0.25, 1e-6)
    assert T.shape == (4, 4)
    # x is the subject's left: the face is mirror-symmetric, so check handedness via the transform
    assert float(torch.linalg.det(T[:3, :3])) > 0


def test_ict_in_cm(ict_mesh):
    h, _ = to_head_frame(ict_mesh, HeadFrameSpec(units="cm"))
    m = measure_head(h.vertices)
    assert 0.15 < m.head_width < 0.21  # a real head, ears included
    _check_head(h, m.head_width, 1e-6)


def test_rotated_source_axes_give_the_same_frame(lps_head_dir):
    mesh = load_mesh(lps_head_dir / "head.obj")
    ref, _ = to_head_frame(mesh, HeadFrameSpec(head_width_m=0.25))
    # a z-up, face-toward-(-y) export of the same scan (Blender-like), in another scale
    R = axis_rotation("+z", "-y").T  # canonical -> source
    src = TexturedMesh(mesh.vertices @ R.float().T * 7.0, mesh.faces)
    out, _ = to_head_frame(src, HeadFrameSpec(up="+z", forward="-y", head_width_m=0.25))
    torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-5, rtol=0)


def test_units_scale():
    v = torch.randn(500, 3) * torch.tensor([8.0, 11.0, 9.0])
    T = head_frame_transform(v, HeadFrameSpec(units="mm"))
    s = float(torch.linalg.det(T[:3, :3])) ** (1 / 3)
    assert s == pytest.approx(0.001)


def test_axis_rotation_right_handed():
    for up, fwd in (("+y", "+z"), ("+z", "-y"), ("-x", "+y")):
        R = axis_rotation(up, fwd)
        assert float(torch.linalg.det(R)) == pytest.approx(1.0)
    assert torch.equal(axis_rotation("+y", "+z"), torch.eye(3, dtype=torch.float64))


def test_spec_validation():
    with pytest.raises(InputError, match="exactly one"):
        HeadFrameSpec()
    with pytest.raises(InputError, match="exactly one"):
        HeadFrameSpec(units="cm", head_width_m=0.25)
    with pytest.raises(InputError, match="different axes"):
        HeadFrameSpec(up="+y", forward="-y", units="m")
    with pytest.raises(InputError, match="> 0"):
        HeadFrameSpec(head_width_m=-1.0)


def test_transform_cameras_keeps_pixels():
    angles = torch.linspace(0, 2 * math.pi, 6)[:-1]
    eyes = torch.stack([3 * angles.sin(), 0.5 + 0 * angles, 3 * angles.cos()], -1)
    w2c = look_at(eyes, torch.zeros(5, 3), torch.tensor([0.0, 1.0, 0.0]).expand(5, 3))
    cams = Cameras.create(w2c, 500.0, 510.0, 320.0, 240.0, 640, 480,
                          distortion=torch.tensor([0.01, -0.002, 0, 0, 0.001, 0.0]))
    points = torch.randn(50, 3) * 0.5
    # old world -> new world: scale 0.07, rotation, translation
    c, s = math.cos(0.7), math.sin(0.7)
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]])
    T = torch.eye(4)
    T[:3, :3] = 0.07 * R
    T[:3, 3] = torch.tensor([0.3, -1.0, 2.0])
    new_points = points @ T[:3, :3].T + T[:3, 3]
    new_cams = transform_cameras(cams, T)
    new_cams.validate()  # rotations still orthonormal
    uv0, z0 = project_points(cams, points)
    uv1, z1 = project_points(new_cams, new_points)
    torch.testing.assert_close(uv1, uv0, atol=1e-3, rtol=0)
    torch.testing.assert_close(z1, 0.07 * z0, atol=1e-5, rtol=1e-5)


def test_transform_cameras_with_head_frame(lps_head_dir):
    mesh = load_mesh(lps_head_dir / "head.obj")
    h, T = to_head_frame(mesh, HeadFrameSpec(head_width_m=0.25))
    w2c = look_at(torch.tensor([[0.0, 2.0, 20.0]]), torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
    cams = Cameras.create(w2c, 800.0, 800.0, 256.0, 256.0, 512, 512)
    uv0, _ = project_points(cams, mesh.vertices)
    uv1, _ = project_points(transform_cameras(cams, T.float()), h.vertices)
    torch.testing.assert_close(uv1, uv0, atol=2e-3, rtol=0)


def test_mirror_transform_rejected():
    with pytest.raises(ValueError, match="mirror"):
        cams = Cameras.create(torch.eye(4), 1.0, 1.0, 0.0, 0.0, 1, 1)
        transform_cameras(cams, torch.diag(torch.tensor([-1.0, 1, 1, 1])))


def test_spec_takes_axis_and_unit_names_and_refuses_others():
    spec = HeadFrameSpec(up="+z", forward="-y", units="cm")  # what the TOML / command line give
    assert (spec.up, spec.forward, spec.units) == (Axis.POS_Z, Axis.NEG_Y, Units.CM)
    assert isinstance(spec.up, Axis) and isinstance(spec.units, Units)
    with pytest.raises(InputError, match="HeadFrameSpec.up = 'z'"):
        HeadFrameSpec(up="z", head_width_m=0.2)
    with pytest.raises(InputError, match="HeadFrameSpec.units = 'inch'"):
        HeadFrameSpec(units="inch")

