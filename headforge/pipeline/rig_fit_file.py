"""``rig_fit.json``: a fitted rig's parameters as a file (written last, only when the fit finished), and back.

Layout (``format`` = ``headforge.rig_fit``, ``version`` = 1)::

    rig          {"spec": "builtin" | "ict-facekit:PATH" | "flame:PATH", "source", "licence", "num_vertices",
                  "num_identity"}
    similarity   {"scale", "rotation" (3 x 3 rows), "translation" (metres)}: world = s R x_rig + t
    identity     [K] coefficients of the rig's identity basis
    offsets      null, or the name of an .npy beside the json: [V, 3] float32, rig frame, metres
    landmark_set "mediapipe478"
    frames       [{"frame": timestep, "expression": {ARKit name: weight} (all 52),
                   "pose": {joint name: axis-angle [3] radians} (all joints), "views": [names]}]
    metrics      the fit's headline scores (also in metrics.json)

A reader checks every key, length, name and finite value and names the file and the key on error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headforge.errors import InputError
from headforge.io.files import read_json
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import JOINTS, LandmarkSet
from headforge.stages.rig_params import RigParams, Similarity

FORMAT = "headforge.rig_fit"
VERSION = 1
OFFSETS_FILE = "rig_fit_offsets.npy"
TEXTURE_FILE = "texture.png"  # the baked texture, atlas layout (fit-rig and avatar folders)
D = torch.float64


@dataclass(frozen=True, eq=False)
class RigFitRecord:
    """What ``rig_fit.json`` holds: enough to rebuild the fitted vertices with the same rig."""

    rig_spec: str
    rig_source: str
    rig_licence: str
    num_vertices: int
    params: RigParams
    frames: tuple[int, ...]
    views: tuple[tuple[str, ...], ...]
    landmark_set: LandmarkSet
    metrics: dict


def record_json(rec: RigFitRecord, offsets_file: str | None) -> dict:
    p = rec.params
    sim = p.similarity
    frames = []
    for b, t in enumerate(rec.frames):
        frames.append({"frame": t, "views": list(rec.views[b]),
                       "expression": {n: float(w) for n, w in zip(ARKIT_NAMES, p.expression[b].tolist(), strict=True)},
                       "pose": {str(j): [float(v) for v in p.pose.rotations[b, i].tolist()]
                                for i, j in enumerate(JOINTS)}})
    return {"format": FORMAT, "version": VERSION,
            "rig": {"spec": rec.rig_spec, "source": rec.rig_source, "licence": rec.rig_licence,
                    "num_vertices": rec.num_vertices, "num_identity": int(p.identity.numel())},
            "similarity": {"scale": float(sim.scale), "rotation": sim.rotation.double().tolist(),
                           "translation": sim.translation.double().tolist()},
            "identity": p.identity.double().tolist(), "offsets": offsets_file,
            "landmark_set": str(rec.landmark_set), "frames": frames, "metrics": rec.metrics}


def write_rig_fit(rec: RigFitRecord, folder: Path) -> Path:
    """Write ``rig_fit.json`` (and the offsets .npy) into ``folder`` (a staging folder: the caller's job
    makes it appear atomically)."""
    offsets = None
    if rec.params.offsets is not None:
        np.save(folder / OFFSETS_FILE, rec.params.offsets.float().numpy())
        offsets = OFFSETS_FILE
    path = folder / "rig_fit.json"
    path.write_text(json.dumps(record_json(rec, offsets), indent=1) + "\n")
    return path


def _bad(path: Path, key: str, problem: str) -> InputError:
    return InputError(f"{key}: {problem}", path=path,
                      fix="write the file with `headforge fit-rig` (or restore it); see pipeline/rig_fit_file.py")


def _numbers(path: Path, key: str, value, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.tensor(value, dtype=D)
    except (TypeError, ValueError):
        raise _bad(path, key, f"must be numbers of shape {list(shape)}") from None
    if tuple(t.shape) != shape:
        raise _bad(path, key, f"has shape {list(t.shape)}, expected {list(shape)}")
    if not bool(torch.isfinite(t).all()):
        raise _bad(path, key, "has non-finite values")
    return t


def read_rig_fit(path: str | Path) -> RigFitRecord:
    """Read and check a ``rig_fit.json`` (the offsets .npy beside it when named)."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(path, "format", f"is not {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise _bad(path, "version", f"{doc.get('version')!r} is not supported (this headforge reads {VERSION})")
    try:
        rig, sim, frames = doc["rig"], doc["similarity"], doc["frames"]
        K, V = int(rig["num_identity"]), int(rig["num_vertices"])
        scale = float(sim["scale"])
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(path, str(e).strip("'"), "is missing or malformed") from None
    if not (math.isfinite(scale) and scale > 0):
        raise _bad(path, "similarity.scale", f"{scale} must be a positive number")
    R = _numbers(path, "similarity.rotation", sim.get("rotation"), (3, 3))
    if not torch.allclose(R @ R.T, torch.eye(3, dtype=D), atol=1e-5) or float(torch.linalg.det(R)) <= 0:
        raise _bad(path, "similarity.rotation", "is not a rotation matrix")
    similarity = Similarity(torch.tensor(scale, dtype=D), R,
                            _numbers(path, "similarity.translation", sim.get("translation"), (3,)))
    identity = _numbers(path, "identity", doc.get("identity"), (K,))
    if not isinstance(frames, list) or not frames:
        raise _bad(path, "frames", "must be a non-empty list")
    expr, rots, steps, views = [], [], [], []
    for b, f in enumerate(frames):
        key = f"frames[{b}]"
        if not isinstance(f, dict) or not isinstance(f.get("expression"), dict) or not isinstance(f.get("pose"), dict):
            raise _bad(path, key, "needs 'expression' and 'pose' objects")
        names = set(f["expression"])
        if names != set(ARKIT_NAMES):
            extra, missing = sorted(names - set(ARKIT_NAMES)), sorted(set(ARKIT_NAMES) - names)
            raise _bad(path, f"{key}.expression", f"must name the 52 ARKit shapes (unknown {extra[:5]}, missing "
                                                  f"{missing[:5]})")
        e = _numbers(path, f"{key}.expression", [f["expression"][n] for n in ARKIT_NAMES], (len(ARKIT_NAMES),))
        if set(f["pose"]) != {str(j) for j in JOINTS}:
            raise _bad(path, f"{key}.pose", f"must name the joints {[str(j) for j in JOINTS]}")
        r = _numbers(path, f"{key}.pose", [f["pose"][str(j)] for j in JOINTS], (len(JOINTS), 3))
        expr.append(e)
        rots.append(r)
        steps.append(int(f.get("frame", b)))
        views.append(tuple(str(v) for v in f.get("views", [])))
    offsets = None
    if doc.get("offsets") is not None:
        npy = path.parent / str(doc["offsets"])
        try:
            arr = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the fit's offsets ({e})", path=npy,
                             fix="keep the .npy that fit-rig wrote beside rig_fit.json") from None
        offsets = _numbers(npy, "offsets", arr.tolist(), (V, 3))
    pose = RigPose(torch.stack(rots), torch.zeros(len(rots), 3, dtype=D))
    params = RigParams(similarity, identity, torch.stack(expr), pose, offsets)
    try:
        kind = LandmarkSet(doc.get("landmark_set", LandmarkSet.MEDIAPIPE_478))
    except ValueError:
        raise _bad(path, "landmark_set", f"{doc.get('landmark_set')!r} is not one of "
                                         f"{[str(k) for k in LandmarkSet]}") from None
    return RigFitRecord(str(rig.get("spec", "")), str(rig.get("source", "")), str(rig.get("licence", "")), V,
                        params, tuple(steps), tuple(views), kind, dict(doc.get("metrics") or {}))
