"""Parsing of clip files (the formats are described in ``clips.py``): every problem an ``InputError`` that
names the file and the key (``keys[2].expression.jawOpn``) and says how to fix it."""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headforge.errors import InputError
from headforge.io.files import read_text
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.head_rig import JOINTS, Joint

CLIP_FORMAT = "headforge.clip"  # keyframes (authored)
FRAMES_FORMAT = "headforge.clip_frames"  # dense frames (written)
CLIP_VERSION = 1
MEDIAPIPE_DEFAULT_FPS = 30.0  # a plain MediaPipe list carries no frame rate; webcams run at 30
MEDIAPIPE_NEUTRAL = "_neutral"
MAX_ROTATION_DEG = 180.0  # an axis-angle beyond half a turn is ambiguous (and no head turns that far)
MAX_FRAMES = 100_000  # about 55 minutes at 30 fps: a longer clip is a typo in t or fps
MAX_FPS = 1000.0
FORMATS_FIX = (f"write a {CLIP_FORMAT} keyframe file (headforge/assets/clips/README.md), a {FRAMES_FORMAT} file "
               "as headforge writes it, or a MediaPipe recording (a list of frames of blendshape categories)")
KEYFRAME_FIELDS = ("format", "version", "name", "description", "fps", "interpolation", "keys")
KEY_FIELDS = ("t", "expression", "pose")
FRAMES_FIELDS = ("format", "version", "name", "fps", "source", "frames")
FRAME_FIELDS = ("frame", "t", "expression", "pose_rad")
MEDIAPIPE_FIELDS = ("name", "fps", "frames")
CATEGORY_FIELDS = ("categoryName", "category_name", "score", "index", "displayName", "display_name")


class Interpolation(StrEnum):
    LINEAR = "linear"  # straight lines between keys
    SMOOTH = "smooth"  # cosine ease in and out at every key (zero slope at the keys)


@dataclass(frozen=True, eq=False)
class ClipData:
    """What a clip file holds, dense (``clips.Clip`` checks and carries it)."""

    name: str
    fps: float
    weights: Tensor  # [T, 52] float64
    rotations: Tensor  # [T, J, 3] float64 radians


def sample_keys(times: Tensor, values: Tensor, at: Tensor, interpolation: Interpolation) -> Tensor:
    """Keyframe curves sampled: key times [K] (strictly increasing), key values [K, C], sample times [T]
    -> [T, C] (float64). Outside the keys the first / last value holds."""
    times, values, at = times.double(), values.double(), at.double()
    if times.shape[0] == 1:
        return values.expand(at.shape[0], -1).clone()
    i = (torch.searchsorted(times, at, right=True) - 1).clamp(0, times.shape[0] - 2)  # [T] segment
    t0, t1 = times[i], times[i + 1]
    u = ((at - t0) / (t1 - t0)).clamp(0, 1)  # [T] linear fraction through the segment
    if Interpolation(interpolation) is Interpolation.SMOOTH:
        u = (1 - torch.cos(torch.pi * u)) / 2
    v0, v1 = values[i], values[i + 1]
    return v0 + (v1 - v0) * u[:, None]


def num_samples(last_key: float, fps: float) -> int:
    """Frames of a clip whose last key is at ``last_key`` seconds: t = 0, 1 / fps, ... up to that key."""
    return int(last_key * fps + 1e-9) + 1



def _fail(path: Path, key: str, problem: str, fix: str) -> InputError:
    return InputError(f"{key}: {problem}" if key else problem, path=path, fix=fix)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}")


def _fields(obj: Any, allowed: tuple[str, ...], key: str, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise _fail(path, key, f"{what} must be a JSON object, not {_type_name(obj)}", "see the clip format")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}" if key else unknown[0], f"unknown field in {what}",
                    f"the fields of {what} are: {', '.join(allowed)}")
    return obj


