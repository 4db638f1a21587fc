"""Images and masks of a capture: not an image, truncated, empty, NaN / Inf float pixels, a size that contradicts
the intrinsics, missing or broken masks, a symlink loop. Refused naming the image, with nothing written."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from .conftest import assert_refused, snapshot

VIEW = "images/ring_02.png"


def _reconstruct(cli, capture, tmp_path, tiny_presets):
    return cli("reconstruct", capture, "--out", tmp_path / "out", "--preset", tiny_presets["gaussians"],
               "--test-every", "4", "--device", "cpu")


def _float_image(capture, value: float) -> str:
    """Point view 2 of transforms.json at a float32 TIFF holding ``value`` in a few pixels; returns its path."""
    img = cv2.imread(str(capture / VIEW), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    img[10:14, 10:14, :3] = value
    name = "images/ring_02.tiff"
    assert cv2.imwrite(str(capture / name), img)
    meta = json.loads((capture / "transforms.json").read_text())
    meta["frames"][2]["file_path"] = name
    (capture / "transforms.json").write_text(json.dumps(meta))
    return name


BREAKERS = {
    "not-an-image": lambda p: p.write_text("this is not a PNG\n"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]),
    "empty": lambda p: p.write_bytes(b""),
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()),
    "wrong-size": lambda p: cv2.imwrite(str(p), np.zeros((16, 16, 4), np.uint8)),
    "is-a-directory": lambda p: (p.unlink(), p.mkdir()),
    "symlink-loop": lambda p: (p.unlink(), os.symlink(p.name, p)),
}


@pytest.mark.parametrize("kind", list(BREAKERS))
def test_broken_image(kind, capture_copy, tmp_path, tiny_presets, cli):
    BREAKERS[kind](capture_copy / VIEW)
    before = snapshot(tmp_path)
    assert_refused(_reconstruct(cli, capture_copy, tmp_path, tiny_presets), VIEW, root=tmp_path, before=before)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_float_image(value, capture_copy, tmp_path, tiny_presets, cli):
    name = _float_image(capture_copy, value)
    before = snapshot(tmp_path)
    assert_refused(_reconstruct(cli, capture_copy, tmp_path, tiny_presets), name, root=tmp_path, before=before)


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "wrong-size"])
def test_broken_mask(kind, capture_copy, tmp_path, tiny_presets, cli):
    mask = capture_copy / "masks/ring_02.png"
    {"missing": lambda: mask.unlink(), "not-an-image": lambda: mask.write_text("no mask here"),
     "wrong-size": lambda: cv2.imwrite(str(mask), np.zeros((8, 8), np.uint8))}[kind]()
    before = snapshot(tmp_path)
    assert_refused(_reconstruct(cli, capture_copy, tmp_path, tiny_presets), "ring_02.png", root=tmp_path,
                   before=before)


def test_not_an_image_without_w_h_in_transforms(capture_copy, tmp_path, cli):
    """transforms.json without w/h: the size comes from the image header, which must be read with care."""
    meta = json.loads((capture_copy / "transforms.json").read_text())
    del meta["w"], meta["h"]
    (capture_copy / "transforms.json").write_text(json.dumps(meta))
    (capture_copy / "images/ring_00.png").write_text("not an image")
    before = snapshot(tmp_path)
    result = cli("inspect", capture_copy, "--plot", tmp_path / "plot.png")
    assert_refused(result, "images/ring_00.png", root=tmp_path, before=before)


def test_nan_image_in_a_subprocess(capture_copy, tmp_path, tiny_presets, subproc):
    name = _float_image(capture_copy, float("nan"))
    before = snapshot(tmp_path)
    result = subproc("reconstruct", capture_copy, "--out", tmp_path / "out", "--preset", tiny_presets["gaussians"],
                     "--test-every", "4", "--device", "cpu")
    assert_refused(result, name, root=tmp_path, before=before)
