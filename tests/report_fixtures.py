"""Inputs for the report tests: a small rigged-looking head GLB and a run folder like a job writes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from headforge.io.glb import read_glb
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import (
    AccessorType,
    AnimationChannel,
    AnimationPath,
    BufferTarget,
    Material,
    Node,
    Primitive,
)

HEAD_RADII = np.array([0.08, 0.11, 0.09], np.float32)  # x (left-right), y (up), z (forward), metres


def _ellipsoid(n_lat: int = 40, n_lon: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A closed UV ellipsoid: -> positions [V, 3], normals [V, 3], uvs [V, 2], faces [F, 3] (CCW seen from
    outside). The seam column is duplicated for the UVs; the poles are single vertices."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # from the top
    phi = np.linspace(0, 2 * np.pi, n_lon + 1)  # around y, 0 at +z (the face)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], -1).reshape(-1, 3)
    uv = np.stack([p / (2 * np.pi), t / np.pi], -1).reshape(-1, 2)
    unit = np.concatenate([unit, [[0, 1, 0], [0, -1, 0]]])
    uv = np.concatenate([uv, [[0.5, 0.0], [0.5, 1.0]]])
    pos = unit * HEAD_RADII
    normal = unit / HEAD_RADII
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    cols = n_lon + 1
    top, bottom = len(pos) - 2, len(pos) - 1
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = i * cols + j, i * cols + j + 1, (i + 1) * cols + j, (i + 1) * cols + j + 1
            faces += [[a, c, b], [b, c, d]]
    last = (n_lat - 2) * cols
    for j in range(n_lon):
        faces += [[top, j, j + 1], [bottom, last + j + 1, last + j]]
    return pos.astype(np.float32), normal.astype(np.float32), uv.astype(np.float32), np.asarray(faces, np.uint32)


def _texture(size: int = 128) -> np.ndarray:
    """Skin with a darker grid, a red lip band around the mouth and dark eyes: movement shows."""
    v, u = np.mgrid[0:size, 0:size] / size
    img = np.empty((size, size, 3), np.float32)
    img[:] = (0.86, 0.70, 0.60)
    grid = (np.abs((u * 32) % 1 - 0.5) > 0.45) | (np.abs((v * 32) % 1 - 0.5) > 0.45)
    img[grid] *= 0.8
    front = np.minimum(np.abs(u - 0.0), np.abs(u - 1.0))  # u = 0 (and 1) faces +z
    img[(front < 0.06) & (np.abs(v - 0.66) < 0.025)] = (0.75, 0.12, 0.15)
    img[(np.abs(front - 0.06) < 0.02) & (np.abs(v - 0.42) < 0.02)] = (0.1, 0.1, 0.15)
    return (img * 255).astype(np.uint8)


def mouth_mask(pos: np.ndarray) -> np.ndarray:
    """The vertices jawOpen moves: the front, below the middle, near the centre line. [V] bool"""
    unit = pos / HEAD_RADII
    return (unit[:, 2] > 0.6) & (unit[:, 1] < -0.25) & (unit[:, 1] > -0.8) & (np.abs(unit[:, 0]) < 0.45)


def head_glb() -> bytes:
    """A textured closed head with morph targets ``jawOpen`` (the mouth patch drops and comes forward) and
    ``browInnerUp`` (the forehead rises), ``extras.targetNames``, and an animation ``talk`` on the weights."""
    pos, normal, uv, faces = _ellipsoid()
    b = GltfBuilder()
    texture = b.add_texture(b.add_image_png(_texture()))
    material = b.add_material(Material(name="skin", base_color_texture=texture, metallic_factor=0.0,
                                       roughness_factor=0.8))
    vertex = BufferTarget.ARRAY_BUFFER
    attrs = {"POSITION": b.add_accessor(pos, AccessorType.VEC3, target=vertex, min_max=True),
             "NORMAL": b.add_accessor(normal, AccessorType.VEC3, target=vertex),
             "TEXCOORD_0": b.add_accessor(uv, AccessorType.VEC2, target=vertex)}
    unit = pos / HEAD_RADII
    mouth = np.flatnonzero(mouth_mask(pos))
    fall = np.clip((-0.25 - unit[mouth, 1]) / 0.3, 0, 1) * np.clip((0.45 - np.abs(unit[mouth, 0])) / 0.2, 0, 1)
    fall = fall[:, None]  # lower lip and chin move most, nothing at the patch's border
    jaw = (fall * np.array([0.0, -0.03, 0.012], np.float32)).astype(np.float32)
    brow = np.flatnonzero((unit[:, 2] > 0.5) & (unit[:, 1] > 0.45))
    lift = np.tile(np.array([[0.0, 0.012, 0.0]], np.float32), (len(brow), 1))
    targets = tuple({"POSITION": b.add_sparse_accessor(len(pos), idx.astype(np.uint32), d, AccessorType.VEC3,
                                                       min_max=True)} for idx, d in ((mouth, jaw), (brow, lift)))
    prim = Primitive(attrs, indices=b.add_indices(faces), material=material, targets=targets)
    mesh = b.add_mesh([prim], weights=[0.0, 0.0], target_names=["jawOpen", "browInnerUp"], name="head")
    node = b.add_node(Node(name="head", mesh=mesh))
    b.add_scene([node])
    times = np.array([0.0, 0.5, 1.0, 1.5], np.float32)
    weights = np.array([[0, 0], [1, 0.3], [0.2, 1], [0, 0]], np.float32)
    b.add_animation([AnimationChannel(node, AnimationPath.WEIGHTS, times, weights)], name="talk")
    return b.to_glb()


def target_points(glb: bytes, target: str, node: str) -> tuple[np.ndarray, np.ndarray]:
    """Mesh-local positions of the vertices ``target`` moves (by more than 2% of its largest move) in the mesh of
    the node named ``node``, at rest and at weight 1, read from the GLB itself: -> ([M, 3], [M, 3])."""
    g = read_glb(glb)
    found = [n for n in g.document["nodes"] if n.get("name") == node and "mesh" in n]
    if len(found) != 1:
        raise KeyError(f"{len(found)} nodes named {node!r} with a mesh")
    mesh = g.document["meshes"][found[0]["mesh"]]
    names = mesh.get("extras", {}).get("targetNames", [])
    rest, moved = [], []
    for prim in mesh["primitives"]:
        pos = g.accessor(prim["attributes"]["POSITION"])
        delta = g.accessor(prim["targets"][names.index(target)]["POSITION"])
        length = np.linalg.norm(delta, axis=1)
        keep = length > 0.02 * length.max() if length.max() > 0 else np.zeros(len(length), bool)
        rest.append(pos[keep])
        moved.append(pos[keep] + delta[keep])
    return np.concatenate(rest), np.concatenate(moved)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, format="GIF", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=100, loop=0)
    return buf.getvalue()


METRICS = {
    "headforge": "0.1.0", "job": "avatar", "capture": "/data/capture/<transforms>.json",
    "resolution": [256, 256], "num_train_views": 24, "num_gaussians": 40435,
    "seconds": {"fit": 1.77, "train": 984.57123, "total": 997.3},
    "trained_frames": {"psnr": 38.290926933288574, "ssim": 0.9872526004910469, "num_views": 8},
    "held_out_frames": {"psnr": None, "num_views": 0},
    "per_view": [{"view": i, "frame": 0, "psnr": 30.0 + i / 3, "held_out_frame": False} for i in range(5)],
    "history": [[50 * i, 0.01, 30.0 + i] for i in range(1, 40)],
    "frames": [{"frame": 0, "scores": {"a": 1, "b": 0.5}, "views": {f"view {i}": {"iou": 0.9} for i in range(10)}}],
    "note": "a {{slot}} & <b>bold</b> note",
}


def make_run(folder: Path, *, glb: bytes | None = None) -> Path:
    """A run folder as ``headforge avatar`` writes it, small: metrics.json, pictures, renders/, checkpoints/."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(METRICS, indent=1))
    (folder / "contact_sheet.png").write_bytes(png_bytes(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)))
    (folder / "turntable.gif").write_bytes(gif_bytes([rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                                                      for _ in range(3)]))
    (folder / "expressions_sheet.png").write_bytes(png_bytes(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    (folder / "aaa_extra.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    (folder / "renders").mkdir()
    (folder / "renders" / "test_000.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    (folder / "checkpoints").mkdir()
    if glb is not None:
        (folder / "checkpoints" / "a.glb").write_bytes(glb)  # skipped: under checkpoints/
        (folder / "export").mkdir()
        (folder / "export" / "head.glb").write_bytes(glb)
    return folder
