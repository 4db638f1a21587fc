"""Field -> mesh: marching cubes, cleanup, decimation, UV bake, export, Chamfer (analytic stand-in fields)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from headforge.errors import HeadforgeError
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import load_mesh, sample_vertex_colors
from headforge.stages.mesh_cleanup import (
    boundary_loops,
    chamfer_distance,
    decimate,
    face_components,
    fill_small_holes,
    sample_surface,
    signed_volume,
)
from headforge.stages.mesh_extract import (
    DEFAULT_DENSITY_LEVEL,
    EmptyFieldError,
    MeshExtractConfig,
    export_mesh,
    extract_mesh,
    field_to_mesh,
    grid_axes,
)

LO, HI = (-0.2, -0.2, -0.2), (0.2, 0.2, 0.2)
RES = 48
VOXEL = 0.4 / RES
GEOM = MeshExtractConfig(resolution=RES, target_faces=None, progress=False)


def sphere_sdf(centre=(0.0, 0.0, 0.0), radius=0.1):
    c = torch.tensor(centre)
    return lambda p: (p - c).norm(dim=-1, keepdim=True) - radius


def red_blue(points, directions):  # [N, 3], [N, 3] -> [N, 3]: red on +x, blue on -x, smooth across x = 0
    t = torch.sigmoid(points[:, 0] / 0.02)
    return torch.stack([t, torch.full_like(t, 0.25), 1 - t], -1)


class AnalyticField:
    """Stand-in with RadianceField's interface: cfg.sdf, bounds, sdf/density, color."""

    def __init__(self, sdf=None, density=None):
        self.cfg = SimpleNamespace(sdf=sdf is not None)
        self._sdf, self._density = sdf, density
        self.bounds = (torch.tensor(LO), torch.tensor(HI))

    def sdf(self, points):
        return self._sdf(points)

    def density(self, points):
        return self._density(points)

    def color(self, points, directions):
        return red_blue(points, directions)


def as_trimesh(mesh: TexturedMesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)


def assert_closed_outward(mesh: TexturedMesh):
    tm = as_trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent
    assert signed_volume(mesh) > 0 and tm.volume > 0
    assert len(np.unique(face_components(mesh.faces.numpy(), mesh.num_vertices))) == 1


def test_sdf_sphere_radius_watertight_outward():
    mesh = extract_mesh(sphere_sdf(), LO, HI, GEOM, is_sdf=True)
    r = mesh.vertices.norm(dim=-1)
    assert float((r - 0.1).abs().max()) < VOXEL
    assert_closed_outward(mesh)
    centroids = mesh.vertices[mesh.faces].mean(1)
    assert bool(((mesh.face_normals() * centroids).sum(-1) > 0).all())  # every face points away from the centre
    assert signed_volume(mesh) == pytest.approx(4 / 3 * math.pi * 0.1 ** 3, rel=0.02)


def test_density_field_default_level():
    s_max, r0, w = 2000.0, 0.1, 0.005  # sigma = s_max * sigmoid((r0 - r) / w)
    blob = lambda p: s_max * torch.sigmoid((r0 - p.norm(dim=-1, keepdim=True)) / w)  # noqa: E731
    q = DEFAULT_DENSITY_LEVEL / s_max
    expected = r0 - w * math.log(q / (1 - q))  # radius where sigma == DEFAULT_DENSITY_LEVEL
    mesh = extract_mesh(blob, LO, HI, GEOM, is_sdf=False)
    r = mesh.vertices.norm(dim=-1)
    assert float(r.mean()) == pytest.approx(expected, abs=VOXEL / 4)
    assert float((r - expected).abs().max()) < VOXEL
    assert_closed_outward(mesh)
    assert DEFAULT_DENSITY_LEVEL == pytest.approx(math.log(2) / 0.01)  # alpha 0.5 over 1 cm


def test_surface_touching_bounds_is_capped():
    mesh = extract_mesh(sphere_sdf(centre=(0.0, -0.2, 0.0)), LO, HI, GEOM, is_sdf=True)  # half outside the box
    assert_closed_outward(mesh)
    assert float(mesh.vertices[:, 1].min()) > -0.2 - VOXEL


def test_surface_exactly_on_grid_samples_stays_closed():
    cube = lambda p: p.abs().max(-1, keepdim=True).values - 0.1  # noqa: E731  faces on grid planes: sdf == 0 there
    mesh = extract_mesh(cube, LO, HI, MeshExtractConfig(resolution=40, target_faces=None, progress=False),
                        is_sdf=True)
    assert_closed_outward(mesh)
    assert signed_volume(mesh) == pytest.approx(0.2 ** 3, rel=1e-4)


