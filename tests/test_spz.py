""".spz (Niantic, versions 2 and 3): round trips within the format's stated quantisation, a hand-built file
checked byte by byte after gunzip, and every kind of bad file refused with the file named."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from headforge.errors import InputError
from headforge.io.spz import SpzOptions, SpzVersion, decode_spz, encode_spz, read_spz, spz_bounds
from headforge.representations.gaussians import Splats
from headforge.representations.splat_io import load_splats_spz, save_splats_spz


def random_cloud(n: int, degree: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    return {"positions": (rng.normal(size=(n, 3)) * 0.1).astype(np.float32),
            "rotations_xyzw": (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
            "scales": np.exp(rng.uniform(-8, -2, size=(n, 3))).astype(np.float32),
            "opacities": rng.uniform(0, 1, n).astype(np.float32),
            "sh": np.concatenate([rng.uniform(-3, 3, size=(n, 1, 3)),
                                  rng.uniform(-0.9, 0.9, size=(n, (degree + 1) ** 2 - 1, 3))], 1).astype(np.float32)}


def quat_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [N, 4] x2 -> [N], q and -q are one rotation
    return np.minimum(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1))


@pytest.mark.parametrize("version", [SpzVersion.V2, SpzVersion.V3])
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_within_the_formats_quantisation(version, degree):
    c = random_cloud(500, degree)
    options = SpzOptions(version=version)
    back = decode_spz(encode_spz(**c, options=options), "mem.spz")
    b = spz_bounds(options)
    slack = 1 + 1e-4  # float32 rounding of the decoded values
    assert back.version == version and back.sh.shape == c["sh"].shape
    assert np.abs(back.positions - c["positions"]).max() <= b.position * slack
    assert np.abs(back.opacities - c["opacities"]).max() <= b.opacity * slack
    assert np.abs(np.log(back.scales) - np.log(c["scales"])).max() <= b.log_scale * slack
    assert np.abs(back.sh[:, 0] - c["sh"][:, 0]).max() <= b.dc * slack
    if degree:
        assert np.abs(back.sh[:, 1:4] - c["sh"][:, 1:4]).max() <= b.sh1 * slack
    if degree > 1:
        assert np.abs(back.sh[:, 4:] - c["sh"][:, 4:]).max() <= b.sh_rest * slack
    np.testing.assert_allclose(np.linalg.norm(back.rotations_xyzw, axis=1), 1, atol=1e-5)
    if version is SpzVersion.V3:
        assert quat_distance(back.rotations_xyzw, c["rotations_xyzw"]).max() <= b.rotation
    else:  # v2 keeps x y z to 1/255 and derives w, so only rotations with w well away from 0 are accurate
        sure = np.abs(c["rotations_xyzw"][:, 3]) > 0.3
        assert quat_distance(back.rotations_xyzw[sure], c["rotations_xyzw"][sure]).max() < 0.02


def test_bounds_are_tight_not_loose():
    """The stated bounds are reached (so a looser coder, e.g. truncating instead of rounding, would fail)."""
    c = random_cloud(4000, 3, seed=1)
    back = decode_spz(encode_spz(**c), "mem.spz")
    b = spz_bounds()
    assert np.abs(back.positions - c["positions"]).max() > 0.9 * b.position
    assert np.abs(back.sh[:, 4:] - c["sh"][:, 4:]).max() > 0.9 * b.sh_rest
    assert quat_distance(back.rotations_xyzw, c["rotations_xyzw"]).max() > 0.1 * b.rotation


def test_values_outside_the_ranges_are_clamped_to_the_ends():
    c = random_cloud(3, 1)
    c["sh"][:, 0] = [[9.0, -9.0, 0.0]] * 3
    c["sh"][:, 1] = [[2.0, -2.0, 0.0]] * 3
    c["scales"][:] = [[1e-9, 1e4, 1.0]]
    back = decode_spz(encode_spz(**c), "mem.spz")
    b = spz_bounds()
    np.testing.assert_allclose(back.sh[0, 0, :2], b.dc_range[::-1], atol=1e-6)
    np.testing.assert_allclose(back.sh[0, 1, :2], [b.sh_range[1], b.sh_range[0]], atol=1e-6)
    np.testing.assert_allclose(np.log(back.scales[0]), [b.log_scale_range[0], b.log_scale_range[1], 0], atol=1e-6)


def test_one_splat_byte_by_byte():
    """Built by hand from the format's rules (see headforge/io/spz.py), not from the encoder."""
    c = {"positions": np.array([[0.5, -0.25, 3 / 4096]], np.float32),
         "rotations_xyzw": np.array([[0.0, 0.0, -0.6, -0.8]], np.float32),
         "scales": np.exp(np.array([[-5.0, 0.0, -10.0]], np.float32)),
         "opacities": np.array([0.5], np.float32),
         "sh": np.array([[[0.0, 1.0, -1.0], [0.5, 0.3, -1.0], [0, 0, 0], [0, 0, 0]]], np.float32)}
    raw = gzip.decompress(encode_spz(**c, options=SpzOptions(version=SpzVersion.V3, fractional_bits=12)))
    expected = bytes.fromhex(
        "4e475350" "03000000" "01000000" "01" "0c" "00" "00"  # NGSP, version 3, 1 point, degree 1, 12 bits, flags
        "000800" "00fcff" "030000"  # 0.5 * 4096 = 2048; -1024 = 0xfffc00; 3 (24-bit little endian)
        "80"  # opacity 0.5 * 255 = 127.5 -> 128
        "80a659"  # DC * 0.15 * 255 + 127.5: 0 -> 128, 1 -> 165.75 -> 166, -1 -> 89.25 -> 89
        "50a000"  # (log s + 10) * 16: -5 -> 80, 0 -> 160, -10 -> 0
        # w largest (index 3) and negative, so every sign bit is (q < 0) xor 1: x, y (zero) get sign bit 1 (-0);
        # z = -0.6 gets 0 and 511 * 0.6 / sqrt(1/2) = 433.6 -> 434; u32 = 3 << 30 | 0x200 << 20 | 0x200 << 10 | 434
        "b20108e0"
        "c0a800"  # SH1 coefficient 0 (R G B): 0.5 -> 192, 0.3 -> 166 -> bucket 8 -> 168, -1 -> 0
        "808080" "808080")  # coefficients 1, 2: 0 -> 128
    assert raw == expected
    back = decode_spz(encode_spz(**c), "mem.spz")
    np.testing.assert_allclose(back.rotations_xyzw[0], [0, 0, 434 / 511 * np.sqrt(0.5),
                                                       np.sqrt(1 - (434 / 511) ** 2 / 2)], atol=1e-6)
    v2 = gzip.decompress(encode_spz(**c, options=SpzOptions(version=SpzVersion.V2)))
    assert v2[4] == 2 and v2[16 + 9 + 1 + 3 + 3:][:3] == bytes([128, 128, 204])  # -q: z 0.6 * 127.5 + 127.5