def _number(value: Any, key: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, key, f"must be a number, not {_type_name(value)}", "write a plain number")
    if not math.isfinite(value):
        raise _fail(path, key, f"is not finite ({value})", "write a finite number")
    return float(value)


def _required(obj: dict, field: str, key: str, path: Path) -> Any:
    if field not in obj:
        raise _fail(path, f"{key}.{field}" if key else field, "is missing", f"add '{field}'")
    return obj[field]


def _check_version(data: dict, path: Path) -> None:
    version = _required(data, "version", "", path)
    if isinstance(version, bool) or version != CLIP_VERSION:
        raise _fail(path, "version", f"{version!r} is not a version this headforge reads ({CLIP_VERSION})",
                    f"write \"version\": {CLIP_VERSION}, or use a newer headforge")


def _fps(value: Any, key: str, path: Path) -> float:
    fps = _number(value, key, path)
    if not 0 < fps <= MAX_FPS:
        raise _fail(path, key, f"{fps} frames per second is outside (0, {MAX_FPS:g}]", "give e.g. 30")
    return fps


def _unknown_name(name: str, valid: tuple[str, ...], key: str, path: Path, what: str) -> InputError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return _fail(path, key, f"'{name}' is not {what}{hint}", f"use one of: {', '.join(valid)}")


def _weight(value: Any, key: str, path: Path) -> float:
    w = _number(value, key, path)
    if not 0 <= w <= 1:
        raise _fail(path, key, f"weight {w} is outside [0, 1]", "ARKit weights run from 0 (rest) to 1 (full)")
    return w


def _expression(obj: Any, key: str, path: Path) -> Tensor:  # -> [52] float64, absent names 0
    if not isinstance(obj, dict):
        raise _fail(path, key, f"must be an object {{ARKit name: weight}}, not {_type_name(obj)}",
                    'write e.g. {"jawOpen": 0.5}')
    out = torch.zeros(NUM_ARKIT, dtype=torch.float64)
    for name, value in obj.items():
        if name not in ARKIT_NAMES:
            raise _unknown_name(name, ARKIT_NAMES, f"{key}.{name}", path, "an ARKit blendshape name")
        out[ARKIT_NAMES.index(name)] = _weight(value, f"{key}.{name}", path)
    return out


def _pose(obj: Any, key: str, path: Path, *, degrees: bool) -> Tensor:  # -> [J, 3] float64 radians
    joints = tuple(str(j) for j in JOINTS)
    if not isinstance(obj, dict):
        raise _fail(path, key, f"must be an object {{joint: [x, y, z]}}, not {_type_name(obj)}",
                    'write e.g. {"head": [0, 20, 0]}')
    out = torch.zeros(len(JOINTS), 3, dtype=torch.float64)
    limit = MAX_ROTATION_DEG if degrees else math.radians(MAX_ROTATION_DEG)
    unit = "degrees" if degrees else "radians"
    for name, value in obj.items():
        where = f"{key}.{name}"
        if name not in joints:
            raise _unknown_name(name, joints[1:], where, path, "a joint of the rig")
        if not isinstance(value, list) or len(value) != 3:
            raise _fail(path, where, f"must be an axis-angle [x, y, z] in {unit}, not {_type_name(value)}"
                        + (f" of {len(value)}" if isinstance(value, list) else ""), "write three numbers")
        r = torch.tensor([_number(v, f"{where}[{i}]", path) for i, v in enumerate(value)], dtype=torch.float64)
        if float(r.norm()) > limit + 1e-12:
            raise _fail(path, where, f"a turn of {float(r.norm()):g} {unit} is more than half a turn",
                        f"keep each rotation within {limit:g} {unit}")
        if name == Joint.ROOT and bool(r.abs().max() > 0):
            raise _fail(path, where, "the root joint stays at rest in a clip",
                        "turn the neck or the head joint instead")
        out[joints.index(name)] = torch.deg2rad(r) if degrees else r
    return out


