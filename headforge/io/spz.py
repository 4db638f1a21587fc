"""Niantic's ``.spz`` Gaussian-splat format, versions 2 and 3 (the gzip ones), written and read with numpy.

Layout facts from the format's README and reference loader (nianticlabs/spz, MIT); no code is taken
from it. A file is gzip of:

- a 16-byte little-endian header: magic ``0x5053474e`` (the bytes "NGSP"), version (u32), number of
  points (u32), SH degree (u8, 0..3 here), fractional bits (u8), flags (u8: 0x1 antialiased, 0x2 vendor
  extensions follow the data), reserved (u8, 0);
- per attribute, all points one after another: positions (N x 3 x 24-bit signed fixed point, little
  endian, value = int / 2^fractionalBits), alphas (N x u8, opacity after the sigmoid x 255), colours
  (N x 3 x u8, DC coefficient x 0.15 x 255 + 127.5: a narrower scale than SH_C0 so that colours a little
  outside [0, 1] survive), scales (N x 3 x u8, (log scale + 10) x 16), rotations (version 2: N x 3 x u8,
  x y z of the unit quaternion with w >= 0, q x 127.5 + 127.5; version 3: N x u32 "smallest three": the
  index of the largest component in the top 2 bits, then for each other component in x y z w order a
  sign bit and a 9-bit magnitude |q| / sqrt(1/2) x 511, the last one in the low bits; the largest
  component is made positive and recomputed on read), SH (N x (K - 1) x 3 x u8, coefficient-major with
  the colour channel fastest, value x 128 + 128, rounded to buckets of 2^(8 - bits): 5 bits for degree 1
  and 4 for degrees 2 and 3 by default).

Axes: spz stores RUB (x right, y up, z back toward the viewer, OpenGL / three.js), which is headforge's
head frame (+x the subject's left = the viewer's right, +y up, +z out of the face) and glTF's axes, so
positions, rotations and SH are stored unchanged. Version 4 (a plaintext "NGSP" header and ZSTD
streams) and version 1 (float16 positions, never released) are refused with a fix, as are files
with vendor extensions (one of them, SPZ_ADOBE_coordinate_system, changes the axes).

:func:`spz_bounds` states the quantisation errors the format allows, which the tests hold the round
trip to.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import annotated_types as at
import numpy as np

from headforge.errors import InputError
from headforge.io.files import read_bytes
from headforge.validation import Checked

SPZ_MAGIC = 0x5053474E  # "NGSP" in file order
HEADER = struct.Struct("<IIIBBBB")  # magic, version, numPoints, shDegree, fractionalBits, flags, reserved
COLOR_SCALE = 0.15
FLAG_ANTIALIASED = 0x1
FLAG_EXTENSIONS = 0x2
SQRT1_2 = math.sqrt(0.5)
_REFORMAT = "convert it with `splat-transform IN.spz --spz-version 3 OUT.spz` (npm @playcanvas/splat-transform)"


class SpzVersion(IntEnum):
    """The versions written and read: 2 (rotations as 3 bytes) and 3 (smallest-three, 4 bytes)."""

    V2 = 2
    V3 = 3


@dataclass(frozen=True)
class SpzOptions(Checked):
    version: SpzVersion = SpzVersion.V3
    fractional_bits: Annotated[int, at.Ge(0), at.Le(23)] = 12  # the reference writer's: 1/4096 m steps, +-2048 m
    sh1_bits: Annotated[int, at.Ge(1), at.Le(8)] = 5  # bits kept of the degree-1 SH bytes
    sh_rest_bits: Annotated[int, at.Ge(1), at.Le(8)] = 4  # of degrees 2 and 3
    antialiased: bool = False  # the flag for splats trained with mip-splatting's filter

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "version", SpzVersion(self.version))


@dataclass(frozen=True)
class SpzCloud:
    """Decoded splats in the file's axes (RUB = headforge's head frame)."""

    positions: np.ndarray  # [N, 3] float32
    rotations_xyzw: np.ndarray  # [N, 4] float32, unit
    scales: np.ndarray  # [N, 3] float32, linear
    opacities: np.ndarray  # [N] float32 in [0, 1] (after the sigmoid)
    sh: np.ndarray  # [N, K, 3] float32, K = 1, 4, 9, 16; sh[:, 0] is the DC coefficient
    version: SpzVersion = SpzVersion.V3
    fractional_bits: int = 12
    antialiased: bool = False


@dataclass(frozen=True)
class SpzBounds:
    """Largest error the format allows for a value inside its range (half a quantisation step)."""

    position: float  # per axis, metres: 2^-fractionalBits / 2
    opacity: float  # 0.5 / 255
    dc: float  # of the DC coefficient: 0.5 / (255 x 0.15); in RGB, x SH_C0
    log_scale: float  # 1 / 32 (scales are kept within a factor exp(1/32))
    rotation: float  # |q - q'| for unit quaternions (v3: 2 sqrt(3) x sqrt(1/2) x 0.5 / 511; v2: none, w derived)
    sh1: float  # degree-1 SH coefficients: (0.5 + bucket / 2) / 128
    sh_rest: float  # degrees 2, 3
    dc_range: tuple[float, float]  # DC values outside are clamped
    sh_range: tuple[float, float]  # SH values outside are clamped
    log_scale_range: tuple[float, float]


def spz_bounds(options: SpzOptions = SpzOptions()) -> SpzBounds:
    def sh_err(bits: int) -> float:
        bucket = 1 << (8 - bits)
        return (0.5 + bucket // 2) / 128

    rotation = 2 * math.sqrt(3) * SQRT1_2 * 0.5 / 511 if options.version is SpzVersion.V3 else math.inf
    dc_lim = 127.5 / (255 * COLOR_SCALE)
    return SpzBounds(position=0.5 / (1 << options.fractional_bits), opacity=0.5 / 255,
                     dc=0.5 / (255 * COLOR_SCALE), log_scale=1 / 32, rotation=rotation,
                     sh1=sh_err(options.sh1_bits), sh_rest=sh_err(options.sh_rest_bits),
                     dc_range=(-dc_lim, dc_lim), sh_range=(-1.0, 127 / 128), log_scale_range=(-10.0, 5.9375))


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's ``round``), as float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    """SH value -> byte: x 128 + 128 rounded, then to the nearest multiple of the bucket 2^(8 - bits)."""
    bucket = 1 << (8 - bits)
    q = np.clip(_round(x * 128.0) + 128.0, 0, 255).astype(np.int64)
    return np.clip((q + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)


def _pack_smallest_three(q: np.ndarray) -> np.ndarray:  # [N, 4] unit xyzw -> [N, 4] bytes (u32 LE)
    largest = np.argmax(np.abs(q), axis=1)  # first of equal magnitudes, as the reference
    negate = q[np.arange(len(q)), largest] < 0
    comp = largest.astype(np.uint64)
    for i in range(4):
        keep = largest != i
        neg = ((q[:, i] < 0) ^ negate).astype(np.uint64)
        mag = np.minimum(np.floor(511 * np.abs(q[:, i].astype(np.float64)) / SQRT1_2 + 0.5), 511).astype(np.uint64)
        comp = np.where(keep, (comp << np.uint64(10)) | (neg << np.uint64(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_smallest_three(raw: np.ndarray) -> np.ndarray:  # [N, 4] bytes -> [N, 4] xyzw
    comp = raw.copy().view("<u4")[:, 0].astype(np.uint64)
    largest = (comp >> np.uint64(30)).astype(np.int64)
    q = np.zeros((len(raw), 4), dtype=np.float64)
    for i in (3, 2, 1, 0):  # the last component packed sits in the low bits
        skip = largest == i
        mag = (comp & np.uint64(511)).astype(np.float64)
        sign = np.where((comp >> np.uint64(9)) & np.uint64(1), -1.0, 1.0)
        q[:, i] = np.where(skip, 0.0, sign * SQRT1_2 * mag / 511)
        comp = np.where(skip, comp, comp >> np.uint64(10))
    rows = np.arange(len(raw))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (q ** 2).sum(1)))
    return q


def encode_spz(positions: np.ndarray, rotations_xyzw: np.ndarray, scales: np.ndarray, opacities: np.ndarray,
               sh: np.ndarray, options: SpzOptions = SpzOptions()) -> bytes:
    """The gzipped .spz bytes of N splats (arrays as in :class:`SpzCloud`, in RUB = the head frame)."""
    n = len(positions)
    arrays = {"positions": (positions, (n, 3)), "rotations_xyzw": (rotations_xyzw, (n, 4)),
              "scales": (scales, (n, 3)), "opacities": (opacities, (n,)), "sh": (sh, (n, sh.shape[1], 3))}
    for label, (a, shape) in arrays.items():
        if a.shape != shape or not np.isfinite(a).all():
            raise ValueError(f"{label} must be finite with shape {shape}, got {a.shape}")
    if n == 0:
        raise ValueError("an .spz file needs at least one splat")
    k = sh.shape[1]
    degree = math.isqrt(k) - 1
    if (degree + 1) ** 2 != k or degree > 3:
        raise ValueError(f"sh must hold 1, 4, 9 or 16 coefficients, got {k}")
    fixed = _round(np.asarray(positions, np.float64) * (1 << options.fractional_bits))
    if np.abs(fixed).max() >= 1 << 23:
        lim = (1 << 23) / (1 << options.fractional_bits)
        raise ValueError(f"positions reach {np.abs(positions).max():.4g}, past the +-{lim:.4g} that 24 bits hold "
                         f"at {options.fractional_bits} fractional bits; use fewer fractional bits")
    u = fixed.astype(np.int64).astype("<i4").view("<u4").reshape(n, 3, 1)
    pos = ((u >> np.array([0, 8, 16], dtype=np.uint32)) & 0xFF).astype(np.uint8)  # [N, 3, 3] little endian
    alphas = _u8(np.asarray(opacities, np.float64) * 255.0)
    colors = _u8(np.asarray(sh[:, 0], np.float64) * (COLOR_SCALE * 255.0) + 0.5 * 255.0)
    scale_bytes = _u8((np.log(np.maximum(np.asarray(scales, np.float64), 1e-30)) + 10.0) * 16.0)
    q = np.asarray(rotations_xyzw, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    if options.version is SpzVersion.V3:
        rot = _pack_smallest_three(q)
    else:
        q = np.where(q[:, 3:4] < 0, -q, q)
        rot = _u8(q[:, :3] * 127.5 + 127.5)
    rest = np.asarray(sh[:, 1:], np.float64)  # [N, K-1, 3]: coefficient-major, channel fastest
    sh_bytes = np.concatenate([_quantize_sh(rest[:, :3], options.sh1_bits),
                               _quantize_sh(rest[:, 3:], options.sh_rest_bits)], 1)
    flags = FLAG_ANTIALIASED if options.antialiased else 0
    header = HEADER.pack(SPZ_MAGIC, int(options.version), n, degree, options.fractional_bits, flags, 0)
    body = b"".join(a.tobytes() for a in (pos, alphas, colors, scale_bytes, rot, sh_bytes))
    return gzip.compress(header + body, compresslevel=9, mtime=0)


def _bad(path: Path, problem: str, fix: str = "re-export the splats as .spz (version 2 or 3)") -> InputError:
    return InputError(problem, path=path, fix=fix)


def _gunzip(data: bytes, path: Path) -> tuple[bytes, zlib._Decompress]:
    """The 16 header bytes and the decompressor, positioned after them."""
    if data[:4] == b"NGSP":
        version = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else "?"
        raise _bad(path, f".spz version {version} (the ZSTD format) is not supported; headforge reads the gzip "
                         "versions 2 and 3", fix=_REFORMAT)
    if data[:2] != b"\x1f\x8b":
        raise _bad(path, "not an .spz file: it is not gzip-compressed (no 1f 8b magic)")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(data, HEADER.size)
    except zlib.error as e:
        raise _bad(path, f"the .spz gzip stream is corrupt ({e})") from None
    if len(head) < HEADER.size:
        raise _bad(path, f"the .spz file is truncated: {len(head)} of the header's {HEADER.size} bytes")
    return head, d


def decode_spz(data: bytes, path: str | Path) -> SpzCloud:
    """Decode .spz bytes; every defect is an :class:`InputError` naming ``path``."""
    path = Path(path)
    head, d = _gunzip(data, path)
    magic, version, n, degree, frac, flags, _ = HEADER.unpack(head)
    if magic != SPZ_MAGIC:
        raise _bad(path, f"not an .spz file: magic {magic:#010x}, expected {SPZ_MAGIC:#010x} ('NGSP')")
    if version not in (2, 3):
        problem = (".spz version 1 (float16 positions, never released) is not supported" if version == 1 else
                   f".spz version {version} is not supported; headforge reads versions 2 and 3")
        raise _bad(path, problem, fix=_REFORMAT)
    if n == 0:
        raise _bad(path, "the .spz file holds no splats (numPoints 0)", fix="export a trained model")
    if degree > 3:
        raise _bad(path, f"SH degree {degree} is not supported (headforge keeps degrees 0..3)",
                   fix="drop the 4th band: `splat-transform IN.spz -H 3 --spz-version 3 OUT.spz`")
    if frac > 31:
        raise _bad(path, f"fractional bits {frac} is not a valid fixed-point position format")
    if flags & FLAG_EXTENSIONS:
        raise _bad(path, "the .spz file carries vendor extensions (flag 0x2), which headforge does not read "
                         "(one of them changes the axes)", fix="save it again without extensions")
    k = (degree + 1) ** 2
    rot_bytes = 4 if version == 3 else 3
    per_point = 9 + 1 + 3 + 3 + rot_bytes + (k - 1) * 3
    expected = n * per_point
    try:
        body = d.decompress(d.unconsumed_tail, expected + 1)
        extra = d.decompress(d.unconsumed_tail, 1) if len(body) == expected else b""
    except zlib.error as e:
        raise _bad(path, f"the .spz gzip stream is corrupt ({e})") from None
    if len(body) < expected:
        raise _bad(path, f"the .spz file is truncated: the header says {n} splats ({expected} bytes), the data "
                         f"holds {len(body)} bytes")
    if len(body) > expected or extra:
        raise _bad(path, f"the .spz file holds more data than its header's {n} splats")
    if not d.eof:
        raise _bad(path, "the .spz gzip stream is truncated (no end of stream)")
    buf = np.frombuffer(body, dtype=np.uint8)
    sizes = {"pos": n * 9, "alpha": n, "color": n * 3, "scale": n * 3, "rot": n * rot_bytes, "sh": n * (k - 1) * 3}
    parts, at = {}, 0
    for name, size in sizes.items():
        parts[name], at = buf[at:at + size], at + size
    b = parts["pos"].reshape(n, 3, 3).astype(np.int64)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 bits
    positions = fixed.astype(np.float64) / (1 << frac)
    opacities = parts["alpha"].astype(np.float64) / 255.0
    dc = (parts["color"].reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    scales = np.exp(parts["scale"].reshape(n, 3).astype(np.float64) / 16.0 - 10.0)
    if version == 3:
        q = _unpack_smallest_three(parts["rot"].reshape(n, 4))
    else:
        xyz = parts["rot"].reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        q = np.concatenate([xyz, np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1, keepdims=True)))], 1)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)  # v2's x y z may round to a norm just above 1 (w then 0)
    rest = (parts["sh"].reshape(n, k - 1, 3).astype(np.float64) - 128.0) / 128.0
    sh = np.concatenate([dc[:, None], rest], 1)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return SpzCloud(f32(positions), f32(q), f32(scales), f32(opacities), f32(sh), SpzVersion(version), frac,
                    bool(flags & FLAG_ANTIALIASED))


def read_spz(path: str | Path) -> SpzCloud:
    return decode_spz(read_bytes(path, ".spz file"), path)


__all__ = ["SPZ_MAGIC", "COLOR_SCALE", "SpzVersion", "SpzOptions", "SpzCloud", "SpzBounds", "spz_bounds",
           "encode_spz", "decode_spz", "read_spz"]
