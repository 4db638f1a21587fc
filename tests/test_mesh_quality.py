"""Meshes fit for engines: quality report, repair, UV-space rasterization, unwrap budget, the extract-mesh stage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_mesh_extract import HI, LO
from test_mesh_extract import AnalyticField as Field  # cfg.sdf, bounds, sdf/density, red-blue colour

from headforge.errors import InputError
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import load_mesh
from headforge.stages.mesh_cleanup import decimate, repair, signed_volume
from headforge.stages.mesh_extract import EmptyFieldError, extract_mesh
from headforge.stages.mesh_quality import duplicate_face_mask, mesh_report, report_arrays
from headforge.stages.mesh_stage import extract_mesh_stage
from headforge.stages.mesh_types import MeshExtractConfig, UnwrapMethod
from headforge.stages.texture_bake import rasterize_uv, unwrap_uvs
from headforge.stages.uv_unwrap import UnwrapTimeout

TETRA_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # counter-clockwise seen from outside


def ellipsoid_sdf(p):  # [N, 3] -> [N, 1], approximately metric
    q = p / torch.tensor([0.08, 0.11, 0.09])
    return ((q.norm(dim=-1) - 1) * 0.08)[:, None]


def thin_density(p):  # a blob with a sheet about one grid cell thick and a rod thinner than one, plus ripples
    r = p.norm(dim=-1)
    blob = 2000 * torch.sigmoid((0.08 - r) / 0.004)
    sheet = 2000 * torch.sigmoid((0.004 - p[:, 2].abs()) / 0.001) * torch.sigmoid((0.15 - r) / 0.004)
    rod = 1500 * torch.sigmoid((0.003 - (p[:, :2] - torch.tensor([0.0, 0.12])).norm(dim=-1)) / 0.0005)
    ripples = 60 * torch.sin(90 * p[:, 0]) * torch.sin(70 * p[:, 1])
    return (blob + sheet + rod + ripples).clamp_min(0)[:, None]


def test_report_counts_hand_made_defects():
    ok = report_arrays(TETRA_V, TETRA_F)
    assert ok.engine_ready and (ok.components, ok.boundary_edges, ok.faces, ok.vertices) == (1, 0, 4, 4)
    copy = report_arrays(TETRA_V, np.concatenate([TETRA_F, TETRA_F[:1]]))
    assert copy.duplicate_faces == 1 and copy.non_manifold_edges == 3 and not copy.engine_ready
    back = report_arrays(TETRA_V, np.concatenate([TETRA_F, TETRA_F[:1, ::-1]]))
    assert back.duplicate_faces == 1 and back.non_manifold_edges == 3  # edges now used by three faces
    fin = report_arrays(np.concatenate([TETRA_V, [[2.0, 2, 2]]]), np.concatenate([TETRA_F, [[1, 2, 4]]]))
    assert fin.non_manifold_edges == 1 and fin.boundary_edges == 2 and fin.duplicate_faces == 0
    two = report_arrays(np.concatenate([TETRA_V, TETRA_V + 5]), np.concatenate([TETRA_F, TETRA_F + 4]))
    assert two.components == 2 and two.non_manifold_edges == 0
    holed = report_arrays(TETRA_V, TETRA_F[1:])
    assert holed.boundary_edges == 3 and not holed.engine_ready
    assert (ok.genus, two.genus, holed.genus, fin.genus) == (0, 0, None, None)  # genus of closed manifolds only


def test_report_counts_handles():
    """A torus has one handle, two tori two (as pieces), a double torus (two tori fused) would have two."""
    import trimesh

    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    one = report_arrays(np.asarray(torus.vertices), np.asarray(torus.faces))
    assert one.engine_ready and one.euler_characteristic == 0 and one.genus == 1
    v, f = np.asarray(torus.vertices), np.asarray(torus.faces)
    pair = report_arrays(np.concatenate([v, v + 5]), np.concatenate([f, f + len(v)]))
    assert pair.components == 2 and pair.genus == 2 and "genus 2" in pair.summary()


def test_duplicate_face_mask_keeps_one_copy_and_drops_sheets():
    faces = np.array([[0, 1, 2], [1, 2, 0], [3, 4, 5], [5, 4, 3], [6, 7, 8]])  # a copy (rotated), a sheet, a single
    drop, dup = duplicate_face_mask(faces)
    assert dup == 2 and drop.tolist() == [False, True, True, True, False]


def test_uv_charts_and_vertex_ratio():
    # two triangles sharing the edge 1-2: one chart when the uvs are shared, two when the edge is a seam
    v, f = np.zeros((4, 3)), np.array([[0, 1, 2], [2, 1, 3]])
    shared = report_arrays(v, f, np.array([[0, 1, 2], [2, 1, 3]]))
    seam = report_arrays(v, f, np.array([[0, 1, 2], [5, 4, 3]]))
    assert (shared.charts, shared.vertex_ratio) == (1, 1.0)
    assert (seam.charts, seam.vertex_ratio) == (2, 1.5)


def test_repair_makes_a_broken_sphere_engine_ready():
    sphere = extract_mesh(lambda p: p.norm(dim=-1, keepdim=True) - 0.1, LO, HI,
                          MeshExtractConfig(resolution=24, target_faces=None, progress=False), is_sdf=True)
    v, f = sphere.vertices, sphere.faces
    n = len(v)
    extra_v = torch.tensor([[0.3, 0.3, 0.3], [0.0, 0.0, 0.5], [0.31, 0.3, 0.3], [0.3, 0.31, 0.3]])
    broken_f = torch.cat([f, f[:3].flip(-1), f[5:6],  # back-to-back sheets and a same-winding copy
                          torch.tensor([[f[10, 0], f[10, 1], n + 1]]),  # a fin on an edge (3 faces there)
                          torch.tensor([[n, n + 2, n + 3]])])  # a floater
    broken = TexturedMesh(torch.cat([v, extra_v]), broken_f)
    before = mesh_report(broken)
    assert before.duplicate_faces == 4 and before.non_manifold_edges > 0 and before.components == 2
    fixed = mesh_report(repair(broken))
    assert fixed.engine_ready, fixed


def test_rasterize_uv_single_triangle_hand_case():
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # lower-left half of the texture (v up)
    sample, tri, bary = rasterize_uv(uvs, torch.tensor([[0, 1, 2]]), 4)
    want = []
    for j in range(4):  # row 0 is the top of the image: v = 1 - (j + 0.5) / 4
        for i in range(4):
            u, v = (i + 0.5) / 4, 1 - (j + 0.5) / 4
            if u + v <= 1:
                want.append((j * 4 + i, (1 - u - v, u, v)))
    assert sample.tolist() == [w[0] for w in want] and tri.tolist() == [0] * len(want)
    assert torch.allclose(bary, torch.tensor([w[1] for w in want], dtype=torch.float64), atol=1e-9)
    # supersampled: 2 x 2 samples per texel, sample centres at (i + 0.5) / 2 texels
    sample2, _, _ = rasterize_uv(uvs, torch.tensor([[0, 1, 2]]), 4, 2)
    cols, rows = sample2 % 8, sample2 // 8
    assert bool(((cols + 0.5) / 8 + 1 - (rows + 0.5) / 8 <= 1 + 1e-9).all()) and len(sample2) == 36


def test_rasterize_uv_tiles_the_square_once():
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sample, tri, _ = rasterize_uv(uvs, torch.tensor([[0, 1, 2], [2, 1, 3]]), 16, 2)
    assert sample.tolist() == list(range(32 * 32))  # every sample once; the diagonal's ties go to triangle 0
    cols, rows = sample % 32, sample // 32
    assert bool(((tri == 0) == (cols <= rows)).all())  # u + v <= 1 with v = 1 - (row + 0.5) / 32


def test_unwrap_budget_falls_back_or_fails():
    mesh = extract_mesh(ellipsoid_sdf, LO, HI, MeshExtractConfig(resolution=24, target_faces=None, progress=False),
                        is_sdf=True)
    cfg = MeshExtractConfig(unwrap_seconds=1e-3, texture_size=128, progress=False)
    with pytest.raises(UnwrapTimeout):
        unwrap_uvs(mesh, MeshExtractConfig(unwrap=UnwrapMethod.XATLAS, unwrap_seconds=1e-3, progress=False))
    fallback, method = unwrap_uvs(mesh, cfg)
    assert method == UnwrapMethod.CUBE
    report = mesh_report(fallback)
    assert 6 <= report.charts <= 12 and report.vertex_ratio < 1.35
    assert float(fallback.uvs.min()) >= 0 and float(fallback.uvs.max()) <= 1


@pytest.mark.parametrize("kind", ["sdf", "density"])
def test_stage_writes_an_engine_ready_mesh(kind, tmp_path):
    field = Field(sdf=ellipsoid_sdf) if kind == "sdf" else Field(density=thin_density)
    target = 3000 if kind == "sdf" else 800
    cfg = MeshExtractConfig(resolution=64, target_faces=target, texture_size=256, progress=False)
    if kind == "density":  # without the repair, decimating this field's mesh breaks it (the test can fail)
        raw = extract_mesh(field.density, LO, HI, MeshExtractConfig(resolution=64, target_faces=None,
                                                                    progress=False), is_sdf=False)
        broken = mesh_report(decimate(raw, target))
        assert broken.non_manifold_edges > 0 and broken.duplicate_faces > 0
    result = extract_mesh_stage(field, cfg, tmp_path / "mesh")
    r = result.report
    assert r.engine_ready, r
    assert abs(r.faces - target) <= 0.1 * target and result.unwrap == UnwrapMethod.XATLAS
    assert r.charts <= 60 and r.vertex_ratio < 1.5, r  # few large charts (confetti: one chart per few faces, >= 2)
    for p in (result.files.obj, result.files.mtl, result.files.texture, result.files.ply, result.files.glb):
        assert p.is_file() and p.parent == tmp_path / "mesh"
    names = [name for name, _ in result.seconds]
    assert names[:3] == ["sample field", "marching cubes", "cleanup"] and "unwrap" in names and "bake" in names
    if kind == "sdf":
        assert result.level == 0.0
        vol = 4 / 3 * math.pi * 0.08 * 0.11 * 0.09
        assert signed_volume(load_mesh(result.files.ply)) == pytest.approx(vol, rel=0.03)


def test_stage_output_is_all_or_nothing(tmp_path):
    cfg = MeshExtractConfig(resolution=24, target_faces=500, texture_size=64, progress=False)
    out = tmp_path / "mesh"
    first = extract_mesh_stage(Field(sdf=ellipsoid_sdf), cfg, out)
    stamp = first.files.glb.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        extract_mesh_stage(Field(sdf=ellipsoid_sdf), cfg, out)
    empty = Field(sdf=lambda p: p.norm(dim=-1, keepdim=True) + 1.0)
    with pytest.raises(EmptyFieldError):
        extract_mesh_stage(empty, cfg, out, overwrite=True)
    assert first.files.glb.read_bytes() == stamp  # the failed run left the previous folder as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh"]
    second = extract_mesh_stage(Field(sdf=ellipsoid_sdf), MeshExtractConfig(
        resolution=24, target_faces=300, texture_size=64, progress=False), out, overwrite=True)
    assert second.report.faces != first.report.faces and second.files.glb.read_bytes() != stamp
