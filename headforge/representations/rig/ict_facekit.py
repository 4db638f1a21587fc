"""Load ICT-FaceKit (MIT, USC ICT) as a `HeadRig`, from its own folder or from the packed copy.

Two layouts, detected from the folder's files (:func:`detect_layout`):
- **kit**: the kit's ``FaceXModel/`` folder: ``generic_neutral_mesh.obj``, ``vertex_indices.json`` (its
  ``expressions`` list), one full-shape OBJ per expression (``jawOpen.obj``, ...) and per identity component
  (``identity000.obj``, ``identity001.obj``, ... consecutive). A shape's delta is its OBJ minus the neutral.
- **packed**: ``generic_neutral_mesh.obj``, ``vertex_indices.json`` and ``ict_facekit_shapes.npz`` with
  ``neutral`` [V, 3], ``expression_deltas`` [N, V, 3] + ``expression_names`` [N], ``identity_deltas`` [K, V, 3]
  + ``identity_names`` [K] (the shared test copy).
The kit is in centimetres, y up, face toward +z, +x the subject's left; the rig is moved into the head frame
(metres, origin at the head centre measured on the skin) by ``geometry.head_frame``. Regions, joints and
skinning weights come from the kit's documented vertex ranges by the rules in ``ict_skeleton.py``.
"""

from __future__ import annotations

import zipfile
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from headforge.errors import InputError
from headforge.geometry.head_frame import HeadFrameSpec, Units, head_frame_transform
from headforge.io.files import read_json, read_text
from headforge.representations.rig.arkit import ARKIT_NAMES, ICT_TO_ARKIT, ArkitShape, ict_expression_names
from headforge.representations.rig.head_rig import HeadRig, LandmarkEmbedding, LandmarkSet
from headforge.representations.rig.ict_skeleton import ICT_NUM_VERTICES, SKIN, ict_skeleton

NEUTRAL_OBJ = "generic_neutral_mesh.obj"
INDICES_JSON = "vertex_indices.json"
PACKED_NPZ = "ict_facekit_shapes.npz"
PACKED_KEYS = ("neutral", "expression_deltas", "expression_names", "identity_deltas", "identity_names")
LICENCE = ("MIT: ICT-FaceKit, Copyright (c) 2020 USC Institute for Creative Technologies; read from the user's "
           "folder, never shipped with headforge")
KIT_URL = "https://github.com/ICT-VGL/ICT-FaceKit (its FaceXModel folder)"


class IctLayout(StrEnum):
    KIT = "kit"  # the kit's own FaceXModel folder: one OBJ per shape
    PACKED = "packed"  # neutral OBJ + vertex_indices.json + ict_facekit_shapes.npz


def detect_layout(folder: str | Path) -> IctLayout:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("ICT-FaceKit path is not a folder", path=folder,
                         fix=f"pass the folder holding {NEUTRAL_OBJ} (the kit's FaceXModel folder, {KIT_URL})")
    for name in (NEUTRAL_OBJ, INDICES_JSON):
        if not (folder / name).is_file():
            raise InputError(f"ICT-FaceKit folder has no {name}", path=folder / name,
                             fix=f"point at the kit's FaceXModel folder ({KIT_URL}), which holds {NEUTRAL_OBJ}, "
                                 f"{INDICES_JSON} and the shape OBJs")
    if (folder / PACKED_NPZ).is_file():
        return IctLayout.PACKED
    if (folder / "jawOpen.obj").is_file():
        return IctLayout.KIT
    raise InputError(f"ICT-FaceKit folder has neither the kit's shape OBJs (jawOpen.obj, ...) nor {PACKED_NPZ}",
                     path=folder, fix=f"download the full FaceXModel folder ({KIT_URL}), with its expression "
                                      "and identity OBJs")


def load_ict_facekit(folder: str | Path) -> HeadRig:
    """ICT-FaceKit as a HeadRig: 52 ARKit rows (tongueOut missing), 100 identity components, skeleton, iBUG-68."""
    folder = Path(folder)
    layout = detect_layout(folder)
    neutral_obj, faces, uvs = read_obj_topology(folder / NEUTRAL_OBJ)
    indices = _read_indices(folder / INDICES_JSON)
    if neutral_obj.shape[0] != ICT_NUM_VERTICES:
        raise InputError(f"{NEUTRAL_OBJ} has {neutral_obj.shape[0]} vertices, not the kit's {ICT_NUM_VERTICES}",
                         path=folder / NEUTRAL_OBJ,
                         fix="use the kit's unmodified generic_neutral_mesh.obj (its region ranges need that topology)")
    if layout is IctLayout.PACKED:
        neutral, expr, ident = _read_packed(folder / PACKED_NPZ, neutral_obj)
    else:
        neutral, expr, ident = _read_kit(folder, neutral_obj, indices)
    return _build_rig(neutral, expr, ident, faces, uvs, indices, folder, layout)