def _nonempty_list(value: Any, key: str, path: Path, what: str) -> list:
    if not isinstance(value, list):
        raise _fail(path, key, f"must be a list of {what}, not {_type_name(value)}", f"write a list of {what}")
    if not value:
        raise _fail(path, key, f"is empty: a clip needs at least one of {what}", f"add {what}")
    return value


# --------------------------------------------------------------------------------------------- formats
def _keyframes(data: dict, path: Path, default_name: str) -> ClipData:
    _fields(data, KEYFRAME_FIELDS, "", path, f"a {CLIP_FORMAT} file")
    fps = _fps(_required(data, "fps", "", path), "fps", path)
    text = data.get("interpolation", str(Interpolation.LINEAR))
    if not isinstance(text, str) or text not in set(Interpolation):
        raise _fail(path, "interpolation", f"{text!r} is not an interpolation",
                    f"use one of: {', '.join(Interpolation)}")
    keys = _nonempty_list(_required(data, "keys", "", path), "keys", path, "keys")
    times, values = [], []
    for k, key in enumerate(keys):
        where = f"keys[{k}]"
        _fields(key, KEY_FIELDS, where, path, "a key")
        t = _number(_required(key, "t", where, path), f"{where}.t", path)
        if t < 0:
            raise _fail(path, f"{where}.t", f"time {t} is negative", "clips start at t = 0")
        if times and t <= times[-1]:
            what = "repeats the time of the key before" if t == times[-1] else "comes before the key before"
            raise _fail(path, f"{where}.t", f"t = {t} {what} (t = {times[-1]}): keys must be sorted by time "
                        "with no two at the same time", "sort the keys by t and merge keys at the same time")
        weights = _expression(key.get("expression", {}), f"{where}.expression", path)
        rotations = _pose(key.get("pose", {}), f"{where}.pose", path, degrees=True)
        times.append(t)
        values.append(torch.cat([weights, rotations.flatten()]))
    count = num_samples(times[-1], fps)
    if count > MAX_FRAMES:
        raise _fail(path, f"keys[{len(keys) - 1}].t", f"{times[-1]} s at {fps:g} fps is {count} frames (more "
                    f"than {MAX_FRAMES})", "check the times (seconds) and fps")
    at = torch.arange(count, dtype=torch.float64) / fps
    dense = sample_keys(torch.tensor(times, dtype=torch.float64), torch.stack(values), at, Interpolation(text))
    name = _name(data, default_name, path)
    return ClipData(name, fps, dense[:, :NUM_ARKIT].clamp(0, 1), dense[:, NUM_ARKIT:].reshape(count, len(JOINTS), 3))


def _name(data: dict, default: str, path: Path) -> str:
    name = data.get("name", default)
    if not isinstance(name, str) or not name:
        raise _fail(path, "name", f"must be a non-empty string, not {_type_name(name)}", "name the clip")
    return name


def _frames(data: dict, path: Path, default_name: str) -> ClipData:
    _fields(data, FRAMES_FIELDS, "", path, f"a {FRAMES_FORMAT} file")
    fps = _fps(_required(data, "fps", "", path), "fps", path)
    if not isinstance(data.get("source", ""), str):
        raise _fail(path, "source", f"must be a string, not {_type_name(data['source'])}", "describe the origin")
    frames = _nonempty_list(_required(data, "frames", "", path), "frames", path, "frames")
    weights, rotations = [], []
    for n, frame in enumerate(frames):
        where = f"frames[{n}]"
        _fields(frame, FRAME_FIELDS, where, path, "a frame")
        index = _required(frame, "frame", where, path)
        if isinstance(index, bool) or index != n:
            raise _fail(path, f"{where}.frame", f"is {index!r}, expected {n}: frames are numbered 0, 1, ... in "
                        "order", "list every frame once, in order")
        t = _number(_required(frame, "t", where, path), f"{where}.t", path)
        if not math.isclose(t, n / fps, rel_tol=1e-9, abs_tol=1e-9):
            raise _fail(path, f"{where}.t", f"t = {t} but frame {n} at {fps:g} fps is at {n / fps}",
                        "frame n is at t = n / fps")
        weights.append(_expression(frame.get("expression", {}), f"{where}.expression", path))
        rotations.append(_pose(frame.get("pose_rad", {}), f"{where}.pose_rad", path, degrees=False))
    return ClipData(_name(data, default_name, path), fps, torch.stack(weights), torch.stack(rotations))


