"""Load a FLAME head model from the user's own file as a `HeadRig`.

**Licence.** FLAME (MPI for Intelligent Systems, https://flame.is.tue.mpg.de) is licensed for non-commercial
use only. headforge never ships, downloads or converts it: :func:`load_flame` reads only a model file the user
brings (``generic_model.pkl`` of FLAME 2020, or ``flame2023.pkl``), and what is built from it stays under the
FLAME licence (``HeadRig.licence`` says so).

Layout (public facts about the file, no FLAME code): a Python-2-era pickle of a dict with ``v_template``
[V, 3], ``f`` [F, 3], ``shapedirs`` [V, 3, 300 + E] (300 identity then E = 100 expression components, in metres
per unit coefficient), ``posedirs`` [V, 3, 36] (pose correctives: 4 non-root joints x 9 entries of R - I),
``J_regressor`` [5, V] (often a scipy sparse matrix), ``weights`` [V, 5], ``kintree_table`` [2, 5] (joints
global, neck, jaw, eye, eye; neck's parent is global, the others' is neck) and optionally ``vt`` / ``ft``.
Some arrays are chumpy objects. Metres, y up, the face toward +z, +x the subject's left.

Reading without chumpy and without running the file: a restricted unpickler (:class:`_FlameUnpickler`) allows
only numpy's array/scalar rebuilders, scipy sparse matrices (rebuilt by a stand-in that keeps their arrays)
and chumpy classes (a stand-in that keeps the array in its ``x`` field, or ``a`` for a one-operand op); any
other global (``os.system``, ...) is refused before it is called.

Joint mapping (FLAME's 5 joints onto root, neck, head, jaw, left_eye, right_eye): root = FLAME's global joint,
**head = FLAME's neck joint** (it turns the head: its weights are the head's), jaw = jaw, and the eyes by the
side their regressed centre lies on (+x is left). headforge's neck has no FLAME counterpart: it sits at the
head joint with zero weight, so a FLAME pose (global, neck, jaw, eyes) is exactly the headforge pose
(root, 0, head, jaw, eyes); a neck rotation only composes with the head's about the same point. Regions come
from the weights (eyes: eye weight > 0.5; neck: global weight > 0.5; the rest face skin); FLAME's separate
mask file is not read. The ARKit rows start missing: :func:`fit_arkit_map` fits them from a reference rig.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headforge.errors import InputError, MeshError
from headforge.geometry.head_frame import HeadFrameSpec, Units, head_frame_transform
from headforge.geometry.rotations import umeyama
from headforge.io.files import read_bytes, read_npz
from headforge.representations.rig.arkit import NUM_ARKIT
from headforge.representations.rig.deform import landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region

FLAME_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
NUM_FLAME_IDENTITY = 300  # shapedirs[..., :300] are identity, the rest expression components
FLAME_PARENTS = (0, 1, 1, 1)  # parents of FLAME joints 1..4 (neck <- global; jaw, eyes <- neck)
SUM_TOLERANCE = 1e-3  # joint-regressor / weight rows must sum to 1 within this (then renormalised)
LICENCE = ("FLAME licence (non-commercial; MPI-IS, https://flame.is.tue.mpg.de): read from the user's own file, "
           "never shipped or downloaded by headforge")
FIX = ("pass your own, unmodified FLAME model file (generic_model.pkl of FLAME 2020, or flame2023.pkl) from "
       "https://flame.is.tue.mpg.de, downloaded after accepting its licence")


# ---------------------------------------------------------------------------------------------- unpickling
class _Refused(Exception):
    """The pickle names a global outside the allow-list (it is never imported or called)."""


class _ChumpyArray:
    """Stand-in for a chumpy object: keeps the ndarray of its ``x`` field (or ``a`` of a one-operand op)."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        d = state if isinstance(state, dict) else {}
        x = d.get("x")
        if x is None and "b" not in d:
            x = d.get("a")
        if isinstance(x, _ChumpyArray):
            x = x.array
        self.array = x if isinstance(x, np.ndarray) else None


