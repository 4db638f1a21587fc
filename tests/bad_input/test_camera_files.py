"""Camera files: nerfstudio transforms.json, opencv_cameras.json, COLMAP text, NeRSemble camera_params.json. Not
JSON, not UTF-8, wrong types, NaN cameras, duplicate frames, a COLMAP images.txt without its 2D-point lines, views
listed but not found, empty captures, symlink loops. Refused naming the camera file (or the missing image)."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from .conftest import assert_refused, snapshot


def _edit(path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))  # NaN is written as the JSON literal NaN


def _set(keys, value):
    def change(meta):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return change


def _latin1(path) -> None:
    """Valid JSON text holding one byte that is not UTF-8 (a Latin-1 e-acute in a new string value)."""
    text = path.read_text().rstrip()
    assert text.endswith("}")
    path.write_bytes(text[:-1].encode() + b', "note": "r\xe9glage"}')


TRANSFORMS = {
    "not-json": lambda p: p.write_text('{"frames": [ {"file_path": "images/ring_00.png",, } ]'),
    "not-utf8": _latin1,
    "top-level-list": lambda p: p.write_text("[1, 2, 3]"),
    "frames-a-string": lambda p: _edit(p, _set(["frames"], "all of them")),
    "frames-empty": lambda p: _edit(p, _set(["frames"], [])),
    "matrix-a-string": lambda p: _edit(p, _set(["frames", 1, "transform_matrix"], "identity")),
    "matrix-2x4": lambda p: _edit(p, lambda m: m["frames"][1].__setitem__("transform_matrix",
                                                                           m["frames"][1]["transform_matrix"][:2])),
    "focal-a-string": lambda p: _edit(p, _set(["fl_x"], "five")),
    "focal-zero": lambda p: _edit(p, _set(["fl_x"], 0)),
    "nan-camera": lambda p: _edit(p, lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(3, math.nan)),
    "duplicate-frames": lambda p: _edit(p, lambda m: m.__setitem__("frames", m["frames"] + m["frames"])),
    "is-a-directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("kind", list(TRANSFORMS))
def test_transforms_json(kind, capture_copy, tmp_path, cli):
    camera_file = capture_copy / "transforms.json"
    TRANSFORMS[kind](camera_file)
    before = snapshot(tmp_path)
    result = cli("inspect", camera_file, "--plot", tmp_path / "plot.png")
    assert_refused(result, camera_file, root=tmp_path, before=before)


OPENCV = {
    "not-json": lambda p: p.write_text("frames:\n  - w: 32\n"),
    "not-utf8": _latin1,
    "fx-a-string": lambda p: _edit(p, _set(["frames", 0, "fx"], "wide")),
    "width-zero": lambda p: _edit(p, _set(["frames", 2, "w"], 0)),
    "nan-w2c": lambda p: _edit(p, lambda m: m["frames"][4]["w2c"][1].__setitem__(1, math.nan)),
    "w2c-not-a-matrix": lambda p: _edit(p, _set(["frames", 4, "w2c"], [1, 2, 3])),
}


@pytest.mark.parametrize("kind", list(OPENCV))
def test_opencv_cameras_json(kind, capture_copy, tmp_path, cli):
    camera_file = capture_copy / "opencv_cameras.json"
    OPENCV[kind](camera_file)
    before = snapshot(tmp_path)
    result = cli("inspect", camera_file, "--plot", tmp_path / "plot.png")
    assert_refused(result, camera_file, root=tmp_path, before=before)


def _drop_point_lines(path) -> None:
    """images.txt with only the image lines: the (possibly empty) 2D-point line after each one is missing."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(ln for ln in lines if ln.startswith("#") or ln.strip()) + "\n")


