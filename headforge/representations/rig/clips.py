"""Animation clips: ARKit expression weights and joint rotations over time, and the files that hold them.

A :class:`Clip` is dense: one row per frame at ``fps`` frames per second, frame n at t = n / fps.
``weights`` [T, 52] float64 in ``ARKIT_NAMES`` order, in [0, 1]; ``rotations`` [T, J, 3] float64 axis-angle
radians per joint in ``JOINTS`` order (the rig's own pose convention, ``deform.RigPose``); the root stays zero
(a clip animates the face and the head on the neck, never the whole body).

Files (``read_clip`` tells them apart; the full format is in ``headforge/assets/clips/README.md``):

* keyframes, ``{"format": "headforge.clip", "version": 1, "fps": 30, "interpolation": "smooth", "keys": [{"t":
  0.0, "expression": {"jawOpen": 0.4}, "pose": {"head": [0, 20, 0]}}, ...]}``: seconds, ARKit names, joint
  names with axis-angle **degrees**; a name a key leaves out is 0 at that key; keys strictly increasing in t
  from t >= 0. Sampled at ``fps`` from t = 0 to the last key (before the first key its values hold). Between
  two keys each channel (a weight, a rotation component) moves linearly (``linear``) or with a cosine ease
  (``smooth``: s = (1 - cos(pi u)) / 2 of the linear fraction u), so values stay between the keys' values.
  Rotation vectors are interpolated component-wise: exact for turns about one fixed axis, which is what a
  hand-authored clip uses.
* dense frames, ``{"format": "headforge.clip_frames", "version": 1, "name", "fps", "source", "frames":
  [{"frame": n, "t": n / fps, "expression": {all 52}, "pose_rad": {joint: [x, y, z] radians}}]}``: what
  :func:`write_clip` writes (lossless: float64 round-trips through JSON) and what a rendered sequence stores as
  its ground truth (``expressions.json``).
* a MediaPipe face-tracking recording: a JSON list of frames, or ``{"fps": F, "frames": [...]}``, each frame a
  list of ``{"categoryName": name, "score": s}`` (the layout of FaceLandmarker's ``face_blendshapes``;
  ``category_name`` as the Python API spells it is accepted too). MediaPipe 0.10.21 reports 52 categories:
  ``_neutral`` (dropped here) and 51 ARKit names; it has no ``tongueOut`` (checked against the names compiled
  into its binary), which is then 0. A plain list has no frame rate: 30 fps is assumed
  (``clip_json.MEDIAPIPE_DEFAULT_FPS``).

``builtin:NAME`` names a clip shipped as package data (``headforge/assets/clips/NAME.json``), read through
``importlib.resources`` as ``config_io`` reads the presets: data, not an import of the assets layer.
Every malformed file is an ``InputError`` naming the file and the offending key (``clip_json.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from headforge.atomic import write_text
from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.clip_json import (
    CLIP_VERSION,
    FRAMES_FORMAT,
    Interpolation,
    parse_clip,
    sample_keys,
)
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import JOINTS, HeadRig

__all__ = ["BUILTIN_PREFIX", "Clip", "Interpolation", "builtin_clip_names", "check_clip_for_rig", "clip_document",
           "neutral_clip", "read_clip", "resample", "sample_keys", "write_clip"]

BUILTIN_PREFIX = "builtin:"
BUILTIN_PACKAGE, BUILTIN_FOLDER = "headforge.assets", "clips"  # package data: headforge/assets/clips/NAME.json


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Clip:
    name: str
    fps: float  # frames per second (> 0)
    weights: Tensor  # [T, 52] float64 ARKit weights in [0, 1], ARKIT_NAMES order
    rotations: Tensor  # [T, J, 3] float64 axis-angle radians per joint, JOINTS order; root (joint 0) zero
    source: str = ""  # where it came from: a file, builtin:NAME, or what made it

    def __post_init__(self):
        T = self.weights.shape[0] if self.weights.ndim == 2 else -1
        if T < 1 or self.weights.shape != (T, NUM_ARKIT) or self.weights.dtype != torch.float64:
            raise ValueError(f"Clip.weights must be float64 [T >= 1, {NUM_ARKIT}] "
                             f"(got {self.weights.dtype} {list(self.weights.shape)})")
        if self.rotations.shape != (T, len(JOINTS), 3) or self.rotations.dtype != torch.float64:
            raise ValueError(f"Clip.rotations must be float64 [{T}, {len(JOINTS)}, 3] "
                             f"(got {self.rotations.dtype} {list(self.rotations.shape)})")
        if not (self.fps > 0 and torch.isfinite(torch.tensor(float(self.fps)))):
            raise ValueError(f"Clip.fps must be a finite number > 0 (got {self.fps})")
        if not (bool(torch.isfinite(self.weights).all()) and bool(torch.isfinite(self.rotations).all())):
            raise ValueError("Clip weights and rotations must be finite")
        if bool((self.weights < 0).any()) or bool((self.weights > 1).any()):
            raise ValueError("Clip weights must lie in [0, 1]")
        if bool(self.rotations[:, 0].abs().max() > 0):
            raise ValueError("Clip rotations of the root joint must stay zero")

    @property
    def num_frames(self) -> int:
        return self.weights.shape[0]

    @property
    def duration(self) -> float:  # seconds from the first frame to the last
        return (self.num_frames - 1) / self.fps

    def times(self) -> Tensor:  # [T] float64 seconds of each frame
        return torch.arange(self.num_frames, dtype=torch.float64) / self.fps

    def pose(self) -> RigPose:  # [T] frames: the rotations, no root translation (float64)
        return RigPose(self.rotations, torch.zeros(self.num_frames, 3, dtype=torch.float64))


def resample(clip: Clip, num_frames: int) -> Clip:
    """``num_frames`` frames spanning the clip (its first to its last frame), linearly interpolated between
    the clip's frames; the frame rate changes so that the duration stays (a one-frame result keeps the fps and
    is the first frame). Weights stay in [0, 1] (each sample is a convex mix of two frames)."""
    if num_frames < 1:
        raise ValueError(f"resample: num_frames must be >= 1 (got {num_frames})")
    if num_frames == clip.num_frames:
        return clip
    span = clip.duration
    at = torch.linspace(0, span, num_frames, dtype=torch.float64) if num_frames > 1 else torch.zeros(1).double()
    flat = torch.cat([clip.weights, clip.rotations.flatten(1)], 1)  # [T, 52 + 3J]
    out = sample_keys(clip.times(), flat, at, Interpolation.LINEAR)
    fps = (num_frames - 1) / span if num_frames > 1 and span > 0 else clip.fps
    weights = out[:, :NUM_ARKIT].clamp(0, 1)  # rounding can step 1 ulp outside
    rotations = out[:, NUM_ARKIT:].reshape(num_frames, len(JOINTS), 3)
    return Clip(clip.name, fps, weights, rotations, clip.source)


def neutral_clip(num_frames: int = 1, fps: float = 30.0) -> Clip:
    """No expression, rest pose, for ``num_frames`` frames."""
    return Clip("neutral", fps, torch.zeros(num_frames, NUM_ARKIT, dtype=torch.float64),
                torch.zeros(num_frames, len(JOINTS), 3, dtype=torch.float64), "neutral")


def check_clip_for_rig(clip: Clip, rig: HeadRig) -> None:
    """Refuse a clip that moves expressions the rig does not have (their rows are missing in the rig)."""
    used = (clip.weights > 0).any(0)  # [52]
    lacking = [n for n, u, p in zip(ARKIT_NAMES, used.tolist(), rig.expression_present.tolist(), strict=True)
               if u and not p]
    if lacking:
        have = [n for n, p in zip(ARKIT_NAMES, rig.expression_present.tolist(), strict=True) if p]
        raise InputError(f"the clip '{clip.name}' uses expressions the rig ({rig.source}) lacks: "
                         f"{', '.join(lacking)}. The rig has: {', '.join(have)}",
                         path=_as_path(clip.source),
                         fix="drop those names from the clip, or use a rig that has them (--rig builtin has "
                             "all 52)")


def _as_path(source: str) -> Path | None:
    return None if not source or source.startswith(BUILTIN_PREFIX) or source == "neutral" else Path(source)


# ------------------------------------------------------------------------------------------------ files
def builtin_clip_names() -> tuple[str, ...]:
    folder = resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_FOLDER)
    return tuple(sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")))


def builtin_clip_path(name: str) -> Path:
    names = builtin_clip_names()
    if name not in names:
        raise InputError(f"no built-in clip '{name}' (built-in clips: {', '.join(names)})",
                         fix=f"use one of {', '.join(BUILTIN_PREFIX + n for n in names)}, or a clip JSON file")
    return Path(str(resources.files(BUILTIN_PACKAGE).joinpath(BUILTIN_FOLDER, f"{name}.json")))


def read_clip(path_or_spec: str | Path) -> Clip:
    """A clip from ``builtin:NAME`` or a JSON file (keyframes, dense frames or a MediaPipe recording)."""
    text = str(path_or_spec)
    if isinstance(path_or_spec, str) and text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):]
        path, source = builtin_clip_path(name), text
    else:
        path = Path(path_or_spec)
        name, source = path.stem, str(path)
    data = parse_clip(path, name)
    return Clip(data.name, data.fps, data.weights, data.rotations, source)


def clip_document(clip: Clip) -> dict:
    """The dense-frames document of a clip (see the module docstring)."""
    frames = []
    for n in range(clip.num_frames):
        frames.append({"frame": n, "t": n / clip.fps,
                       "expression": dict(zip(ARKIT_NAMES, clip.weights[n].tolist(), strict=True)),
                       "pose_rad": {str(j): r for j, r in zip(JOINTS, clip.rotations[n].tolist(), strict=True)}})
    return {"format": FRAMES_FORMAT, "version": CLIP_VERSION, "name": clip.name, "fps": clip.fps,
            "source": clip.source, "frames": frames}


def write_clip(clip: Clip, path: str | Path) -> Path:
    """Write the clip as dense frames (atomically); :func:`read_clip` reads it back exactly."""
    write_text(path, json.dumps(clip_document(clip), indent=1) + "\n")
    return Path(path)
