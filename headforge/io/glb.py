"""A minimal GLB reader: the JSON document, the BIN chunk, accessors (strided, sparse, normalized).

Enough to read back what :class:`headforge.io.gltf.GltfBuilder` writes and what other tools write
for the same features; not a scene loader (no node transforms are applied, no external URIs).
Malformed files raise :class:`headforge.errors.InputError` naming the problem. ``pack_glb`` is
the inverse of ``read_glb``: a converter that only edits the JSON (a VRM from a rigged GLB) re-packs
it around the unchanged BIN chunk.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headforge.errors import InputError
from headforge.io.files import read_bytes
from headforge.io.gltf import CHUNK_BIN, CHUNK_JSON, GLB_MAGIC
from headforge.io.gltf_types import AccessorType, ComponentType

_FIX = "the file is truncated or not a binary glTF (.glb); re-export it"


@dataclass(frozen=True)
class GlbFile:
    document: dict
    binary: bytes
    path: Path | None = None

    def _error(self, problem: str) -> InputError:
        return InputError(problem, path=self.path, fix=_FIX)

    def _get(self, key: str, index: int) -> dict:
        items = self.document.get(key, [])
        if not isinstance(index, int) or not 0 <= index < len(items):
            raise self._error(f"{key}[{index}] does not exist")
        return items[index]

    def view_bytes(self, index: int) -> tuple[bytes, int | None]:
        """(bytes of buffer view ``index``, its byteStride or None)."""
        view = self._get("bufferViews", index)
        if view.get("buffer", 0) != 0 or "uri" in self._get("buffers", 0):
            raise self._error("only the GLB's own binary buffer is read")
        start, length = view.get("byteOffset", 0), view["byteLength"]
        if start + length > len(self.binary):
            raise self._error(f"bufferViews[{index}] runs past the end of the BIN chunk")
        return self.binary[start:start + length], view.get("byteStride")

    def _dense(self, view: int, offset: int, count: int, ctype: ComponentType, kind: AccessorType) -> np.ndarray:
        data, stride = self.view_bytes(view)
        elem = ctype.dtype.itemsize * kind.width
        stride = stride or elem
        need = offset + (count - 1) * stride + elem if count else 0
        if need > len(data):
            raise self._error(f"accessor of {count} x {kind} needs {need} bytes, its buffer view has {len(data)}")
        rows = np.lib.stride_tricks.as_strided(
            np.frombuffer(data, np.uint8, offset=offset, count=need - offset), shape=(count, elem),
            strides=(stride, 1)) if count else np.zeros((0, elem), np.uint8)
        return np.ascontiguousarray(rows).view(ctype.dtype).reshape(count, kind.width)

    def accessor(self, index: int, *, normalize: bool = True) -> np.ndarray:
        """Accessor ``index`` as [count, *element shape]; sparse substitutions applied; normalized
        integers turned into floats as glTF defines them (unless ``normalize=False``); matrices
        returned in row-major maths layout."""
        acc = self._get("accessors", index)
        try:
            ctype, kind, count = ComponentType(acc["componentType"]), AccessorType(acc["type"]), acc["count"]
        except (KeyError, ValueError) as e:
            raise self._error(f"accessors[{index}] is malformed ({e})") from None
        if "bufferView" in acc:
            flat = self._dense(acc["bufferView"], acc.get("byteOffset", 0), count, ctype, kind).copy()
        else:
            flat = np.zeros((count, kind.width), ctype.dtype)
        sparse = acc.get("sparse")
        if sparse is not None:
            n = sparse["count"]
            idx_type = ComponentType(sparse["indices"]["componentType"])
            ids = self._dense(sparse["indices"]["bufferView"], sparse["indices"].get("byteOffset", 0), n, idx_type,
                              AccessorType.SCALAR)[:, 0].astype(np.int64)
            if n and (ids.min() < 0 or ids.max() >= count):
                raise self._error(f"accessors[{index}] has sparse indices outside [0, {count})")
            flat[ids] = self._dense(sparse["values"]["bufferView"], sparse["values"].get("byteOffset", 0), n, ctype,
                                    kind)
        out = flat.reshape(count, *kind.shape)
        if kind.value.startswith("MAT"):
            out = np.swapaxes(out, -1, -2).copy()
        if normalize and acc.get("normalized", False):
            out = dequantize(out, ctype)
        return out

    def image_bytes(self, index: int) -> bytes:
        image = self._get("images", index)
        if "bufferView" not in image:
            raise self._error(f"images[{index}] is not embedded in the GLB")
        return self.view_bytes(image["bufferView"])[0]


def dequantize(values: np.ndarray, ctype: ComponentType) -> np.ndarray:
    """glTF's normalized-integer decoding: unsigned c / max, signed max(c / max, -1)."""
    if ctype is ComponentType.FLOAT:
        return values
    top = float(np.iinfo(ctype.dtype).max)
    out = values.astype(np.float32) / top
    return np.maximum(out, -1.0) if np.issubdtype(ctype.dtype, np.signedinteger) else out