@pytest.mark.parametrize("is_sdf,fn,words", [
    (True, lambda p: p.norm(dim=-1, keepdim=True) + 1.0, "empty"),  # positive everywhere
    (False, lambda p: torch.zeros(p.shape[0], 1), "empty"),
    (False, lambda p: torch.full((p.shape[0], 1), 1e4), "every grid point"),  # fills the box
])
def test_empty_field_raises(is_sdf, fn, words):
    with pytest.raises(EmptyFieldError) as err:
        extract_mesh(fn, LO, HI, GEOM, is_sdf=is_sdf)
    assert isinstance(err.value, HeadforgeError)
    text = str(err.value)
    assert words in text and "level" in text and "Fix:" in text


def test_nonfinite_field_raises():
    with pytest.raises(HeadforgeError, match="NaN"):
        extract_mesh(lambda p: torch.full((p.shape[0], 1), float("nan")), LO, HI, GEOM, is_sdf=True)


def test_keeps_largest_component():
    big, small = sphere_sdf((-0.08, 0, 0), 0.09), sphere_sdf((0.13, 0, 0), 0.04)
    both = lambda p: torch.minimum(big(p), small(p))  # noqa: E731
    raw = extract_mesh(both, LO, HI, MeshExtractConfig(resolution=RES, target_faces=None, progress=False,
                                                       keep_largest_component=False), is_sdf=True)
    assert len(np.unique(face_components(raw.faces.numpy(), raw.num_vertices))) == 2
    mesh = extract_mesh(both, LO, HI, GEOM, is_sdf=True)
    assert_closed_outward(mesh)
    assert float(mesh.vertices[:, 0].max()) < 0.02  # only the big sphere (x in [-0.17, 0.01])


def test_fill_holes_closes_punched_hole():
    mesh = extract_mesh(sphere_sdf(), LO, HI, GEOM, is_sdf=True)
    keep = mesh.vertices[mesh.faces].mean(1)[:, 2] < 0.095  # punch a cap of ~3 cm across at the +z pole
    holed = TexturedMesh(mesh.vertices, mesh.faces[keep])
    loops = boundary_loops(holed.faces.numpy())
    assert len(loops) == 1 and 8 < len(loops[0]) <= 64
    assert fill_small_holes(holed, 5)[1:] == (0, 1)  # a loop longer than the limit stays open
    filled, n_filled, n_left = fill_small_holes(holed, 64)
    assert (n_filled, n_left) == (1, 0)
    assert_closed_outward(filled)
    assert signed_volume(filled) == pytest.approx(signed_volume(mesh), rel=0.01)


def test_decimation_hits_target_and_keeps_shape():
    mesh = extract_mesh(sphere_sdf(), LO, HI, GEOM, is_sdf=True)
    target = 1500
    assert mesh.num_faces > 3 * target
    small = decimate(mesh, target)
    assert abs(small.num_faces - target) <= 0.05 * target
    assert_closed_outward(small)
    a_to_b, b_to_a = chamfer_distance(sample_surface(small, 20000), sample_surface(mesh, 20000, seed=1))
    assert a_to_b < VOXEL and b_to_a < VOXEL
    via_cfg = extract_mesh(sphere_sdf(), LO, HI, MeshExtractConfig(resolution=RES, target_faces=target,
                                                                   progress=False), is_sdf=True)
    assert abs(via_cfg.num_faces - target) <= 0.05 * target


@pytest.fixture(scope="module")
def baked():
    cfg = MeshExtractConfig(resolution=32, target_faces=1500, texture_size=256, progress=False)
    return field_to_mesh(AnalyticField(sdf=sphere_sdf()), cfg)


def test_texture_bake_reproduces_colour(baked):
    assert baked.has_texture and baked.texture.shape == (256, 256, 3)
    assert baked.faces_uv.shape == baked.faces.shape
    assert_closed_outward(baked)  # geometry stays welded through the unwrap
    uv = baked.uvs
    assert float(uv.min()) >= 0 and float(uv.max()) <= 1
    got = sample_vertex_colors(baked)  # texture sampled at each vertex's corner uvs
    want = red_blue(baked.vertices, -baked.vertex_normals())
    assert float((got - want).abs().mean()) < 0.05
    right = baked.vertices[:, 0] > 0.05
    assert float(got[right, 0].min()) > 0.8 and float(got[~right & (baked.vertices[:, 0] < -0.05), 2].min()) > 0.8


