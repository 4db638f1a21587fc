"""`headforge export`: which runs give which formats, every file written as one folder (export.json last), the files
read back as what was exported, and the refusals (a format the run cannot give, options no asked format reads, a clip
moving shapes the rig lacks, an output that is a file, a failure mid-way keeping the previous folder)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from avatar_fixtures import fit_record, make_avatar
from gltf_validator import require_validator, validate_glb

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.captures.images import write_image
from headforge.cli import main
from headforge.errors import InputError
from headforge.io.glb import load_glb
from headforge.pipeline.avatar_file import save_avatar
from headforge.pipeline.export_job import _clips, run_export
from headforge.pipeline.export_source import ExportFormat, ExportJob, RunKind, find_source, resolve_formats
from headforge.pipeline.rig_fit_file import TEXTURE_FILE, write_rig_fit
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.splat_io import (
    load_splats_dot_splat,
    load_splats_ply,
    load_splats_spz,
    save_splats_ply,
)
from headforge.stages.avatar import pose_avatar


@pytest.fixture(scope="module")
def rig():
    return load_builtin_rig()


@pytest.fixture(scope="module")
def avatar(rig):
    return make_avatar(rig, "builtin", n_face=800, n_hair=200)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, rig, avatar) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    save_avatar(avatar, root / "avatar_run" / "avatar", fit_record(avatar))
    fit = root / "fit"
    fit.mkdir()
    write_rig_fit(fit_record(avatar), fit)
    write_image(fit / TEXTURE_FILE, avatar.texture.texture.numpy())
    (root / "recon").mkdir()
    save_splats_ply(pose_avatar(avatar).detach(), root / "recon" / "splats.ply")
    (root / "main" / "reconstruction").mkdir(parents=True)
    save_splats_ply(pose_avatar(avatar).detach(), root / "main" / "reconstruction" / "splats.ply")
    (root / "field").mkdir()
    (root / "field" / "field.pt").write_bytes(b"not read by find_source")
    (root / "other").mkdir()
    (root / "notes.txt").write_text("hello")
    return {p.name: p for p in root.iterdir()}


def test_run_kinds_are_recognised(runs):
    assert find_source(runs["avatar_run"]).kind is RunKind.AVATAR
    assert find_source(runs["avatar_run"] / "avatar").folder == runs["avatar_run"] / "avatar"
    assert find_source(runs["fit"]).kind is RunKind.RIG_FIT
    assert find_source(runs["fit"] / "rig_fit.json").kind is RunKind.RIG_FIT
    assert find_source(runs["recon"]).kind is RunKind.SPLATS
    assert find_source(runs["main"]).folder == runs["main"] / "reconstruction"
    assert find_source(runs["recon"] / "splats.ply").kind is RunKind.SPLATS
    assert find_source(runs["field"]).kind is RunKind.FIELD
    for bad, match in ((runs["other"], "not a headforge run"), (runs["notes.txt"], "not something headforge"),
                       (runs["other"] / "missing", "does not exist")):
        with pytest.raises(InputError, match=match):
            find_source(bad)


def test_formats_a_run_cannot_give_are_refused_with_what_it_can(runs, tmp_path):
    fit = find_source(runs["fit"])
    assert resolve_formats(fit, (ExportFormat.ALL,)) == (ExportFormat.GLB, ExportFormat.VRM, ExportFormat.OBJ,
                                                         ExportFormat.PLY)
    with pytest.raises(InputError, match=r"(?s)rig-fit run cannot be exported as spz.*glb, vrm, obj, ply"):
        resolve_formats(fit, (ExportFormat.SPZ,))
    with pytest.raises(InputError, match="cannot be exported as vrm"):
        run_export(ExportJob(runs["recon"], tmp_path / "x", formats=(ExportFormat.VRM,)))
    with pytest.raises(InputError, match="no extracted mesh"):
        run_export(ExportJob(runs["field"], tmp_path / "x", formats=(ExportFormat.OBJ,)))
    assert not (tmp_path / "x").exists()


def test_options_no_asked_format_reads_are_refused(runs, tmp_path):
    out = tmp_path / "x"
    with pytest.raises(InputError, match="--clip only goes into"):
        run_export(ExportJob(runs["recon"], out, formats=(ExportFormat.PLY,), clips=("builtin:talk",)))
    with pytest.raises(InputError, match="VRM meta"):
        run_export(ExportJob(runs["fit"], out, formats=(ExportFormat.GLB,), author="me"))
    with pytest.raises(InputError, match="--ply-frame"):
        run_export(ExportJob(runs["fit"], out, formats=(ExportFormat.OBJ,), ply_frame="head"))
    assert not out.exists()


def test_a_clip_moving_shapes_the_rig_lacks_is_refused(rig, tmp_path):
    present = rig.expression_present.clone()
    k = ARKIT_NAMES.index("jawOpen")
    present[k] = False
    basis = rig.expression_basis.clone()
    basis[k] = 0
    lacking = replace(rig, expression_present=present, expression_basis=basis)
    with pytest.raises(InputError, match="jawOpen"):
        _clips(ExportJob(Path("run"), tmp_path / "x", clips=("builtin:talk",)), lacking)


def test_avatar_exports_every_format_as_one_folder(runs, avatar, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(runs["avatar_run"]), "--out", str(out), "--format", "all"]) == 0
    assert f"wrote {out} from the avatar run" in capsys.readouterr().out
    doc = json.loads((out / "export.json").read_text())
    assert doc["kind"] == "avatar"
    expected = {"head.glb", "head.vrm", "head.obj", "head.mtl", "head.png", "splats.ply", "splats.splat",
                "splats.spz"}
    assert set(doc["files"]) == expected
    assert {p.name for p in out.iterdir()} == expected | {"export.json"}
    # the GLB carries the rig: 52 named targets on the head mesh, the six joints, the four built-in clips
    glb = load_glb(out / "head.glb").document
    head = next(m for m in glb["meshes"] if m.get("extras", {}).get("targetNames"))
    assert head["extras"]["targetNames"] == list(ARKIT_NAMES)
    names = {n.get("name") for n in glb["nodes"]}
    assert {"root", "neck", "head", "jaw", "left_eye", "right_eye", "hair_splats"} <= names
    assert {a["name"] for a in glb["animations"]} == {"blink", "smile", "talk", "head_turn"}
    # the splat files read back as the avatar's Gaussians posed neutral in the rig frame (frames undone)
    want = pose_avatar(avatar, world=False).detach()
    for got, tol in ((load_splats_ply(out / "splats.ply"), 1e-6), (load_splats_spz(out / "splats.spz"), 2e-3)):
        assert torch.allclose(got.means, want.means, atol=tol)
    dot = load_splats_dot_splat(out / "splats.splat")
    assert torch.allclose(dot.means.sort(0).values, want.means.sort(0).values, atol=1e-6)
    assert b"frame" in (out / "splats.ply").read_bytes()[:600]


def test_exported_glb_and_vrm_pass_the_khronos_validator(runs, tmp_path):
    require_validator()
    out = tmp_path / "export"
    run_export(ExportJob(runs["fit"], out, formats=(ExportFormat.GLB, ExportFormat.VRM)))
    for name in ("head.glb", "head.vrm"):
        report = validate_glb(out / name)
        assert report.num_errors == 0, (name, report.issues[:5])


def test_output_rules(runs, tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        run_export(ExportJob(runs["recon"], tmp_path / "a_file", formats=(ExportFormat.PLY,)))
    out = tmp_path / "export"
    run_export(ExportJob(runs["recon"], out, formats=(ExportFormat.PLY,)))
    before = (out / "splats.ply").read_bytes()
    with pytest.raises(InputError, match="already exists"):
        run_export(ExportJob(runs["recon"], out, formats=(ExportFormat.SPZ,)))
    # a failure while writing leaves the previous export as it was, and no staging folder behind
    import headforge.representations.splat_io as splat_io

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    original = splat_io.save_splats_spz
    splat_io.save_splats_spz = broken
    try:
        with pytest.raises(OSError, match="disk full"):
            run_export(ExportJob(runs["recon"], out, formats=(ExportFormat.PLY, ExportFormat.SPZ), overwrite=True))
    finally:
        splat_io.save_splats_spz = original
    assert (out / "splats.ply").read_bytes() == before and not (out / "splats.spz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "export"]
    run_export(ExportJob(runs["main"], out, formats=(ExportFormat.ALL,), overwrite=True))
    assert set(json.loads((out / "export.json").read_text())["files"]) == {"splats.ply", "splats.splat",
                                                                           "splats.spz", "splats.glb"}


def test_report_of_an_avatar_run_shows_its_rigged_head(runs, tmp_path, capsys):
    import base64
    import re

    run = runs["avatar_run"]
    (run / "metrics.json").write_text(json.dumps({"job": "avatar", "num_gaussians": 1000}))
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "rigged head of this avatar run" in capsys.readouterr().out
    page = out.read_text()
    glb = re.search(r'<script[^>]*id="hf-glb"[^>]*>([^<]*)</script>', page)
    doc = load_glb_bytes(base64.b64decode(glb.group(1)))
    assert {a["name"] for a in doc["animations"]} == {"blink", "smile", "talk", "head_turn"}


def load_glb_bytes(data: bytes) -> dict:
    from headforge.io.glb import read_glb

    return read_glb(data).document


def test_quantized_targets_through_the_command(runs, tmp_path):
    require_validator()
    plain, small = tmp_path / "plain", tmp_path / "quantized"
    assert main(["export", str(runs["fit"]), "--out", str(plain), "--format", "glb"]) == 0
    assert main(["export", str(runs["fit"]), "--out", str(small), "--format", "glb", "--quantize-targets"]) == 0
    doc = load_glb(small / "head.glb").document
    assert "KHR_mesh_quantization" in doc["extensionsRequired"]
    assert (small / "head.glb").stat().st_size < (plain / "head.glb").stat().st_size
    assert validate_glb(small / "head.glb").num_errors == 0
    with pytest.raises(InputError, match="--quantize-targets"):
        run_export(ExportJob(runs["recon"], tmp_path / "x", formats=(ExportFormat.PLY,), quantize_targets=True))
