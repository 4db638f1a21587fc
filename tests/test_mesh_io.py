"""Mesh IO: round trips through OBJ/GLB/PLY, real scans, and a clear error for every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headforge.errors import InputError, MeshError
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import load_mesh, sample_vertex_colors, save_glb, save_obj, save_ply


def _cube(textured: bool = True) -> TexturedMesh:
    """Unit cube with a UV seam on every edge (per-corner UVs), 8 welded vertices, 12 faces."""
    v = torch.tensor([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces, faces_uv, uvs = [], [], []
    for q, (a, b, c, d) in enumerate(quads):
        u0 = q / 6
        base = len(uvs)
        uvs += [(u0 + 0.01, 0.1), (u0 + 0.15, 0.1), (u0 + 0.15, 0.9), (u0 + 0.01, 0.9)]
        faces += [(a, b, c), (a, c, d)]
        faces_uv += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    tex = torch.rand(16, 24, 3)
    tex = (tex * 255).round() / 255  # exactly representable in 8 bits
    if not textured:
        return TexturedMesh(v, torch.tensor(faces), vertex_colors=torch.rand(8, 3))
    return TexturedMesh(v, torch.tensor(faces), torch.tensor(uvs), torch.tensor(faces_uv), tex)


def _corner_uvs(m: TexturedMesh) -> torch.Tensor:  # [F, 3, 2]
    return m.uvs[m.faces_uv]


def test_obj_round_trip(tmp_path):
    m = _cube()
    save_obj(m, tmp_path / "cube.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.mtl", "cube.obj", "cube.png"]
    back = load_mesh(tmp_path / "cube.obj")
    assert torch.equal(back.vertices, m.vertices) and torch.equal(back.faces, m.faces)
    torch.testing.assert_close(_corner_uvs(back), _corner_uvs(m), atol=1e-7, rtol=0)
    torch.testing.assert_close(back.texture, m.texture, atol=1e-6, rtol=0)


def test_glb_round_trip_welds_seams(tmp_path):
    m = _cube()
    save_glb(m, tmp_path / "cube.glb")
    back = load_mesh(tmp_path / "cube.glb")
    assert back.num_vertices == 8  # glTF stores 24 split vertices; they are welded back
    assert torch.equal(back.vertices, m.vertices) and torch.equal(back.faces, m.faces)
    torch.testing.assert_close(_corner_uvs(back), _corner_uvs(m), atol=1e-6, rtol=0)  # v flip undone
    torch.testing.assert_close(back.texture, m.texture, atol=1e-6, rtol=0)
    unwelded = load_mesh(tmp_path / "cube.glb", weld=False)
    assert unwelded.num_vertices == 24


def test_vertex_colours_obj_ply_glb(tmp_path):
    m = _cube(textured=False)
    for name, save in (("c.obj", save_obj), ("c.ply", save_ply), ("c.glb", save_glb)):
        save(m, tmp_path / name)
        back = load_mesh(tmp_path / name)
        assert torch.equal(back.faces, m.faces), name
        torch.testing.assert_close(back.vertex_colors, m.vertex_colors, atol=1 / 255 if name != "c.obj" else 1e-5,
                                   rtol=0)


def test_ply_samples_texture_into_vertex_colours(tmp_path):
    m = _cube()
    save_ply(m, tmp_path / "c.ply")
    back = load_mesh(tmp_path / "c.ply")
    torch.testing.assert_close(back.vertex_colors, sample_vertex_colors(m), atol=1 / 255, rtol=0)


def test_quads_negative_indices_and_vertex_colours(tmp_path):
    (tmp_path / "q.obj").write_text("v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 1 1 0 0 0 1\nv 0 1 0 1 1 1\n"
                                    "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nf -4/-4 -3/-3 -2/-2 -1/-1\n")
    m = load_mesh(tmp_path / "q.obj")
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert m.faces_uv.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert m.vertex_colors[1].tolist() == [0, 1, 0]
    assert m.texture is None  # no mtllib, no image in the folder


def test_multi_material_obj_packs_atlas(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd red.png\nnewmtl b\nKd 0 0 1\n")
    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0.5 0.5\n"
                                    "usemtl a\nf 1/1 2/1 3/1\nusemtl b\nf 2/1 4/1 3/1\n")
    m = load_mesh(tmp_path / "m.obj")
    from headforge.representations.mesh_io import sample_vertex_colors as svc
    cols = svc(TexturedMesh(m.vertices, m.faces[:1], m.uvs, m.faces_uv[:1], m.texture))
    assert cols[0].tolist() == pytest.approx([1, 0, 0])
    cols = svc(TexturedMesh(m.vertices, m.faces[1:], m.uvs, m.faces_uv[1:], m.texture))
    assert cols[3].tolist() == pytest.approx([0, 0, 1])


def test_lps_head_loads_welded_with_texture(lps_head_dir):
    m = load_mesh(lps_head_dir / "head.obj")
    assert m.num_vertices == 8844 and m.num_faces == 17684
    assert m.texture is not None and m.texture.shape == (2048, 2048, 3) and m.texture.dtype == torch.float32
    assert m.uvs.shape[0] > m.num_vertices  # seams: more UV corners than positions
    assert 0 <= float(m.texture.min()) and float(m.texture.max()) <= 1


def test_ict_quads_triangulated(shared_data):
    path = shared_data / "ict_facekit" / "generic_neutral_mesh.obj"
    if not path.is_file():
        pytest.skip(f"ICT-FaceKit mesh not found at {path}")
    m = load_mesh(path, weld=False)  # keep the kit's vertex indexing
    assert m.num_vertices == 26719 and m.texture is None and m.uvs is not None
    assert load_mesh(path).num_vertices < 26719  # coincident vertices of its separate parts are welded


# ------------------------------------------------------------------------------------------ errors
def _expect(exc, path: Path, words: str, **kw):
    with pytest.raises(exc) as info:
        load_mesh(path, **kw)
    msg = str(info.value)
    assert str(path.name) in msg and "Fix:" in msg and words in msg, msg
    return msg


def test_errors(tmp_path):
    _expect(InputError, tmp_path / "nope.obj", "does not exist")
    (tmp_path / "a.stl").write_text("solid x\nendsolid x\n")
    _expect(InputError, tmp_path / "a.stl", "unsupported")
    (tmp_path / "bad.obj").write_text("v 0 0 zero\n")
    _expect(MeshError, tmp_path / "bad.obj", "line 1")
    (tmp_path / "pts.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    _expect(MeshError, tmp_path / "pts.obj", "no faces")
    (tmp_path / "nan.obj").write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    _expect(MeshError, tmp_path / "nan.obj", "non-finite")
    (tmp_path / "idx.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    _expect(MeshError, tmp_path / "idx.obj", "do not exist")
    (tmp_path / "junk.glb").write_bytes(b"\x00garbage" * 10)
    _expect(MeshError, tmp_path / "junk.glb", "cannot read")
    (tmp_path / "junk.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n")
    _expect(MeshError, tmp_path / "junk.ply", "")


def test_missing_texture_is_an_error_unless_opted_out(tmp_path):
    m = _cube()
    save_obj(m, tmp_path / "cube.obj")
    (tmp_path / "cube.png").unlink()
    with pytest.raises(InputError) as info:
        load_mesh(tmp_path / "cube.obj")
    assert "cube.png" in str(info.value) and "Fix:" in str(info.value)
    fallback = load_mesh(tmp_path / "cube.obj", require_texture=False)
    assert fallback.texture is None and fallback.uvs is not None
    (tmp_path / "cube.mtl").unlink()
    with pytest.raises(InputError, match="cube.mtl"):
        load_mesh(tmp_path / "cube.obj")


def test_failed_save_leaves_nothing(tmp_path):
    m = _cube()
    bad = TexturedMesh(m.vertices, m.faces, m.uvs, m.faces_uv, torch.rand(4, 4, 7))  # not an RGB image
    with pytest.raises((TypeError, ValueError)):
        save_obj(bad, tmp_path / "x.obj")
    assert list(tmp_path.iterdir()) == []


def test_glb_reads_the_same_through_trimesh_and_the_glb_reader(tmp_path):
    """Two readers of save_glb's output agree: trimesh (load_mesh) and headforge.io.glb."""
    import numpy as np

    from headforge.io.glb import load_glb

    m = _cube()
    save_glb(m, tmp_path / "cube.glb")
    glb = load_glb(tmp_path / "cube.glb")
    prim = glb.document["meshes"][0]["primitives"][0]
    pos = glb.accessor(prim["attributes"]["POSITION"])
    uv = glb.accessor(prim["attributes"]["TEXCOORD_0"])
    faces = glb.accessor(prim["indices"]).reshape(-1, 3)
    trim = load_mesh(tmp_path / "cube.glb", weld=False)
    np.testing.assert_array_equal(trim.vertices.numpy(), pos)
    np.testing.assert_array_equal(trim.faces.numpy(), faces)
    np.testing.assert_allclose(trim.uvs.numpy(), np.stack([uv[:, 0], 1 - uv[:, 1]], 1), atol=1e-7)  # v flipped
    np.testing.assert_allclose(m.uvs[m.faces_uv].reshape(-1, 2).numpy(), trim.uvs[trim.faces_uv].reshape(-1, 2).numpy(),
                               atol=1e-6)