def test_export_round_trip(baked, tmp_path):
    paths = export_mesh(baked, tmp_path / "out")
    assert {"obj", "mtl", "texture", "ply", "glb"} <= set(paths) and all(p.is_file() for p in paths.values())
    assert not [p for p in (tmp_path / "out").iterdir() if "partial" in p.name]
    want = red_blue(baked.vertices, -baked.vertex_normals())

    scene = trimesh.load(str(paths["glb"]))
    geom = next(iter(scene.geometry.values())) if isinstance(scene, trimesh.Scene) else scene
    image = geom.visual.material.baseColorTexture
    assert image is not None and image.size == (256, 256)
    uv = np.asarray(geom.visual.uv)  # glb vertices are split at seams; compare colours per glb vertex
    tex = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    px = np.clip((uv[:, 0] * 256).astype(int), 0, 255)
    py = np.clip(((1 - uv[:, 1]) * 256).astype(int), 0, 255)
    v = torch.as_tensor(np.asarray(geom.vertices), dtype=torch.float32)
    assert np.abs(tex[py, px, 0] - red_blue(v, v)[:, 0].numpy()).mean() < 0.05

    for key in ("glb", "obj"):
        loaded = load_mesh(paths[key])
        assert loaded.has_texture and loaded.num_faces == baked.num_faces
        order = np.lexsort(loaded.vertices.numpy().T)
        assert np.allclose(loaded.vertices.numpy()[order], baked.vertices.numpy()[np.lexsort(baked.vertices.numpy().T)],
                           atol=1e-6)
        got = sample_vertex_colors(loaded)
        ref = red_blue(loaded.vertices, -loaded.vertex_normals())
        assert float((got - ref).abs().mean()) < 0.05, key
        assert float((got - want.mean(0)).abs().mean()) > 0.1  # not a flat colour
    assert len(load_mesh(paths["ply"]).faces) == baked.num_faces


def test_density_stand_in_through_field_to_mesh():
    blob = lambda p: 1000.0 * torch.sigmoid((0.08 - p.norm(dim=-1, keepdim=True)) / 0.004)  # noqa: E731
    cfg = MeshExtractConfig(resolution=32, target_faces=800, texture_size=128, progress=False)
    mesh = field_to_mesh(AnalyticField(density=blob), cfg)
    assert_closed_outward(mesh)
    assert abs(mesh.num_faces - 800) <= 40 and mesh.texture.shape == (128, 128, 3)


def test_chamfer_and_surface_sampling_known_cases():
    a = torch.stack(torch.meshgrid(*[torch.arange(8) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)  # spacing 0.1
    assert chamfer_distance(a, a + torch.tensor([0.01, 0.0, 0.0])) == pytest.approx((0.01, 0.01), abs=1e-6)
    assert chamfer_distance(np.zeros((1, 3)), np.array([[0.0, 0, 0], [1.0, 0, 0]])) == pytest.approx((0.0, 0.5))
    # two triangles of area 0.5 and 1.5 in the z = 0 plane: 3/4 of the samples land on the larger one
    mesh = TexturedMesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [2, 3, 0], [3, 0, 0]]),
                        torch.tensor([[0, 1, 2], [3, 5, 4]]))
    pts = sample_surface(mesh, 40000)
    assert float(pts[:, 2].abs().max()) == 0.0
    assert float((pts[:, 0] >= 2).float().mean()) == pytest.approx(0.75, abs=0.01)
    big = pts[pts[:, 0] >= 2]
    assert float((big[:, 1] <= 3 * (1 - (big[:, 0] - 2).abs()) + 1e-5).float().mean()) == 1.0  # inside the triangle


def test_config_validation_and_grid():
    for bad in (dict(resolution=1), dict(chunk=0), dict(bounds_min=(0, 0, 0)), dict(target_faces=2),
                dict(bounds_min=(0, 0, 0), bounds_max=(1, -1, 1)), dict(texture_size=4)):
        with pytest.raises(ValueError):
            MeshExtractConfig(**bad)
    axes = grid_axes((0.0, 0.0, 0.0), (0.4, 0.2, 0.1), 40)
    assert [len(a) for a in axes] == [41, 21, 11] and all(np.allclose(np.diff(a), 0.01) for a in axes)


def test_untrained_sdf_radiance_field():
    from headforge.representations.fields import FieldConfig, HashGridConfig, RadianceField

    field = RadianceField(FieldConfig(sdf=True, prefer_tcnn=False,
                                      hashgrid=HashGridConfig(n_levels=4, log2_table_size=10, max_resolution=32)))
    cfg = MeshExtractConfig(resolution=40, target_faces=2000, texture_size=128, progress=False)
    mesh = field_to_mesh(field, cfg)  # geometric init: roughly a sphere of radius init_radius (0.1 m)
    assert_closed_outward(mesh)
    with torch.no_grad():
        assert float(field.sdf(mesh.vertices).abs().max()) < 0.4 / 40 / 4  # on the zero level set
    r = mesh.vertices.norm(dim=-1)  # the init is a lumpy sphere (random hidden layers), not an exact one
    assert 0.5 * field.cfg.sdf_net.init_radius < float(r.mean()) < 1.5 * field.cfg.sdf_net.init_radius
    assert mesh.has_texture and mesh.texture.shape == (128, 128, 3)
    assert float(mesh.texture.min()) >= 0 and float(mesh.texture.max()) <= 1
    assert abs(mesh.num_faces - 2000) <= 100
