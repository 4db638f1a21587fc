"""headforge.io.files: every way a file can be bad is an InputError naming the file; good files pass."""

from __future__ import annotations

import enum
import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from headforge.errors import InputError
from headforge.io.files import (
    InputKind,
    image_header,
    is_missing,
    load_torch,
    read_bytes,
    read_json,
    read_pil_image,
    read_text,
    read_toml,
    require_finite,
    require_nonempty,
    resolve_input,
)


def refused(path, pattern):
    """pytest.raises(InputError, match=pattern) that also checks the error names ``path`` and a fix."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(InputError, match=pattern)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            if handled:
                assert self.info.value.path is not None and str(self.info.value.path) == str(path)
                assert "Fix:" in str(self.info.value), str(self.info.value)
            return handled
    return _Check()


# ------------------------------------------------------------------------------------------ resolve_input
def test_resolve_input_good_paths_pass(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    link = tmp_path / "link.txt"
    link.symlink_to(f)
    assert resolve_input(f) == f
    assert resolve_input(link) == link  # the path as given, not the resolved one
    assert resolve_input(tmp_path, kind=InputKind.DIRECTORY) == tmp_path
    assert resolve_input(tmp_path, kind=InputKind.ANY) == tmp_path
    assert resolve_input(str(f), kind=InputKind.ANY) == f


def test_resolve_input_refusals(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    with refused(tmp_path / "nope", "thing not found"):
        resolve_input(tmp_path / "nope", what="thing")
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "gone")
    with refused(broken, "not found .a broken symlink to"):
        resolve_input(broken)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with refused(loop, "symlink loop"):
        resolve_input(loop)
    a, b = tmp_path / "a_link", tmp_path / "b_link"
    a.symlink_to(b)
    b.symlink_to(a)
    with refused(a, "symlink loop"):
        resolve_input(a, kind=InputKind.ANY)
    with refused(tmp_path, "is a folder, not a file"):
        resolve_input(tmp_path)
    with refused(f, "is not a folder"):
        resolve_input(f, kind=InputKind.DIRECTORY)
    with refused(f / "below", "a folder in its path is a file"):
        resolve_input(f / "below")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with refused(fifo, "not a regular file"):
        resolve_input(fifo)


def test_is_missing(tmp_path):
    (tmp_path / "f").write_text("x")
    assert not is_missing(tmp_path / "f") and not is_missing(tmp_path)
    assert is_missing(tmp_path / "nope")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    assert is_missing(tmp_path / "broken")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert not is_missing(loop) and not is_missing(loop / "below")  # present: resolve_input names the loop
    with refused(loop / "below", "symlink loop"):
        resolve_input(loop / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without read permission")
def test_resolve_input_unreadable(tmp_path):
    f = tmp_path / "secret.txt"
    f.write_text("x")
    f.chmod(0)
    try:
        with refused(f, "permission denied"):
            read_bytes(f)
    finally:
        f.chmod(0o644)
    assert read_bytes(f) == b"x"


# ------------------------------------------------------------------------------------------ text, JSON, TOML
def test_read_bytes_and_text(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("héllo\nwörld\n".encode())
    assert read_text(f) == "héllo\nwörld\n"
    f.write_bytes(b"\xef\xbb\xbfbom")
    assert read_text(f) == "bom"  # a UTF-8 byte-order mark is dropped
    f.write_bytes(b"line one\nab\xff\xfe")
    with refused(f, r"cameras.txt is not UTF-8 text \(byte 11, line 2\)"):
        read_text(f, "cameras.txt")
    f.write_bytes(b"")
    with refused(f, "is empty"):
        read_bytes(f)
    assert read_bytes(f, allow_empty=True) == b""


def test_read_json(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('{"frames": [1, 2]}')
    assert read_json(f) == {"frames": [1, 2]}
    with refused(f, "holds a JSON object at the top level, not a JSON list"):
        read_json(f, expect=list)
    f.write_text('{\n  "a": 1,\n}\n')
    with refused(f, "invalid JSON at line 3, column 1"):
        read_json(f)
    f.write_text("[1, 2]")
    assert read_json(f, expect=list) == [1, 2]
    with refused(f, "holds a JSON list at the top level, not a JSON object"):
        read_json(f)
    f.write_bytes(b'{"a": "\xff"}')
    with refused(f, "not UTF-8"):
        read_json(f)


def test_read_toml(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("steps = 5\n[train]\nlr = 0.1\n")
    assert read_toml(f) == {"steps": 5, "train": {"lr": 0.1}}
    f.write_text("")
    assert read_toml(f) == {}  # an empty preset changes nothing
    f.write_text("steps = = 5\n")
    with refused(f, "invalid TOML"):
        read_toml(f)
    f.write_bytes(b"name = '\xe9'\n")
    with refused(f, r"not UTF-8 text \(byte 8, line 1\)"):
        read_toml(f)


# ------------------------------------------------------------------------------------------ images
def test_images(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(good)
    assert image_header(good) == (10, 6, "RGB")
    assert read_pil_image(good).size == (10, 6)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image at all")
    with refused(bad, "is not an image"):
        image_header(bad)
    with refused(bad, "is not an image"):
        read_pil_image(bad)
    cut = tmp_path / "cut.png"
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    cut.write_bytes(big.read_bytes()[:-400])
    assert image_header(cut) == (64, 64, "RGB")  # the header is intact ...
    with refused(cut, "corrupt or truncated"):  # ... the pixels are not
        read_pil_image(cut)


# ------------------------------------------------------------------------------------------ torch files
class _Colour(enum.StrEnum):
    RED = "red"


def test_load_torch(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"format": 1, "w": torch.ones(3), "config": {"colour": _Colour.RED}}, good)
    payload = load_torch(good, "checkpoint", "start afresh")
    assert payload["format"] == 1 and torch.equal(payload["w"], torch.ones(3))
    # why load_torch keeps weights_only=False: the weights-only unpickler refuses StrEnum config values
    with pytest.raises(pickle.UnpicklingError):
        torch.load(good, weights_only=True)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with refused(junk, "checkpoint is not a readable torch file"):
        load_torch(junk, "checkpoint", "start afresh")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with refused(cut, "field.pt is not a readable torch file"):
        load_torch(cut, "field.pt", "re-run")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with refused(empty, "is empty"):
        load_torch(empty, "checkpoint", "start afresh")
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with refused(listed, "holds a list, not a dict"):
        load_torch(listed, "checkpoint", "start afresh")
    with refused(tmp_path / "none.pt", "checkpoint not found"):
        load_torch(tmp_path / "none.pt", "checkpoint", "start afresh")


# ------------------------------------------------------------------------------------------ values
def test_require_finite_counts_items(tmp_path):
    img = np.zeros((4, 5, 3), np.float32)
    require_finite(img, tmp_path, "image", items="pixels", item_axes=1)  # negative control
    require_finite(np.array([1, 2], np.int64), tmp_path, "ints")  # integers are always finite
    img[0, 0, 0] = np.nan
    img[0, 0, 2] = np.inf  # the same pixel
    img[3, 4, 1] = -np.inf
    with refused(tmp_path, "image has 2 of 20 pixels with NaN or Inf"):
        require_finite(img, tmp_path, "image", items="pixels", item_axes=1)
    with refused(tmp_path, "image has 3 of 60 values with NaN or Inf"):
        require_finite(img, tmp_path, "image")
    t = torch.zeros(7, 3)
    t[2, 1] = float("nan")
    with refused(tmp_path, "splats has 1 of 7 splats"):
        require_finite(t, tmp_path, "splats", items="splats", item_axes=1)


def test_require_nonempty(tmp_path):
    require_nonempty(np.zeros(1), tmp_path, "x")
    require_nonempty([0], tmp_path, "x")
    require_nonempty(torch.zeros(2, 3), tmp_path, "x")
    for empty in (np.zeros((0, 3)), [], torch.zeros(0, 14)):
        with refused(tmp_path, "the splat list is empty"):
            require_nonempty(empty, tmp_path, "the splat list")


# ------------------------------------------------------------------------------------------ callers
def test_resume_from_a_damaged_checkpoint_is_refused(tmp_path):
    from headforge.stages.gaussian_train import GaussianTrainConfig
    from headforge.training.checkpoint import CheckpointKind, checkpoint_name, load_for_resume, save_checkpoint

    cfg = GaussianTrainConfig(steps=10)
    path = save_checkpoint(tmp_path, CheckpointKind.GAUSSIANS, cfg, 4, torch.Generator(), {"w": torch.zeros(2)})
    found = load_for_resume(tmp_path, CheckpointKind.GAUSSIANS, cfg)  # negative control
    assert found is not None and found[1]["step"] == 4
    good = path.read_bytes()
    later = tmp_path / checkpoint_name(5)
    for damage, pattern in ((np.random.default_rng(2).bytes(2000), "UnpicklingError"),
                            (good[:len(good) // 2], "not a readable torch file"),
                            (b"", "checkpoint is empty")):
        later.write_bytes(damage)
        with refused(later, pattern):
            load_for_resume(tmp_path, CheckpointKind.GAUSSIANS, cfg)
    payload = torch.load(path, weights_only=False)
    del payload["state"]
    torch.save(payload, later)
    with refused(later, "the checkpoint lacks state"):
        load_for_resume(tmp_path, CheckpointKind.GAUSSIANS, cfg)


def test_load_field_refuses_damaged_or_foreign_files(tmp_path):
    from headforge.pipeline.methods import load_field, save_field
    from headforge.renderers.occupancy import OccupancyGrid
    from headforge.stages.field_train import FieldTrainConfig, make_field

    cfg = FieldTrainConfig()
    model = make_field(cfg, -torch.ones(3), torch.ones(3))
    path = tmp_path / "field.pt"
    save_field(path, model, OccupancyGrid(cfg.occupancy, *model.bounds), cfg)
    back, _, back_cfg = load_field(path)  # negative control
    assert back_cfg == cfg and all(torch.equal(a, b) for a, b in zip(back.state_dict().values(),
                                                                       model.state_dict().values(), strict=True))
    good = path.read_bytes()
    path.write_bytes(np.random.default_rng(3).bytes(5000))
    with refused(path, "field.pt is not a readable torch file"):
        load_field(path)
    path.write_bytes(good[:1000])
    with refused(path, "field.pt is not a readable torch file"):
        load_field(path)
    payload = torch.load(io.BytesIO(good), weights_only=False)
    for change, pattern in ((lambda p: p.pop("format"), "field.pt has no format version"),
                            (lambda p: p.update(format=99), "field.pt has format 99"),
                            (lambda p: p.update(method="gaussians"), "method 'gaussians' is not its config's"),
                            (lambda p: p.pop("grid"), "field.pt lacks grid"),
                            (lambda p: p.update(bounds_min=torch.tensor([0.0, float("nan"), 0.0])),
                             "bounds_min has 1 of 3 values with NaN"),
                            (lambda p: p["field"].popitem(), "field.pt's field does not fit its config")):
        broken = {k: (dict(v) if isinstance(v, dict) else v) for k, v in payload.items()}
        change(broken)
        torch.save(broken, path)
        with refused(path, pattern):
            load_field(path)


def test_load_config_reads_through_read_toml(tmp_path):
    from headforge.config_io import load_config
    from headforge.pipeline.methods import GaussianPreset

    preset = tmp_path / "p.toml"
    preset.write_text("resolution = 64\n")
    assert load_config(GaussianPreset, preset).resolution == 64  # negative control
    preset.write_bytes(b"# r\xe9solution\nresolution = 64\n")
    with refused(preset, r"config file is not UTF-8 text \(byte 3, line 1\)"):
        load_config(GaussianPreset, preset)
    preset.unlink()
    preset.symlink_to(preset)
    with refused(preset, "symlink loop"):
        load_config(GaussianPreset, preset)
