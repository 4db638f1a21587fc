"""Meshes for render-capture and run --mesh: OBJ/MTL with a non-numeric Kd, a missing texture or library, empty,
NaN vertices, faces out of range, not a mesh at all. Refused naming the mesh (or its MTL / texture)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import TETRA_MTL, TETRA_OBJ, assert_refused, snapshot, write_tetra


def _render(cli, mesh, tmp_path):
    return cli("render-capture", mesh, "--out", tmp_path / "out", "--rig", "ring", "--num-views", "2",
               "--resolution", "16", "--supersample", "1")


CASES = {  # id -> (obj text, mtl text or None, texture written, file that must be named)
    "mtl-kd-not-a-number": (TETRA_OBJ, TETRA_MTL.replace("Kd 0.8 0.6 0.5", "Kd skin tone please"), True,
                            "tetra.mtl"),
    "texture-missing": (TETRA_OBJ, TETRA_MTL, False, "tetra.png"),
    "mtl-missing": (TETRA_OBJ, None, True, "tetra.mtl"),
    "empty-obj": ("", TETRA_MTL, True, "tetra.obj"),
    "no-faces": ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", None, False, "tetra.obj"),
    "nan-vertex": (TETRA_OBJ.replace("v 0.1 0 0", "v nan 0 0"), TETRA_MTL, True, "tetra.obj"),
    "inf-vertex": (TETRA_OBJ.replace("v 0.1 0 0", "v inf 0 0"), TETRA_MTL, True, "tetra.obj"),
    "face-index-out-of-range": (TETRA_OBJ.replace("f 2/1 3/2 4/3", "f 2/1 3/2 40/3"), TETRA_MTL, True, "tetra.obj"),
    "not-an-obj": ("this is not an obj\n", None, False, "tetra.obj"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_broken_obj(kind, tmp_path, cli):
    obj, mtl, texture, named = CASES[kind]
    mesh = write_tetra(tmp_path / "mesh", obj=obj, mtl=mtl, texture=texture)
    before = snapshot(tmp_path)
    assert_refused(_render(cli, mesh, tmp_path), named, root=tmp_path, before=before)


def test_texture_not_an_image(tmp_path, cli):
    mesh = write_tetra(tmp_path / "mesh")
    (tmp_path / "mesh/tetra.png").write_text("not a png")
    before = snapshot(tmp_path)
    assert_refused(_render(cli, mesh, tmp_path), "tetra.png", root=tmp_path, before=before)


@pytest.mark.parametrize("suffix", [".ply", ".glb", ".obj", ".stl"])
def test_random_bytes_mesh(suffix, tmp_path, cli):
    mesh = tmp_path / f"noise{suffix}"
    mesh.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, np.uint8).tobytes())
    before = snapshot(tmp_path)
    assert_refused(_render(cli, mesh, tmp_path), mesh, root=tmp_path, before=before)


def test_mesh_is_a_directory(tmp_path, cli):
    mesh = tmp_path / "head.obj"
    mesh.mkdir()
    before = snapshot(tmp_path)
    assert_refused(_render(cli, mesh, tmp_path), mesh, root=tmp_path, before=before)


def test_run_with_a_broken_mesh(tmp_path, cli):
    mesh = write_tetra(tmp_path / "mesh", mtl=TETRA_MTL.replace("Kd 0.8 0.6 0.5", "Kd a b c"))
    before = snapshot(tmp_path)
    result = cli("run", "--mesh", mesh, "--out", tmp_path / "job", "--rig", "ring", "--resolution", "16",
                 "--steps", "1")
    assert_refused(result, "tetra.mtl", root=tmp_path, before=before)


def test_broken_mtl_in_a_subprocess(tmp_path, subproc):
    mesh = write_tetra(tmp_path / "mesh", mtl=TETRA_MTL.replace("Kd 0.8 0.6 0.5", "Kd 0.8 zero 0.5"))
    before = snapshot(tmp_path)
    result = subproc("render-capture", mesh, "--out", tmp_path / "out", "--rig", "ring", "--num-views", "2",
                     "--resolution", "16", "--supersample", "1")
    assert_refused(result, "tetra.mtl", root=tmp_path, before=before)
