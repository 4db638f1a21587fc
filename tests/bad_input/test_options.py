"""Command-line numbers, choices and combinations, given with valid input files: refused before any work, by
``--flag-name``, with nothing written. Gigantic sizes run in a memory-limited subprocess (on a branch without
the up-front refusal they reach the allocator)."""

from __future__ import annotations

import pytest

from .conftest import GIGANTIC, assert_refused, snapshot


def _render(tetra, tmp_path, *extra):
    return ["render-capture", tetra, "--out", tmp_path / "out", "--rig", "ring", "--num-views", "2",
            "--resolution", "16", "--supersample", "1", *extra]


@pytest.mark.parametrize(("option", "value"), [
    ("--resolution", "0"), ("--resolution", "-16"), ("--fov-deg", "0"), ("--fov-deg", "180"),
    ("--num-views", "0"), ("--head-width", "0"), ("--head-width", "-0.1"), ("--supersample", "0"),
])
def test_render_capture_numbers(tetra, tmp_path, cli, option, value):
    args = _render(tetra, tmp_path)
    args = args[:args.index(option)] + args[args.index(option) + 2:] if option in args else args
    assert_refused(cli(*args, option, value), option, root=tmp_path, before=snapshot(tmp_path))


@pytest.mark.parametrize(("option", "value"), [
    ("--steps", "0"), ("--steps", "-5"), ("--resolution", "0"), ("--resolution", "-16"), ("--test-every", "-1"),
])
def test_reconstruct_numbers(tiny_capture, tiny_presets, tmp_path, cli, option, value):
    base = {"--steps": "2", "--resolution": "32", "--test-every": "4"}
    base[option] = value
    args = [a for kv in base.items() for a in kv]
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", "--preset", tiny_presets["gaussians"],
                 "--device", "cpu", *args)
    assert_refused(result, option, root=tmp_path, before=snapshot(tmp_path))


@pytest.mark.parametrize(("option", "value"), [
    ("--resolution", "0"), ("--target-faces", "0"), ("--texture-size", "0"), ("--unwrap-seconds", "-1"),
])
def test_extract_mesh_numbers(field_run_copy, tmp_path, cli, option, value):
    base = {"--resolution": "8", "--target-faces": "100", "--texture-size": "16", "--unwrap-seconds": "1"}
    base[option] = value
    before = snapshot(tmp_path)
    result = cli("extract-mesh", field_run_copy, *[a for kv in base.items() for a in kv])
    assert_refused(result, option, root=tmp_path, before=before)


@pytest.mark.parametrize(("option", "value"), [("--steps", "0"), ("--resolution", "-16")])
def test_run_numbers(tetra, tmp_path, cli, option, value):
    base = {"--steps": "1", "--resolution": "16"}
    base[option] = value
    result = cli("run", "--mesh", tetra, "--out", tmp_path / "job", "--rig", "ring", "--preset", "fast",
                 *[a for kv in base.items() for a in kv])
    assert_refused(result, option, root=tmp_path, before=snapshot(tmp_path))


@pytest.mark.parametrize("command", ["render-capture", "reconstruct", "extract-mesh"])
def test_gigantic_size_is_refused_up_front(command, tetra, tiny_capture, field_run, tmp_path, subproc):
    """--resolution 200000 (or --texture-size) is beyond the documented maximum: refused at once, not after an
    allocator error. A real process under an 8 GiB address-space limit and a timeout."""
    option = "--texture-size" if command == "extract-mesh" else "--resolution"
    args = {"render-capture": [tetra, "--out", tmp_path / "out", "--rig", "ring", "--num-views", "2",
                               "--supersample", "1"],
            "reconstruct": [tiny_capture, "--out", tmp_path / "out", "--steps", "1", "--device", "cpu"],
            "extract-mesh": [field_run, "--out", tmp_path / "extracted", "--resolution", "8"]}[command]
    before = snapshot(tmp_path)
    result = subproc(command, *args, option, str(GIGANTIC), timeout=180)
    assert_refused(result, option, str(GIGANTIC), root=tmp_path, before=before)


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_threads(value, tiny_capture, tmp_path, cli):
    result = cli("--threads", value, "inspect", tiny_capture, "--plot", tmp_path / "p.png")
    assert_refused(result, "--threads", root=tmp_path, before={})


@pytest.mark.parametrize(("args", "named"), [
    (["--preset", "no-such-preset"], "no-such-preset"),
    (["--device", "tpu"], "--device"),
    (["--method", "voxels"], "--method"),
    (["--test-every", "every"], "--test-every"),
    (["--steps", "2.5"], "--steps"),
    (["--sdf"], "--sdf"),
    (["--method", "hashgrid", "--init-ply", "{capture}/images/ring_00.png"], "--init-ply"),
])
def test_reconstruct_choices_and_combinations(args, named, tiny_capture, tmp_path, cli):
    args = [a.format(capture=tiny_capture) for a in args]
    result = cli("reconstruct", tiny_capture, "--out", tmp_path / "out", *args)
    assert_refused(result, named, root=tmp_path, before={})


def test_level_and_silhouette_level_exclude_each_other(field_run_copy, tmp_path, cli):
    before = snapshot(tmp_path)
    result = cli("extract-mesh", field_run_copy, "--level", "0", "--silhouette-level")
    assert_refused(result, "--level", "--silhouette-level", root=tmp_path, before=before)


def test_units_and_head_width_exclude_each_other(tetra, tmp_path, cli):
    result = cli(*_render(tetra, tmp_path, "--units", "cm", "--head-width", "0.2"))
    assert_refused(result, "--units", "--head-width", root=tmp_path, before=snapshot(tmp_path))
