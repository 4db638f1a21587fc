"""TOML presets (``--preset FILE``): wrong types, out-of-range values, unknown keys, not TOML, not UTF-8. Each is
refused naming the preset file and the key, before any training starts."""

from __future__ import annotations

import pytest

from .conftest import TINY_FIELD, TINY_GAUSSIANS, assert_refused, snapshot

GAUSSIAN_CASES = [  # (id, preset text, key that must be named)
    ("steps-string", 'resolution = 32\n[train]\nsteps = "five"\ninit_points = 300\n', "steps"),
    ("steps-negative", "resolution = 32\n[train]\nsteps = -5\ninit_points = 300\n", "steps"),
    ("steps-zero", "resolution = 32\n[train]\nsteps = 0\ninit_points = 300\n", "steps"),
    ("steps-float", "resolution = 32\n[train]\nsteps = 2.5\ninit_points = 300\n", "steps"),
    ("steps-nan", "resolution = 32\n[train]\nsteps = nan\ninit_points = 300\n", "steps"),
    ("init-points-negative", "resolution = 32\n[train]\nsteps = 2\ninit_points = -100\n", "init_points"),
    ("resolution-zero", "resolution = 0\n[train]\nsteps = 2\ninit_points = 300\n", "resolution"),
    ("resolution-string", 'resolution = "big"\n[train]\nsteps = 2\ninit_points = 300\n', "resolution"),
    ("resolution-gigantic", "resolution = 200000\n[train]\nsteps = 2\ninit_points = 300\n", "resolution"),
    ("sh-degree-7", "resolution = 32\n[train]\nsteps = 2\nmax_sh_degree = 7\ninit_points = 300\n", "max_sh_degree"),
    ("lr-negative", "resolution = 32\n[train]\nsteps = 2\ninit_points = 300\nmeans_lr = -1.0\n", "means_lr"),
    ("refine-every-zero", "resolution = 32\n[train]\nsteps = 2\ninit_points = 300\n[train.densify]\n"
                          "refine_every = 0\n", "refine_every"),
    ("unknown-key", "resolution = 32\n[train]\nsteps = 2\ninit_pointz = 300\n", "init_pointz"),
    ("train-not-a-table", "resolution = 32\ntrain = 5\n", "train"),
    ("densify-not-a-table", "resolution = 32\n[train]\nsteps = 2\ndensify = [1, 2]\n", "densify"),
    ("not-toml", "resolution = 32\n[train\nsteps = 2\n", "line"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in GAUSSIAN_CASES], ids=[c[0] for c in GAUSSIAN_CASES])
def test_gaussian_preset(text, key, tiny_capture, tmp_path, cli):
    preset = tmp_path / "bad.toml"
    preset.write_text(text)
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--preset", preset, "--test-every", "4",
                 "--device", "cpu")
    assert_refused(result, preset, key, root=tmp_path, before=before)


def test_preset_not_utf8(tiny_capture, tmp_path, cli):
    preset = tmp_path / "latin1.toml"
    preset.write_bytes(TINY_GAUSSIANS.encode() + "# r\xe9glages\n".encode("latin-1") + b"\xff\xfe\n")
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--preset", preset, "--device", "cpu")
    assert_refused(result, preset, root=tmp_path, before=before)


def test_preset_is_a_directory(tiny_capture, tmp_path, cli):
    preset = tmp_path / "preset.toml"
    preset.mkdir()
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--preset", preset, "--device", "cpu")
    assert_refused(result, preset, root=tmp_path, before=before)


FIELD_CASES = [
    ("levels-zero", TINY_FIELD.replace("n_levels = 4", "n_levels = 0"), "n_levels"),
    ("table-size-string", TINY_FIELD.replace("log2_table_size = 10", 'log2_table_size = "ten"'), "log2_table_size"),
    ("rays-zero", TINY_FIELD.replace("rays_per_batch = 256", "rays_per_batch = 0"), "rays_per_batch"),
    ("occupancy-resolution-negative", TINY_FIELD.replace("resolution = 16", "resolution = -16"), "resolution"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES])
def test_field_preset(text, key, tiny_capture, tmp_path, cli):
    preset = tmp_path / "bad_field.toml"
    preset.write_text(text)
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--method", "hashgrid", "--preset", preset,
                 "--test-every", "4", "--device", "cpu")
    assert_refused(result, preset, key, root=tmp_path, before=before)


def test_run_with_a_bad_preset_in_a_subprocess(tetra, tmp_path, subproc):
    preset = tmp_path / "bad.toml"
    preset.write_text('resolution = 16\n[train]\nsteps = "five"\n')
    before = snapshot(tmp_path)
    result = subproc("run", "--mesh", tetra, "--out", tmp_path / "job", "--rig", "ring", "--resolution", "16",
                     "--preset", preset)
    assert_refused(result, preset, "steps", root=tmp_path, before=before)