def read_glb(data: bytes, path: str | Path | None = None) -> GlbFile:
    """Split GLB bytes into the JSON document and the BIN chunk (checks header and chunk sizes)."""
    path = None if path is None else Path(path)
    try:
        magic, version, total = struct.unpack_from("<4sII", data, 0)
        jlen, jtype = struct.unpack_from("<I4s", data, 12)
    except struct.error:
        raise InputError(f"only {len(data)} bytes, too short for a GLB header", path=path, fix=_FIX) from None
    if magic != GLB_MAGIC or version != 2:
        raise InputError(f"not a GLB 2.0 file (magic {magic!r}, version {version})", path=path, fix=_FIX)
    if total > len(data):
        raise InputError(f"GLB is truncated: its header says {total} bytes, the file has {len(data)}", path=path,
                         fix=_FIX)
    if jtype != CHUNK_JSON or 20 + jlen > total:
        raise InputError(f"GLB JSON chunk is missing or runs past the file ({jtype!r}, {jlen} bytes)", path=path,
                         fix=_FIX)
    try:
        document = json.loads(data[20:20 + jlen])
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"GLB JSON chunk cannot be parsed ({e})", path=path, fix=_FIX) from None
    if not isinstance(document, dict):
        raise InputError("GLB JSON chunk is not an object", path=path, fix=_FIX)
    binary = b""
    at = 20 + jlen
    if at + 8 <= total:
        blen, btype = struct.unpack_from("<I4s", data, at)
        if btype != CHUNK_BIN or at + 8 + blen > total:
            raise InputError("GLB BIN chunk is missing or truncated", path=path, fix=_FIX)
        binary = data[at + 8:at + 8 + blen]
    return GlbFile(document, binary, path)


def pack_glb(document: dict, binary: bytes) -> bytes:
    """The inverse of :func:`read_glb`: a JSON document and a BIN chunk -> GLB bytes (JSON padded with
    spaces, BIN with zeros, to 4 bytes, as ``GltfBuilder.to_glb`` does). ``buffers[0].byteLength``
    must be the BIN chunk's length before or after padding; it is set to the padded length, so a
    document edited after ``read_glb`` (an extension added, nodes appended) re-packs unchanged."""
    buffers = document.get("buffers", [])
    if binary and (not buffers or "uri" in buffers[0]):
        raise ValueError("a BIN chunk needs buffers[0] without a uri")
    padded = binary + b"\0" * (-len(binary) % 4)
    if buffers and "uri" not in buffers[0]:
        if buffers[0].get("byteLength") not in (len(binary), len(padded)):
            raise ValueError(f"buffers[0].byteLength {buffers[0].get('byteLength')} does not match the "
                             f"{len(binary)}-byte BIN chunk")
        document = {**document, "buffers": [{**buffers[0], "byteLength": len(padded)}, *buffers[1:]]}
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    body += b" " * (-len(body) % 4)
    total = 12 + 8 + len(body) + (8 + len(padded) if padded else 0)
    out = struct.pack("<4sII", GLB_MAGIC, 2, total) + struct.pack("<I4s", len(body), CHUNK_JSON) + body
    if padded:
        out += struct.pack("<I4s", len(padded), CHUNK_BIN) + padded
    return out


def load_glb(path: str | Path) -> GlbFile:
    path = Path(path)
    return read_glb(read_bytes(path, "GLB"), path)