# ------------------------------------------------------------------------------------------ issue 10 holes
def test_mtl_kd_not_numeric_names_the_mtl_and_line(tmp_path):
    save_obj(_cube(), tmp_path / "cube.obj")
    mtl = tmp_path / "cube.mtl"
    assert load_mesh(tmp_path / "cube.obj").has_texture  # negative control: the written MTL is fine
    mtl.write_text(mtl.read_text().replace("Kd 1 1 1", "Kd red 1 1"))
    with pytest.raises(InputError, match=r"line 3: Kd must be three numbers, got 'red 1 1'") as info:
        load_mesh(tmp_path / "cube.obj")
    assert str(mtl) in str(info.value) and "Fix:" in str(info.value)
    mtl.write_text(mtl.read_text().replace("Kd red 1 1", "Kd nan 1 1"))
    with pytest.raises(InputError, match="line 3: Kd has 1 of 3 values with NaN or Inf"):
        load_mesh(tmp_path / "cube.obj")


def test_texture_that_is_not_an_image(tmp_path):
    save_obj(_cube(), tmp_path / "cube.obj")
    png = tmp_path / "cube.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated
    with pytest.raises(InputError, match="texture image is (corrupt or truncated|not an image)") as info:
        load_mesh(tmp_path / "cube.obj")
    assert str(png) in str(info.value)
    png.write_text("this is not a PNG")
    with pytest.raises(InputError, match="texture image is not an image"):
        load_mesh(tmp_path / "cube.obj")