def test_torch_wrappers_and_file_round_trip(tmp_path):
    c = random_cloud(64, 2)
    s = Splats(torch.from_numpy(c["positions"]), torch.from_numpy(c["rotations_xyzw"][:, [3, 0, 1, 2]].copy()),
               torch.from_numpy(c["scales"]),
               torch.from_numpy(c["opacities"]), torch.from_numpy(c["sh"]))
    path = save_splats_spz(s, tmp_path / "s.spz")
    back = load_splats_spz(path)
    raw = read_spz(path)
    torch.testing.assert_close(back.means, torch.from_numpy(raw.positions), atol=0, rtol=0)
    torch.testing.assert_close(back.quats[:, [1, 2, 3, 0]], torch.from_numpy(raw.rotations_xyzw), atol=0, rtol=0)
    assert (back.means - s.means).abs().max() <= spz_bounds().position * (1 + 1e-4)


def test_writer_refuses_what_it_cannot_store():
    c = random_cloud(4, 0)
    bad = dict(c, positions=c["positions"].copy())
    bad["positions"][1, 2] = np.nan
    with pytest.raises(ValueError, match="positions must be finite"):
        encode_spz(**bad)
    far = dict(c, positions=c["positions"] + 5000)
    with pytest.raises(ValueError, match="fewer fractional bits"):
        encode_spz(**far)
    assert len(decode_spz(encode_spz(**far, options=SpzOptions(fractional_bits=8)), "m").positions) == 4


def _gz(header: tuple, body: bytes = b"") -> bytes:
    return gzip.compress(struct.pack("<IIIBBBB", *header) + body, mtime=0)


def _cases() -> dict[str, tuple[bytes, str]]:
    good = encode_spz(**random_cloud(10, 1))
    raw = gzip.decompress(good)
    return {
        "not gzip": (b"PK\x03\x04" + bytes(40), "not gzip-compressed"),
        "wrong magic": (_gz((0x12345678, 3, 1, 0, 12, 0, 0), bytes(19)), "magic 0x12345678"),
        "version 1": (_gz((0x5053474E, 1, 1, 0, 12, 0, 0), bytes(19)), "version 1"),
        "version 7": (_gz((0x5053474E, 7, 1, 0, 12, 0, 0), bytes(20)), "version 7 is not supported"),
        "version 4 (zstd)": (b"NGSP" + struct.pack("<I", 4) + bytes(24), "version 4 .*ZSTD"),
        "short header": (gzip.compress(raw[:10]), "truncated: 10 of the header's 16"),
        "truncated data": (gzip.compress(raw[:-7]), "truncated: the header says 10 splats"),
        "truncated gzip": (good[: len(good) - 12], "truncated"),
        "trailing data": (gzip.compress(raw + b"\0\0"), "more data than"),
        "degree 4": (_gz((0x5053474E, 3, 1, 4, 12, 0, 0), bytes(300)), "SH degree 4"),
        "extensions": (_gz((0x5053474E, 3, 1, 0, 12, 2, 0), bytes(20)), "vendor extensions"),
        "no splats": (_gz((0x5053474E, 3, 0, 0, 12, 0, 0)), "no splats"),
        "corrupt gzip": (good[:12] + bytes(len(good) - 12), "corrupt"),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_bad_files_are_refused_naming_the_file(tmp_path, case):
    data, message = _cases()[case]
    path = tmp_path / "bad.spz"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message) as info:
        load_splats_spz(path)
    assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "e.spz").write_bytes(b"")
    for path in (tmp_path / "e.spz", tmp_path / "missing.spz"):
        with pytest.raises(InputError) as info:
            load_splats_spz(path)
        assert str(path) in str(info.value)