class _SparseMatrix:
    """Stand-in for a scipy sparse matrix: keeps its state dict and rebuilds the dense array with numpy."""

    fmt = ""
    state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    def dense(self) -> np.ndarray | None:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        data = s.get("data")
        if not (isinstance(shape, tuple) and len(shape) == 2 and isinstance(data, np.ndarray)):
            return None
        out = np.zeros(shape, np.float64)
        if self.fmt in ("csc", "csr"):
            indptr, indices = s.get("indptr"), s.get("indices")
            if not (isinstance(indptr, np.ndarray) and isinstance(indices, np.ndarray)):
                return None
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if self.fmt == "csc" else (major, indices)
        else:  # coo: row/col (old scipy) or coords (new)
            rows, cols = s.get("coords", (s.get("row"), s.get("col")))
        try:
            np.add.at(out, (np.asarray(rows, np.int64), np.asarray(cols, np.int64)), data)
        except (ValueError, IndexError, TypeError):  # indices that do not fit the shape: unreadable
            return None
        return out


_SPARSE = {f"{fmt}_{kind}": type(f"_Sparse_{fmt}", (_SparseMatrix,), {"fmt": fmt})
           for fmt in ("csc", "csr", "coo") for kind in ("matrix", "array")}
_STAND_INS = (_ChumpyArray, *_SPARSE.values())


def _reconstructor(cls, base, state):  # copyreg._reconstructor for protocol 0/1 pickles, stand-ins only
    if base is not object or cls not in _STAND_INS:
        raise _Refused(f"copyreg._reconstructor({getattr(cls, '__name__', cls)!r}, ...)")
    return object.__new__(cls)


def _latin1_bytes(text, encoding):  # _codecs.encode as python 3 writes bytes into protocol 0-2 pickles
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise _Refused(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


_ALLOWED = {("numpy", "ndarray"): np.ndarray, ("_codecs", "encode"): _latin1_bytes, ("numpy", "dtype"): np.dtype,
            ("copyreg", "_reconstructor"): _reconstructor, ("builtins", "object"): object,
            ("copy_reg", "_reconstructor"): _reconstructor, ("__builtin__", "object"): object}  # python 2 names
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = np.ndarray(0).__reduce__()[0]
    _ALLOWED[(_mod, "scalar")] = np.float64(0).__reduce__()[0]


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name in _SPARSE:
            return _SPARSE[name]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _Refused(f"{module}.{name}")


_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                UnicodeDecodeError, OverflowError, MemoryError, RecursionError)


def read_flame_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The FLAME file's arrays (chumpy and sparse stand-ins made dense numpy), refusing any other object."""
    path = Path(path)
    raw = read_bytes(path, "FLAME model file", fix=FIX)  # missing, a folder, a loop, empty: InputError
    try:
        obj = _FlameUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as e:
        raise InputError(f"the file asks for {e}, which a FLAME model never holds; refused without running it",
                         path=path, fix=FIX) from e
    except _READ_ERRORS as e:
        raise InputError(f"not a readable FLAME pickle ({type(e).__name__}: {e})", path=path, fix=FIX) from e
    if not isinstance(obj, dict):
        raise InputError(f"the pickle holds a {type(obj).__name__}, not FLAME's dict of arrays", path=path, fix=FIX)
    missing = [k for k in FLAME_KEYS if k not in obj]
    if missing:
        raise InputError(f"the FLAME dict lacks the keys {missing} (it has {sorted(map(str, obj))})",
                         path=path, fix=FIX)
    return {k: _as_array(k, obj[k], path) for k in (*FLAME_KEYS, "vt", "ft") if k in obj}


def _as_array(key: str, value, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyArray):
        if value.array is None:
            raise InputError(f"{key!r} is a chumpy object holding no plain array (an expression of several terms)",
                             path=path, fix=f"{FIX}; or re-save it with numpy arrays (np.array(model[key]))")
        return value.array
    if isinstance(value, _SparseMatrix):
        dense = value.dense()
        if dense is None:
            raise InputError(f"{key!r} is a sparse matrix whose state cannot be read", path=path, fix=FIX)
        return dense
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    raise InputError(f"{key!r} is a {type(value).__name__}, not an array", path=path, fix=FIX)