def test_untextured_mesh_warns_once(tmp_path, capsys):
    m = _cube()
    bare = TexturedMesh(m.vertices, m.faces)
    save_obj(bare, tmp_path / "bare.obj")
    loaded = load_mesh(tmp_path / "bare.obj")
    assert loaded.texture is None
    err = capsys.readouterr().err
    assert err == f"warning: {tmp_path / 'bare.obj'} has no texture; the capture will be uniformly coloured\n"
    save_obj(m, tmp_path / "cube.obj")
    load_mesh(tmp_path / "cube.obj")  # negative control: a textured mesh loads without a word
    save_obj(_cube(textured=False), tmp_path / "coloured.obj")
    load_mesh(tmp_path / "coloured.obj")  # vertex colours are not uniform either
    assert capsys.readouterr().err == ""


def test_mesh_symlink_loop_and_folder(tmp_path):
    loop = tmp_path / "loop.obj"
    loop.symlink_to(loop)
    _expect(InputError, loop, "symlink loop")
    (tmp_path / "dir.obj").mkdir()
    _expect(InputError, tmp_path / "dir.obj", "is a folder")
    save_obj(_cube(), tmp_path / "cube.obj")
    png = tmp_path / "cube.png"
    png.unlink()
    png.symlink_to(png)
    with pytest.raises(InputError, match="symlink loop"):
        load_mesh(tmp_path / "cube.obj")
