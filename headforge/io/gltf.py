"""A glTF 2.0 / GLB builder from numpy arrays (one buffer, one BIN chunk).

Every array becomes its own buffer view at a 4-byte aligned offset (padding with zeros), so
accessors never need a byteOffset. Vertex-attribute views get ``target`` ARRAY_BUFFER and, when an
element is not a multiple of 4 bytes (e.g. uint8 VEC3 colours), a padded ``byteStride``; index
views get ELEMENT_ARRAY_BUFFER; everything else (images, inverse bind matrices, animation data,
sparse indices/values) has no target, as the spec asks. Arrays must already have the component's
dtype (``ComponentType.of`` refuses float64 etc.): the builder never casts silently.

The builder returns bytes; writing them atomically is the caller's business.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
from PIL import Image

from headforge.io.gltf_types import (
    AccessorType,
    AnimationChannel,
    AnimationPath,
    BufferTarget,
    ComponentType,
    Interpolation,
    Material,
    Node,
    Primitive,
    Sampler,
)

GLB_MAGIC = b"glTF"
CHUNK_JSON = b"JSON"
CHUNK_BIN = b"BIN\0"


def _pad(n: int, to: int = 4) -> int:
    return -n % to


class GltfBuilder:
    """Accumulates a glTF document; ``to_glb()`` packs it into GLB bytes."""

    def __init__(self, generator: str = "headforge"):
        self._blob = bytearray()
        self.doc: dict = {"asset": {"version": "2.0", "generator": generator}}
        self._used: list[str] = []
        self._required: list[str] = []

    # ------------------------------------------------------------------------------------ internals
    def _append(self, key: str, item: dict) -> int:
        items = self.doc.setdefault(key, [])
        items.append(item)
        return len(items) - 1

    def use_extension(self, name: str, *, required: bool = False) -> None:
        if name not in self._used:
            self._used.append(name)
        if required and name not in self._required:
            self._required.append(name)

    # ------------------------------------------------------------------------------------ buffers
    def add_buffer_view(self, data: bytes, *, target: BufferTarget | None = None,
                        byte_stride: int | None = None) -> int:
        """Append ``data`` at a 4-byte aligned offset; -> buffer view index."""
        self._blob += b"\0" * _pad(len(self._blob))
        view: dict = {"buffer": 0, "byteOffset": len(self._blob), "byteLength": len(data)}
        if byte_stride is not None:
            if byte_stride % 4 or not 4 <= byte_stride <= 252:
                raise ValueError(f"byteStride {byte_stride} must be a multiple of 4 in [4, 252]")
            view["byteStride"] = byte_stride
        if target is not None:
            view["target"] = int(target)
        self._blob += data
        return self._append("bufferViews", view)

    def _packed(self, array: np.ndarray, kind: AccessorType, target: BufferTarget | None
                ) -> tuple[bytes, int | None, int]:
        """Array -> (bytes, byteStride or None, count); pads vertex elements to 4 bytes."""
        ctype = ComponentType.of(array.dtype)
        if array.shape[1:] != kind.shape:
            raise ValueError(f"{kind} accessor needs an array of shape [count, {kind.shape}], got {array.shape}")
        if kind in (AccessorType.MAT2, AccessorType.MAT3) and ctype.dtype.itemsize < 4:
            raise ValueError(f"{kind} with {ctype.name} needs column padding, which is not supported")
        count = array.shape[0]
        if kind.value.startswith("MAT"):  # glTF stores matrices column-major
            array = np.swapaxes(array, -1, -2)
        flat = np.ascontiguousarray(array.reshape(count, kind.width), dtype=ctype.dtype)
        elem = flat.itemsize * kind.width
        if target is BufferTarget.ARRAY_BUFFER and elem % 4:
            stride = elem + _pad(elem)
            padded = np.zeros((count, stride), np.uint8)
            padded[:, :elem] = flat.view(np.uint8).reshape(count, elem)
            return padded.tobytes(), stride, count
        return flat.tobytes(), None, count

    def add_accessor(self, array: np.ndarray, kind: AccessorType, *, target: BufferTarget | None = None,
                     normalized: bool = False, min_max: bool = False, name: str | None = None) -> int:
        """A dense accessor over its own buffer view; ``min_max`` writes per-component bounds
        (required for POSITION and animation inputs)."""
        data, stride, count = self._packed(array, kind, target)
        if count == 0:
            raise ValueError("glTF accessors must have count >= 1")
        ctype = ComponentType.of(array.dtype)
        acc: dict = {"bufferView": self.add_buffer_view(data, target=target, byte_stride=stride),
                     "componentType": int(ctype), "count": count, "type": kind.value}
        if normalized:
            acc.update(self._normalized(ctype))
        if min_max:
            acc.update(self._bounds(array.reshape(count, kind.width), ctype))
        if name:
            acc["name"] = name
        return self._append("accessors", acc)

    @staticmethod
    def _bounds(flat: np.ndarray, ctype: ComponentType) -> dict:
        """Per-component min/max of the stored values: for a normalized accessor the integers themselves
        (glTF 2.0, "Accessor Bounds": the normalized flag has no effect on min/max; the validator agrees)."""
        cast = float if ctype is ComponentType.FLOAT else int
        return {"min": [cast(x) for x in flat.min(0)], "max": [cast(x) for x in flat.max(0)]}

    @staticmethod
    def _normalized(ctype: ComponentType) -> dict:
        if ctype in (ComponentType.FLOAT, ComponentType.UNSIGNED_INT):
            raise ValueError(f"normalized is only for 8/16-bit integers, not {ctype.name}")
        return {"normalized": True}

    def add_sparse_accessor(self, count: int, indices: np.ndarray, values: np.ndarray, kind: AccessorType, *,
                            normalized: bool = False, min_max: bool = False, name: str | None = None) -> int:
        """An accessor of ``count`` zero elements except ``values`` [S, ...] at ``indices`` [S]
        (strictly increasing). No base buffer view: glTF initialises it with zeros. Morph targets
        where most vertices do not move store only the moving ones this way; ``normalized`` int8/int16
        values are KHR_mesh_quantization's quantised deltas (the caller declares the extension). The
        values view is tightly packed (sparse values have no stride)."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or len(indices) != len(values) or len(indices) == 0:
            raise ValueError("sparse indices must be [S] with S >= 1 matching values [S, ...]")
        if np.any(np.diff(indices.astype(np.int64)) <= 0) or indices.min() < 0 or indices.max() >= count:
            raise ValueError(f"sparse indices must strictly increase within [0, {count})")
        idx_type = ComponentType.UNSIGNED_SHORT if count <= 65535 else ComponentType.UNSIGNED_INT
        idx_view = self.add_buffer_view(indices.astype(idx_type.dtype).tobytes())
        ctype = ComponentType.of(values.dtype)
        data, _, _ = self._packed(values, kind, None)
        acc: dict = {"componentType": int(ctype), "count": int(count), "type": kind.value,
                     "sparse": {"count": len(indices),
                                "indices": {"bufferView": idx_view, "componentType": int(idx_type)},
                                "values": {"bufferView": self.add_buffer_view(data)}}}
        if normalized:
            acc.update(self._normalized(ctype))
        if min_max:
            dense = np.zeros((count, *kind.shape), values.dtype)
            dense[indices] = values
            acc.update(self._bounds(dense.reshape(count, kind.width), ctype))
        if name:
            acc["name"] = name
        return self._append("accessors", acc)

    def add_indices(self, faces: np.ndarray) -> int:
        """Triangle (or line/point) indices, flattened; uint16 when they fit, else uint32."""
        flat = np.asarray(faces).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= 2**32 - 1):
            raise ValueError("vertex indices must lie in [0, 2^32 - 1)")
        dtype = np.uint16 if flat.size and flat.max() < 65535 else np.uint32
        return self.add_accessor(flat.astype(dtype), AccessorType.SCALAR, target=BufferTarget.ELEMENT_ARRAY_BUFFER)

    # ------------------------------------------------------------------------------------ textures
    def add_image_png(self, rgb: np.ndarray, name: str | None = None) -> int:
        """[H, W, 3|4] uint8 -> an image embedded as PNG in a buffer view."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
            raise ValueError(f"image must be [H, W, 3|4] uint8, got {rgb.dtype} {rgb.shape}")
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        image: dict = {"bufferView": self.add_buffer_view(buf.getvalue()), "mimeType": "image/png"}
        if name:
            image["name"] = name
        return self._append("images", image)

    def add_texture(self, image: int, sampler: Sampler | None = None) -> int:
        sampler = sampler or Sampler()
        s = self._append("samplers", {"magFilter": int(sampler.mag_filter), "minFilter": int(sampler.min_filter),
                                      "wrapS": int(sampler.wrap_s), "wrapT": int(sampler.wrap_t)})
        return self._append("textures", {"source": image, "sampler": s})

    def add_material(self, m: Material) -> int:
        pbr: dict = {"baseColorFactor": [float(x) for x in m.base_color_factor],
                     "metallicFactor": float(m.metallic_factor), "roughnessFactor": float(m.roughness_factor)}
        if m.base_color_texture is not None:
            pbr["baseColorTexture"] = {"index": m.base_color_texture}
        mat: dict = {"pbrMetallicRoughness": pbr, "alphaMode": m.alpha_mode.value, "doubleSided": m.double_sided}
        if m.alpha_cutoff is not None:
            if m.alpha_mode != "MASK":
                raise ValueError("alpha_cutoff applies only to AlphaMode.MASK")
            mat["alphaCutoff"] = float(m.alpha_cutoff)
        if m.name:
            mat["name"] = m.name
        return self._append("materials", mat)

    # ------------------------------------------------------------------------------------ scene graph
    def add_mesh(self, primitives: list[Primitive], *, weights: list[float] | None = None,
                 target_names: list[str] | None = None, name: str | None = None) -> int:
        """``weights`` are the default morph weights; ``target_names`` go to ``extras.targetNames``."""
        prims = []
        num_targets = {len(p.targets) for p in primitives}
        if len(num_targets) > 1:
            raise ValueError("every primitive of a mesh must have the same number of morph targets")
        for p in primitives:
            prim: dict = {"attributes": dict(p.attributes), "mode": int(p.mode)}
            if p.indices is not None:
                prim["indices"] = p.indices
            if p.material is not None:
                prim["material"] = p.material
            if p.targets:
                prim["targets"] = [dict(t) for t in p.targets]
            if p.extensions:
                prim["extensions"] = p.extensions
                for ext in p.extensions:
                    self.use_extension(ext)
            prims.append(prim)
        mesh: dict = {"primitives": prims}
        t = num_targets.pop() if num_targets else 0
        for label, given in (("weights", weights), ("target_names", target_names)):
            if given is not None and len(given) != t:
                raise ValueError(f"{label} has {len(given)} entries for {t} morph targets")
        if weights is not None:
            mesh["weights"] = [float(w) for w in weights]
        if target_names is not None:
            mesh["extras"] = {"targetNames": list(target_names)}
        if name:
            mesh["name"] = name
        return self._append("meshes", mesh)

    def add_node(self, n: Node) -> int:
        node: dict = {}
        for key, value in (("name", n.name), ("mesh", n.mesh), ("skin", n.skin)):
            if value is not None:
                node[key] = value
        if n.children:
            node["children"] = list(n.children)
        if n.matrix is not None:
            if any(v is not None for v in (n.translation, n.rotation, n.scale)):
                raise ValueError("a node has either a matrix or TRS, not both")
            m = np.asarray(n.matrix, dtype=np.float64)
            if m.shape != (4, 4):
                raise ValueError(f"node matrix must be 4x4, got {m.shape}")
            node["matrix"] = [float(x) for x in m.T.reshape(-1)]  # column-major
        for key, value in (("translation", n.translation), ("rotation", n.rotation), ("scale", n.scale)):
            if value is not None:
                node[key] = [float(x) for x in value]
        return self._append("nodes", node)

    def add_scene(self, nodes: list[int], *, default: bool = True, name: str | None = None) -> int:
        scene: dict = {"nodes": list(nodes)}
        if name:
            scene["name"] = name
        index = self._append("scenes", scene)
        if default:
            self.doc["scene"] = index
        return index

    def add_skin(self, joints: list[int], inverse_bind_matrices: np.ndarray, *, skeleton: int | None = None,
                 name: str | None = None) -> int:
        """``inverse_bind_matrices`` [J, 4, 4] float32, row-major maths layout (world -> joint)."""
        ibm = np.asarray(inverse_bind_matrices)
        if ibm.shape != (len(joints), 4, 4):
            raise ValueError(f"inverse bind matrices must be [{len(joints)}, 4, 4], got {ibm.shape}")
        skin: dict = {"joints": list(joints), "inverseBindMatrices": self.add_accessor(ibm, AccessorType.MAT4)}
        if skeleton is not None:
            skin["skeleton"] = skeleton
        if name:
            skin["name"] = name
        return self._append("skins", skin)

    def add_animation(self, channels: list[AnimationChannel], *, name: str | None = None) -> int:
        samplers, out = [], []
        for ch in channels:
            times = np.asarray(ch.times)
            if times.ndim != 1 or len(times) == 0 or np.any(np.diff(times) <= 0) or times[0] < 0:
                raise ValueError("animation times must be [K] >= 0 and strictly increasing")
            values = np.asarray(ch.values)
            per_key = 3 if ch.interpolation is Interpolation.CUBICSPLINE else 1
            if ch.path is AnimationPath.WEIGHTS:
                flat, kind = values.reshape(-1), AccessorType.SCALAR
            else:
                kind = AccessorType.VEC4 if ch.path is AnimationPath.ROTATION else AccessorType.VEC3
                flat = values.reshape(-1, kind.width)
            if values.shape[0] != len(times) or (per_key == 3 and values.shape[1] != 3):
                raise ValueError(f"{ch.path} values {values.shape} do not match {len(times)} keys "
                                 f"({ch.interpolation})")
            inp = self.add_accessor(times, AccessorType.SCALAR, min_max=True)
            samplers.append({"input": inp, "output": self.add_accessor(flat, kind),
                             "interpolation": ch.interpolation.value})
            out.append({"sampler": len(samplers) - 1, "target": {"node": ch.node, "path": ch.path.value}})
        anim: dict = {"channels": out, "samplers": samplers}
        if name:
            anim["name"] = name
        return self._append("animations", anim)

    # ------------------------------------------------------------------------------------ output
    def document(self) -> dict:
        """The JSON document as it will be written (buffers and extension lists filled in)."""
        doc = dict(self.doc)
        if self._blob:
            doc["buffers"] = [{"byteLength": len(self._blob) + _pad(len(self._blob))}]
        if self._used:
            doc["extensionsUsed"] = list(self._used)
        if self._required:
            doc["extensionsRequired"] = list(self._required)
        return doc

    def to_glb(self) -> bytes:
        """12-byte header, JSON chunk padded with spaces, BIN chunk padded with zeros."""
        body = json.dumps(self.document(), separators=(",", ":")).encode("utf-8")
        body += b" " * _pad(len(body))
        blob = bytes(self._blob) + b"\0" * _pad(len(self._blob))
        total = 12 + 8 + len(body) + (8 + len(blob) if blob else 0)
        out = struct.pack("<4sII", GLB_MAGIC, 2, total) + struct.pack("<I4s", len(body), CHUNK_JSON) + body
        if blob:
            out += struct.pack("<I4s", len(blob), CHUNK_BIN) + blob
        return out