# ---------------------------------------------------------------------------------------------- rig
def load_flame(path: str | Path, uv_path: str | Path | None = None) -> HeadRig:
    """FLAME from the user's own model file (never shipped: FLAME licence, non-commercial) as a HeadRig.

    300 identity components, the E = 100 expression components (``expression_components``), the pose
    correctives (``pose_correctives``), the mapped skeleton and weights. The 52 ARKit rows start missing;
    ``fit_arkit_map`` + ``with_arkit_map`` fill them. UVs come from the file's ``vt``/``ft`` or
    from ``uv_path`` (an ``.npz`` with ``vt`` [T, 2] and ``ft`` [F, 3], e.g. FLAME's texture-space file);
    without either every corner is (0, 0).
    """
    path = Path(path)
    a = read_flame_pickle(path)
    v = a["v_template"].astype(np.float64)
    V = v.shape[0] if v.ndim == 2 and v.shape[1] == 3 else 0
    S = a["shapedirs"].shape[2] if a["shapedirs"].ndim == 3 else 0
    want = {"v_template": (V, 3), "f": (None, 3), "shapedirs": (V, 3, None), "posedirs": (V, 3, 36),
            "J_regressor": (5, V), "weights": (V, 5), "kintree_table": (2, 5)}
    for key, shape in want.items():
        arr = a[key]
        if V < 4 or arr.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, arr.shape,
                                                                                           strict=True)):
            w = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise InputError(f"{key!r} has shape {list(arr.shape)}, expected {w} for V = {V} vertices",
                             path=path, fix=FIX)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{key!r} holds {arr.dtype} values, not numbers", path=path, fix=FIX)
        if not np.isfinite(arr.astype(np.float64)).all():
            raise InputError(f"{key!r} has non-finite values", path=path, fix=FIX)
    if S <= NUM_FLAME_IDENTITY:
        raise InputError(f"'shapedirs' has {S} components; FLAME has {NUM_FLAME_IDENTITY} identity + expression",
                         path=path, fix=FIX)
    faces = a["f"].astype(np.int64)
    if faces.size == 0 or faces.min() < 0 or faces.max() >= V:
        raise InputError("'f' indexes vertices that do not exist", path=path, fix=FIX)
    parents = tuple(int(p) for p in a["kintree_table"][0, 1:])
    if parents != FLAME_PARENTS:
        raise InputError(f"kintree_table parents {parents} are not FLAME's {FLAME_PARENTS}", path=path, fix=FIX)
    regressor = _rows_summing_to_one("J_regressor", a["J_regressor"].astype(np.float64), path)
    weights = _rows_summing_to_one("weights", a["weights"].astype(np.float64), path)
    if (weights < -1e-6).any():
        raise InputError("'weights' has negative skinning weights", path=path, fix=FIX)
    # FLAME is already metres, y up, face +z: the head frame is a translation (no rotation, no scale)
    try:
        T = head_frame_transform(torch.from_numpy(v), HeadFrameSpec(units=Units.M)).numpy()
    except MeshError as e:
        raise InputError(f"'v_template' is not an upright head ({e})", path=path, fix=FIX) from e
    template = v + T[:3, 3]
    dirs = a["shapedirs"].astype(np.float64).transpose(2, 0, 1)  # [S, V, 3]
    joints = regressor @ template  # [5, 3]
    left, right = (3, 4) if joints[3, 0] >= joints[4, 0] else (4, 3)  # +x is the subject's left
    order = (0, 1, 1, 2, left, right)  # FLAME joint feeding root, neck, head, jaw, left_eye, right_eye
    J = len(order)
    hf_regressor = regressor[list(order)]  # neck sits at the head joint
    hf_weights = weights[:, list(order)]
    hf_weights[:, 1] = 0.0  # the neck has no FLAME counterpart: no vertex follows it alone
    pd = a["posedirs"].astype(np.float64).transpose(2, 0, 1).reshape(4, 9, V, 3)  # FLAME joints 1..4
    correctives = np.zeros((J - 1, 9, V, 3))
    for hf_j, flame_j in enumerate(order[1:], start=1):
        if hf_j != 1:  # the neck (index 1) keeps zeros
            correctives[hf_j - 1] = pd[flame_j - 1]
    names = (Region.FACE_SKIN, Region.NECK, Region.EYES)
    regions = np.zeros(V, np.int64)
    regions[weights[:, 0] > 0.5] = 1
    regions[np.maximum(weights[:, 3], weights[:, 4]) > 0.5] = 2
    uvs = _uvs(a, faces, path, uv_path)
    f32 = torch.float32
    return HeadRig(
        template=torch.tensor(template, dtype=f32), faces=torch.from_numpy(faces), uvs=torch.tensor(uvs, dtype=f32),
        regions=torch.from_numpy(regions), region_names=names,
        expression_basis=torch.zeros(NUM_ARKIT, V, 3, dtype=f32),
        expression_present=torch.zeros(NUM_ARKIT, dtype=torch.bool),
        joint_regressor=torch.tensor(hf_regressor, dtype=f32), skin_weights=torch.tensor(hf_weights, dtype=f32),
        identity_basis=torch.tensor(dirs[:NUM_FLAME_IDENTITY], dtype=f32),
        expression_components=torch.tensor(dirs[NUM_FLAME_IDENTITY:], dtype=f32),
        pose_correctives=torch.tensor(correctives, dtype=f32),
        source=f"FLAME {path}", licence=LICENCE)


