"""Checkpoints, field.pt and --init-ply: random bytes, truncated, the wrong kind, a different preset or --steps
below the checkpoint on --resume, --resume with nothing to resume, an empty splat PLY. Refused naming the file (and
for a changed config the differing keys), and the earlier run stays byte-identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import TINY_GAUSSIANS, assert_refused, snapshot

CHECKPOINT = "checkpoints/step_000002.pt"


def _resume(cli, capture, run, preset, *extra):
    return cli("reconstruct", capture, "--out", run, "--resume", "--preset", preset, "--test-every", "4",
               "--device", "cpu", *extra)


def _noise(n: int) -> bytes:
    return np.random.default_rng(2).integers(0, 256, n, np.uint8).tobytes()


BREAKERS = {
    "random-bytes": lambda p: p.write_bytes(_noise(4096)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "a-list": lambda p: torch.save([1, 2, 3], p),
}


@pytest.mark.parametrize("kind", list(BREAKERS))
def test_broken_checkpoint_on_resume(kind, run_copy, tiny_capture, tiny_presets, tmp_path, cli):
    BREAKERS[kind](run_copy / CHECKPOINT)
    before = snapshot(tmp_path)
    result = _resume(cli, tiny_capture, run_copy, tiny_presets["gaussians"])
    assert_refused(result, run_copy / CHECKPOINT, root=tmp_path, before=before)


def test_gaussian_checkpoint_resumed_as_hashgrid(run_copy, tiny_capture, tiny_presets, tmp_path, cli):
    before = snapshot(tmp_path)
    result = _resume(cli, tiny_capture, run_copy, tiny_presets["field"], "--method", "hashgrid")
    assert_refused(result, run_copy / CHECKPOINT, root=tmp_path, before=before)


@pytest.mark.parametrize(("change", "keys"), [
    (("max_sh_degree = 1", "max_sh_degree = 3"), ["max_sh_degree"]),
    (("init_points = 300", "init_points = 400"), ["init_points"]),
], ids=["sh-degree", "init-points"])
def test_resume_with_a_different_preset_names_the_keys(change, keys, run_copy, tiny_capture, tmp_path, cli):
    preset = tmp_path / "changed.toml"
    preset.write_text(TINY_GAUSSIANS.replace(*change))
    before = snapshot(tmp_path)
    result = _resume(cli, tiny_capture, run_copy, preset, "--steps", "3")
    assert_refused(result, run_copy / CHECKPOINT, *keys, root=tmp_path, before=before)


def test_resume_with_steps_below_the_checkpoint(run_copy, tiny_capture, tiny_presets, tmp_path, cli):
    before = snapshot(tmp_path)
    result = _resume(cli, tiny_capture, run_copy, tiny_presets["gaussians"], "--steps", "1")
    assert_refused(result, "steps", run_copy / CHECKPOINT, root=tmp_path, before=before)


@pytest.mark.parametrize("state", ["no-folder", "empty-folder", "no-checkpoints"])
def test_resume_with_nothing_to_resume(state, run_copy, tiny_capture, tiny_presets, tmp_path, cli):
    out = tmp_path / "fresh"
    if state == "empty-folder":
        out.mkdir()
    elif state == "no-checkpoints":
        out = run_copy
        for ckpt in (out / "checkpoints").iterdir():
            ckpt.unlink()
    before = snapshot(tmp_path)
    result = _resume(cli, tiny_capture, out, tiny_presets["gaussians"])
    assert_refused(result, out, "--resume", root=tmp_path, before=before)


FIELD_BREAKERS = {
    "random-bytes": lambda p: p.write_bytes(_noise(4096)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a-list": lambda p: torch.save(["not", "a", "field"], p),
    "missing-keys": lambda p: torch.save({"config": {}}, p),
}


@pytest.mark.parametrize("kind", list(FIELD_BREAKERS))
def test_broken_field_pt(kind, field_run_copy, tmp_path, cli):
    FIELD_BREAKERS[kind](field_run_copy / "field.pt")
    before = snapshot(tmp_path)
    result = cli("extract-mesh", field_run_copy, "--resolution", "8", "--target-faces", "100", "--texture-size",
                 "16", "--unwrap-seconds", "1")
    assert_refused(result, field_run_copy / "field.pt", root=tmp_path, before=before)


def test_extract_mesh_from_a_gaussian_run(run_copy, tmp_path, cli):
    before = snapshot(tmp_path)
    result = cli("extract-mesh", run_copy, "--resolution", "8")
    assert_refused(result, run_copy, root=tmp_path, before=before)


PLY_HEADER = ("ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
              + "".join(f"property float {p}\n" for p in
                        ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                         "rot_0", "rot_1", "rot_2", "rot_3"]) + "end_header\n")


@pytest.mark.parametrize("kind", ["zero-splats", "random-bytes", "nan-positions"])
def test_bad_init_ply(kind, tiny_capture, tiny_presets, tmp_path, cli):
    ply = tmp_path / "init.ply"
    if kind == "zero-splats":
        ply.write_bytes(PLY_HEADER.format(n=0).encode())
    elif kind == "random-bytes":
        ply.write_bytes(_noise(2048))
    else:
        data = np.zeros((4, 14), np.float32)
        data[:, 10] = 1.0  # rot_0
        data[2, 0] = np.nan
        ply.write_bytes(PLY_HEADER.format(n=4).encode() + data.tobytes())
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--init-ply", ply, "--preset",
                 tiny_presets["gaussians"], "--test-every", "4", "--device", "cpu")
    assert_refused(result, ply, root=tmp_path, before=before)


def test_random_bytes_checkpoint_in_a_subprocess(run_copy, tiny_capture, tiny_presets, tmp_path, subproc):
    (run_copy / CHECKPOINT).write_bytes(_noise(4096))
    before = snapshot(tmp_path)
    result = subproc("reconstruct", tiny_capture, "--out", run_copy, "--resume", "--preset", tiny_presets["gaussians"],
                     "--test-every", "4", "--device", "cpu")
    assert_refused(result, run_copy / CHECKPOINT, root=tmp_path, before=before)