def _replace_in(path, old, new, count=1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


COLMAP = {  # (file broken, how)
    "cameras-not-utf8": ("cameras.txt", lambda p: p.write_bytes(p.read_bytes() + b"# cam\xe9ra\n")),
    "cameras-focal-a-word": ("cameras.txt", lambda p: _replace_in(p, "PINHOLE 32 32 ", "PINHOLE 32 32 wide ")),
    "images-without-point-lines": ("images.txt", _drop_point_lines),
    "images-nan-quaternion": ("images.txt", lambda p: _replace_in(p, "1 0.0 1.0 0.0 0.0", "1 nan 1.0 0.0 0.0")),
    "images-unknown-camera-id": ("images.txt", lambda p: _replace_in(p, " 1 ring_03.png", " 9 ring_03.png")),
    "images-not-utf8": ("images.txt", lambda p: p.write_bytes(b"# \xff\xfe\n" + p.read_bytes())),
}


@pytest.mark.parametrize("kind", list(COLMAP))
def test_colmap_text(kind, other_formats, tmp_path, cli):
    capture = shutil.copytree(other_formats["colmap"], tmp_path / "colmap")
    name, breaker = COLMAP[kind]
    broken = capture / "sparse/0" / name
    breaker(broken)
    before = snapshot(tmp_path)
    result = cli("inspect", capture, "--plot", tmp_path / "plot.png")
    assert_refused(result, broken, root=tmp_path, before=before)


def test_colmap_without_point_lines_in_a_subprocess(other_formats, tmp_path, subproc):
    """The issue's example: 32 listed, 16 read, training runs. Here 8 listed: refused, not 4 read."""
    capture = shutil.copytree(other_formats["colmap"], tmp_path / "colmap")
    _drop_point_lines(capture / "sparse/0/images.txt")
    before = snapshot(tmp_path)
    result = subproc("inspect", capture, "--json", "--plot", tmp_path / "plot.png")
    assert_refused(result, capture / "sparse/0/images.txt", root=tmp_path, before=before)


NERSEMBLE = {
    "not-json": lambda p: p.write_text("{'intrinsics': 1}"),
    "not-utf8": _latin1,
    "world-2-cam-a-string": lambda p: _edit(p, _set(["world_2_cam", "01"], "identity")),
    "nan-intrinsics": lambda p: _edit(p, lambda m: m["intrinsics"][0].__setitem__(0, math.nan)),
}


@pytest.mark.parametrize("kind", list(NERSEMBLE))
def test_nersemble(kind, other_formats, tmp_path, cli):
    capture = shutil.copytree(other_formats["nersemble"], tmp_path / "nersemble")
    NERSEMBLE[kind](capture / "camera_params.json")
    before = snapshot(tmp_path)
    result = cli("inspect", capture, "--plot", tmp_path / "plot.png")
    assert_refused(result, capture / "camera_params.json", root=tmp_path, before=before)


@pytest.mark.parametrize("command", ["inspect", "reconstruct"])
def test_listed_view_not_found(command, capture_copy, tmp_path, tiny_presets, cli):
    (capture_copy / "images/ring_05.png").unlink()
    before = snapshot(tmp_path)
    extra = (["--plot", tmp_path / "plot.png"] if command == "inspect" else
             ["--out", tmp_path / "out", "--preset", tiny_presets["gaussians"], "--device", "cpu"])
    result = cli(command, capture_copy, *extra)
    assert_refused(result, "images/ring_05.png", root=tmp_path, before=before)


@pytest.mark.parametrize("command", ["inspect", "reconstruct"])
def test_empty_capture(command, tmp_path, tiny_presets, cli):
    empty = tmp_path / "empty_capture"
    empty.mkdir()
    before = snapshot(tmp_path)
    extra = (["--plot", tmp_path / "plot.png"] if command == "inspect" else
             ["--out", tmp_path / "out", "--preset", tiny_presets["gaussians"], "--device", "cpu"])
    assert_refused(cli(command, empty, *extra), empty, root=tmp_path, before=before)


def test_capture_is_a_symlink_loop(tmp_path, cli):
    loop = tmp_path / "loop"
    os.symlink("loop", loop)
    before = snapshot(tmp_path)
    assert_refused(cli("inspect", loop, "--plot", tmp_path / "plot.png"), loop, root=tmp_path, before=before)


def test_camera_file_is_a_symlink_loop(capture_copy, tmp_path, cli):
    camera_file = capture_copy / "transforms.json"
    camera_file.unlink()
    (capture_copy / "opencv_cameras.json").unlink()
    os.symlink("transforms.json", camera_file)
    before = snapshot(tmp_path)
    result = cli("inspect", capture_copy, "--plot", tmp_path / "plot.png")
    assert_refused(result, camera_file, root=tmp_path, before=before)