def _category_name(category: dict, key: str, path: Path) -> str:
    names = [category[k] for k in ("categoryName", "category_name") if k in category]
    if len(names) != 1 or not isinstance(names[0], str):
        raise _fail(path, key, "needs one string 'categoryName' (or 'category_name')",
                    "write MediaPipe's face_blendshapes categories as they come")
    return names[0]


def _mediapipe(frames: Any, fps: float, path: Path, name: str) -> ClipData:
    frames = _nonempty_list(frames, "frames", path, "frames")
    weights = []
    for n, frame in enumerate(frames):
        where = f"frames[{n}]"
        if not isinstance(frame, list) or not frame:
            raise _fail(path, where, "must be a non-empty list of blendshape categories (no face found in that "
                        f"frame?), not {_type_name(frame) if frame != [] else 'an empty list'}",
                        "drop frames without a face, or fill them with the frame before")
        row = torch.zeros(NUM_ARKIT, dtype=torch.float64)
        seen = set()
        for c, category in enumerate(frame):
            key = f"{where}[{c}]"
            _fields(category, CATEGORY_FIELDS, key, path, "a blendshape category")
            label = _category_name(category, key, path)
            if label in seen:
                raise _fail(path, f"{key}.categoryName", f"'{label}' appears twice in one frame",
                            "keep one score per blendshape and frame")
            seen.add(label)
            score = _weight(_required(category, "score", key, path), f"{key}.score", path)
            if label == MEDIAPIPE_NEUTRAL:
                continue
            if label not in ARKIT_NAMES:
                raise _unknown_name(label, ARKIT_NAMES, f"{key}.categoryName", path, "an ARKit blendshape name")
            row[ARKIT_NAMES.index(label)] = score
        weights.append(row)
    w = torch.stack(weights)
    return ClipData(name, fps, w, torch.zeros(w.shape[0], len(JOINTS), 3, dtype=torch.float64))


def parse_clip(path: Path, default_name: str) -> ClipData:
    """The clip in the JSON file ``path`` (keyframes, dense frames or a MediaPipe recording)."""
    text = read_text(path, "clip file", fix=FORMATS_FIX)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e.msg} at line {e.lineno}, column {e.colno}", path=path,
                         fix="repair the JSON (a trailing comma or a missing bracket is common)") from None
    if isinstance(data, list):
        return _mediapipe(data, MEDIAPIPE_DEFAULT_FPS, path, default_name)
    if not isinstance(data, dict):
        raise _fail(path, "", f"a clip file holds a JSON object or list, not {_type_name(data)}", FORMATS_FIX)
    if "format" not in data:
        if "frames" in data:  # a MediaPipe recording with its frame rate
            _fields(data, MEDIAPIPE_FIELDS, "", path, "a MediaPipe recording")
            fps = _fps(data["fps"], "fps", path) if "fps" in data else MEDIAPIPE_DEFAULT_FPS
            return _mediapipe(data["frames"], fps, path, _name(data, default_name, path))
        raise _fail(path, "format", "is missing: this is not a clip file", FORMATS_FIX)
    fmt = data["format"]
    readers = {CLIP_FORMAT: _keyframes, FRAMES_FORMAT: _frames}
    if not isinstance(fmt, str) or fmt not in readers:
        raise _fail(path, "format", f"{fmt!r} is not a clip format ({', '.join(readers)})", FORMATS_FIX)
    _check_version(data, path)
    return readers[fmt](data, path, default_name)