def _rows_summing_to_one(key: str, m: np.ndarray, path: Path) -> np.ndarray:
    sums = m.sum(1)
    if np.abs(sums - 1).max() > SUM_TOLERANCE:
        raise InputError(f"{key!r} rows must sum to 1 (they sum to {np.round(sums[:6], 4).tolist()}...)",
                         path=path, fix=FIX)
    return m / sums[:, None]


def _uvs(a: dict[str, np.ndarray], faces: np.ndarray, path: Path, uv_path: str | Path | None) -> np.ndarray:
    """Per-corner UVs [F, 3, 2] from the file's vt/ft, else from uv_path, else zeros."""
    src = path
    if uv_path is not None:
        src = Path(uv_path)
        uv = read_npz(src, "FLAME UV file", ("vt", "ft"),
                      fix="pass FLAME's texture-space .npz (it holds vt [T, 2] and ft [F, 3])")
        vt, ft = uv["vt"], uv["ft"]
    elif "vt" in a and "ft" in a:
        vt, ft = a["vt"], a["ft"]
    else:
        return np.zeros((len(faces), 3, 2))
    vt, ft = np.asarray(vt, np.float64), np.asarray(ft, np.int64)
    if vt.ndim != 2 or vt.shape[1] != 2 or ft.shape != faces.shape or ft.min() < 0 or ft.max() >= len(vt):
        raise InputError(f"UVs do not fit the mesh: vt {list(vt.shape)}, ft {list(ft.shape)} for "
                         f"{len(faces)} faces", path=src, fix="use the UV file made for this FLAME version")
    return vt[ft]



# ---------------------------------------------------------------------------------------------- ARKit map
@dataclass(frozen=True, eq=False)
class ArkitMapFit:
    """A linear map from the 52 ARKit weights to a rig's own expression coefficients, and how well it fits."""

    arkit_map: Tensor  # [52, E] expression coefficients per unit ARKit weight (zero rows where not present)
    present: Tensor  # [52] bool: the shapes the reference rig has
    residual_mm: Tensor  # [52] mean |mapped - reference displacement| over the matched vertices, millimetres
    target_mm: Tensor  # [52] mean |reference displacement| over the same vertices, millimetres (the scale)
    matched: Tensor  # [V] bool: non-eyeball vertices with a reference vertex within max_distance