# ---------------------------------------------------------------------------------------------- files
def read_obj_topology(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OBJ -> vertices [V, 3] float64, triangles [F, 3] int64 (polygons fanned), per-corner uvs [F, 3, 2]."""
    text = _read_text(path)
    verts, uvs, tri_v, tri_t = [], [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "vt":
                uvs.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f":
                corners = [tok.split("/") for tok in parts[1:]]
                vi = [int(c[0]) - 1 for c in corners]
                ti = [int(c[1]) - 1 for c in corners]  # the kit's faces all carry UVs
                if len(vi) < 3 or min(vi) < 0 or min(ti) < 0:
                    raise ValueError("a face needs 3+ corners with positive v/vt indices")
                for k in range(1, len(vi) - 1):
                    tri_v.append((vi[0], vi[k], vi[k + 1]))
                    tri_t.append((ti[0], ti[k], ti[k + 1]))
        except (ValueError, IndexError) as e:
            raise InputError(f"line {lineno} is not a valid OBJ v/vt/f line with UVs ({e}): {line[:60]!r}",
                             path=path, fix="restore the kit's original OBJ file") from e
    if not verts or not tri_v or not uvs:
        raise InputError("OBJ has no vertices, faces or UVs", path=path, fix="restore the kit's original OBJ file")
    v, uv = np.asarray(verts, np.float64), np.asarray(uvs, np.float64)
    fv, ft = np.asarray(tri_v, np.int64), np.asarray(tri_t, np.int64)
    if fv.max() >= len(v) or ft.max() >= len(uv):
        raise InputError("OBJ faces index vertices or UVs that do not exist", path=path,
                         fix="restore the kit's original OBJ file")
    return v, fv, uv[ft]


def read_obj_positions(path: Path) -> np.ndarray:
    """Only the ``v`` lines of an OBJ -> [V, 3] float64 (shape OBJs share the neutral's topology)."""
    rows = [line[2:] for line in _read_text(path).splitlines() if line.startswith("v ")]
    try:
        v = np.array(" ".join(rows).split(), dtype=np.float64)
    except ValueError as e:
        raise InputError(f"OBJ has a malformed vertex line ({e})", path=path, fix="restore the kit's file") from e
    if v.size != 3 * len(rows):
        raise InputError("OBJ vertex lines must have exactly x y z", path=path, fix="restore the kit's file")
    return v.reshape(-1, 3)


def _read_text(path: Path) -> str:
    return read_text(path, "ICT-FaceKit file", fix="the ICT-FaceKit folder is incomplete or damaged; copy the kit's "
                     f"whole FaceXModel folder ({KIT_URL})")


def _read_indices(path: Path) -> dict:
    data = read_json(path, "vertex_indices.json", fix="restore the kit's vertex_indices.json")
    for key in ("expressions", "idx_to_landmark_verts"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise InputError(f"vertex_indices.json has no {key!r} list", path=path,
                             fix="restore the kit's vertex_indices.json")
    if len(data["idx_to_landmark_verts"]) != 68:
        raise InputError(f"idx_to_landmark_verts has {len(data['idx_to_landmark_verts'])} entries, not 68",
                         path=path, fix="restore the kit's vertex_indices.json")
    return data


def _read_packed(path: Path, neutral_obj: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    fix = "rebuild ict_facekit_shapes.npz from the kit (keys: " + ", ".join(PACKED_KEYS) + "; see its README)"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PACKED_KEYS if k not in z.files]
            if missing:
                raise InputError(f"npz lacks the keys {missing} (it has {sorted(z.files)})", path=path, fix=fix)
            data = {k: z[k] for k in PACKED_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read npz ({e})", path=path, fix=fix) from e
    V = ICT_NUM_VERTICES
    neutral = data["neutral"].astype(np.float64)
    def stack_ok(deltas: str, names: str) -> bool:  # [N, V, 3] with one name per shape
        a = data[deltas]
        return a.ndim == 3 and a.shape[1:] == (V, 3) and len(data[names]) == a.shape[0]

    checks = [("neutral", neutral.shape == (V, 3)),
              ("expression_deltas", stack_ok("expression_deltas", "expression_names")),
              ("identity_deltas", stack_ok("identity_deltas", "identity_names"))]
    for key, ok in checks:
        if not ok:
            raise InputError(f"{key} has shape {list(data[key].shape)}; expected [{V}, 3] per shape with one name each",
                             path=path, fix=fix)
    gap = float(np.abs(neutral - neutral_obj).max())
    if gap > 1e-3:
        raise InputError(f"npz neutral differs from {NEUTRAL_OBJ} by up to {gap:.3g} cm",
                         path=path, fix=f"pack the npz from the same kit as {NEUTRAL_OBJ}")
    names = [str(n) for n in data["expression_names"]]
    expr = {n: data["expression_deltas"][i].astype(np.float64) for i, n in enumerate(names)}
    _require_names(expr, path)
    return neutral, expr, data["identity_deltas"].astype(np.float64)


def _read_kit(folder: Path, neutral: np.ndarray, indices: dict) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    listed = {str(n) for n in indices["expressions"]}
    lacking = sorted(set(ict_expression_names()) - listed)
    if lacking:
        raise InputError(f"vertex_indices.json does not list the expressions {lacking}", path=folder / INDICES_JSON,
                         fix="restore the kit's vertex_indices.json")
    expr = {n: _shape_delta(folder / f"{n}.obj", neutral) for n in ict_expression_names()}
    ident = []
    while (folder / f"identity{len(ident):03d}.obj").is_file():
        ident.append(_shape_delta(folder / f"identity{len(ident):03d}.obj", neutral))
    if not ident:
        raise InputError("ICT-FaceKit folder has no identity shapes", path=folder / "identity000.obj",
                         fix=f"copy the kit's identity000.obj, identity001.obj, ... ({KIT_URL})")
    return neutral, expr, np.stack(ident)


def _shape_delta(path: Path, neutral: np.ndarray) -> np.ndarray:
    v = read_obj_positions(path)
    if v.shape != neutral.shape:
        raise InputError(f"shape OBJ has {len(v)} vertices; the neutral has {len(neutral)}", path=path,
                         fix="restore the kit's file (every shape shares the neutral's topology)")
    return v - neutral


def _require_names(expr: dict[str, np.ndarray], path: Path) -> None:
    lacking = sorted(set(ict_expression_names()) - set(expr))
    if lacking:
        raise InputError(f"the expressions {lacking} are missing", path=path,
                         fix="rebuild the file from the complete kit")


# ---------------------------------------------------------------------------------------------- rig
def _build_rig(neutral: np.ndarray, expr: dict[str, np.ndarray], ident: np.ndarray, faces: np.ndarray,
               uvs: np.ndarray, indices: dict, folder: Path, layout: IctLayout) -> HeadRig:
    shapes_file = folder / (PACKED_NPZ if layout is IctLayout.PACKED else "{name}.obj")
    for what, arr in (("neutral", neutral), ("identity shapes", ident), *expr.items()):
        if not np.isfinite(arr).all():
            raise InputError(f"ICT-FaceKit {what} has non-finite values", path=shapes_file,
                             fix="restore the kit's files")
    skin = torch.from_numpy(neutral[SKIN])
    T = head_frame_transform(skin, HeadFrameSpec(units=Units.CM))  # [4, 4] float64 similarity
    A, t = T[:3, :3].numpy(), T[:3, 3].numpy()
    template = neutral @ A.T + t
    basis = np.zeros((len(ARKIT_NAMES), *neutral.shape))
    present = np.zeros(len(ARKIT_NAMES), bool)
    for k, shape in enumerate(ArkitShape):
        names = ICT_TO_ARKIT[shape]
        for n in names:
            basis[k] += expr[n] @ A.T
        present[k] = bool(names)
    ident_m = ident @ A.T
    jaw_delta = basis[ARKIT_NAMES.index(ArkitShape.JAW_OPEN)]
    jaw_file = folder / (PACKED_NPZ if layout is IctLayout.PACKED else "jawOpen.obj")
    regions, region_names, regressor, weights = ict_skeleton(template, jaw_delta, jaw_file)
    tri_of_vertex = np.full(len(template), -1, np.int64)
    for corner in range(3):  # a face holding each vertex (the last one written wins; any is exact)
        tri_of_vertex[faces[:, corner]] = np.arange(len(faces))
    lm = np.asarray(indices["idx_to_landmark_verts"], np.int64)
    if lm.min() < 0 or lm.max() >= len(template) or (tri_of_vertex[lm] < 0).any():
        raise InputError("idx_to_landmark_verts names vertices outside the mesh's faces", path=folder / INDICES_JSON,
                         fix="restore the kit's vertex_indices.json")
    tri = tri_of_vertex[lm]
    bary = (faces[tri] == lm[:, None]).astype(np.float64)  # one-hot on the landmark's corner
    f32 = torch.float32
    return HeadRig(
        template=torch.tensor(template, dtype=f32), faces=torch.from_numpy(faces), uvs=torch.tensor(uvs, dtype=f32),
        regions=regions, region_names=region_names, expression_basis=torch.tensor(basis, dtype=f32),
        expression_present=torch.from_numpy(present), joint_regressor=regressor.to(f32), skin_weights=weights.to(f32),
        identity_basis=torch.tensor(ident_m, dtype=f32),
        landmarks={LandmarkSet.IBUG_68: LandmarkEmbedding(torch.from_numpy(tri), torch.tensor(bary, dtype=f32))},
        source=f"ICT-FaceKit ({layout} layout) {folder}", licence=LICENCE)