def fit_arkit_map(rig: HeadRig, reference: HeadRig, *, max_distance: float = 0.005,
                  ridge: float = 1e-4) -> ArkitMapFit:
    """Fit ARKit weights -> ``rig.expression_components`` coefficients from a reference rig with ARKit shapes.

    1. Align the reference's neutral to the rig's: an Umeyama similarity between their iBUG-68 landmarks when
       both embed them, else the identity (both are in the head frame already).
    2. Correspond each rig vertex to its nearest aligned reference vertex; keep those within ``max_distance``
       metres, except the rig's eyeballs, which its eye joints move (``matched``).
    3. Per ARKit shape k, the target is the reference's displacement (rotated and scaled by the similarity) at
       the corresponding vertices; solve min |C w_k - d_k|^2 + lam |w_k|^2 over the E components, with
       lam = ridge * trace(C^T C) / E (all 52 at once, closed form, float64).
    The residual is reported per shape (``residual_mm`` against ``target_mm``); shapes the reference lacks
    stay zero and not present. A real FLAME file needs the same call with the ICT-FaceKit rig.
    """
    if rig.expression_components is None:
        raise ValueError(f"fit_arkit_map: the rig ({rig.source}) has no expression_components to map onto")
    D = torch.float64
    s, R, t = torch.ones((), dtype=D), torch.eye(3, dtype=D), torch.zeros(3, dtype=D)
    lm = LandmarkSet.IBUG_68
    if lm in rig.landmarks and lm in reference.landmarks:
        src = landmarks(reference, reference.template.double()[None], lm)[0]
        dst = landmarks(rig, rig.template.double()[None], lm)[0]
        s, R, t = umeyama(src, dst)
    ref_v = s * reference.template.double() @ R.T + t  # [Vr, 3]
    v = rig.template.double()
    dist, nearest = torch.full((len(v),), torch.inf, dtype=D), torch.zeros(len(v), dtype=torch.int64)
    for start in range(0, len(ref_v), 4096):  # chunked nearest neighbour: [V, 4096] at a time
        d, i = torch.cdist(v, ref_v[start:start + 4096]).min(1)
        better = d < dist
        dist, nearest = torch.where(better, d, dist), torch.where(better, i + start, nearest)
    matched = dist <= max_distance
    if Region.EYES in rig.region_names:  # eyeballs turn with the eye joints: no component should chase them
        matched &= ~rig.region_mask(Region.EYES)
    if 3 * int(matched.sum()) < rig.num_components:  # fewer equations than unknowns: any residual is meaningless
        raise InputError(f"only {int(matched.sum())} vertices of {rig.source} lie within {max_distance * 1000:.1f} "
                         f"mm of {reference.source}: too few to determine {rig.num_components} components",
                         fix="fit against a head rig of the same head frame (e.g. the ICT-FaceKit rig), or raise "
                             "max_distance")
    idx = nearest[matched]
    C = rig.expression_components.double()[:, matched].reshape(rig.num_components, -1).T  # [3M, E]
    targets = s * reference.expression_basis.double()[:, idx] @ R.T  # [52, M, 3]
    Dm = targets.reshape(NUM_ARKIT, -1).T  # [3M, 52]
    G = C.T @ C
    lam = ridge * torch.trace(G) / G.shape[0]
    W = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=D), C.T @ Dm)  # [E, 52]
    present = reference.expression_present.clone()
    W[:, ~present] = 0
    err = (C @ W - Dm).T.reshape(NUM_ARKIT, -1, 3).norm(dim=-1).mean(1) * 1000
    size = targets.norm(dim=-1).mean(1) * 1000
    return ArkitMapFit(W.T.contiguous(), present, err, size, matched)


def with_arkit_map(rig: HeadRig, fit: ArkitMapFit) -> HeadRig:
    """The rig with its ARKit rows set to ``arkit_map @ expression_components`` (missing rows stay zero)."""
    if rig.expression_components is None or fit.arkit_map.shape != (NUM_ARKIT, rig.num_components):
        raise ValueError(f"with_arkit_map: the map {list(fit.arkit_map.shape)} does not fit the rig's "
                         f"{rig.num_components} expression components")
    basis = torch.einsum("ae,evc->avc", fit.arkit_map.to(rig.template.dtype), rig.expression_components)
    basis = basis * fit.present[:, None, None]
    return replace(rig, expression_basis=basis, expression_present=fit.present.clone())
