"""Walk every numeric option of every command (``headforge.cli.COMMANDS``) and give it an out-of-range value:
each must be refused at the door (exit 2, the ``--flag-name`` on stderr, no traceback), before any file is
read, so the required paths given here do not even exist.

:data:`RANGES` is the table of each option's valid range, as issue 10 asks for (counts, sizes and steps
>= 1, resolutions 1 .. a documented maximum, a field of view in (0, 180), test_every >= 0 with 0 meaning
"hold out none", durations > 0, finite numbers). A new int/float option that is not in the table fails
:func:`test_the_range_table_covers_every_numeric_option`: declare its range here when you add it.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass

import pytest

from headforge.cli import COMMANDS

from .conftest import GIGANTIC, assert_refused


@dataclass(frozen=True)
class Range:
    """A numeric option's valid values: ``lo`` (inclusive unless ``lo_open``) .. ``hi`` (same), finite."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    huge: bool = False  # an image / grid / texture size: also refuse a gigantic value up front (memory)
    inf_ok: bool = False  # +inf means "no limit" (a time budget)

    def bad_values(self, kind: type) -> list[str]:
        """0 and a negative number below a lower bound of 1, the open edges, GIGANTIC for sizes, nan / inf."""
        bad: list[float] = []
        if self.lo is not None:
            first = self.lo if self.lo_open else self.lo - 1
            bad += [first, -5] if first >= 0 else [first]
        if self.hi is not None:
            bad.append(self.hi if self.hi_open else self.hi + 1)
        if self.huge:
            bad.append(GIGANTIC)
        words = [str(int(v)) if kind is int else repr(float(v)) for v in dict.fromkeys(bad)]
        return words + (["nan"] + ([] if self.inf_ok else ["inf"]) if kind is float else [])


COUNT = Range(lo=1)  # counts, steps, sizes: at least one
SIZE = Range(lo=1, huge=True)  # pixels / cells: at least one, at most a documented maximum (GIGANTIC is beyond it)
POSITIVE = Range(lo=0, lo_open=True)  # lengths, durations: > 0
HOLD_OUT = Range(lo=0)  # --test-every: 0 holds out no view
ANY_FINITE = Range()  # any finite number (nan / inf refused)

# (command, parameter) -> valid range. The documented rules, one line each.
RANGES: dict[tuple[str, str], Range] = {
    ("run", "resolution"): SIZE,
    ("run", "steps"): COUNT,
    ("render-capture", "resolution"): SIZE,
    ("render-capture", "num_views"): COUNT,
    ("render-capture", "fov_deg"): Range(lo=0, hi=180, lo_open=True, hi_open=True),
    ("render-capture", "head_width"): POSITIVE,
    ("render-capture", "supersample"): COUNT,
    ("render-capture", "frames"): COUNT,  # --frames N of a rig's --animation
    ("inspect", "test_every"): HOLD_OUT,
    ("reconstruct", "resolution"): SIZE,
    ("reconstruct", "steps"): COUNT,
    ("reconstruct", "test_every"): HOLD_OUT,
    ("extract-mesh", "resolution"): SIZE,
    ("extract-mesh", "level"): ANY_FINITE,  # an iso level: negative is fine (SDF), nan / inf are not
    ("extract-mesh", "target_faces"): COUNT,
    ("extract-mesh", "texture_size"): SIZE,
    ("extract-mesh", "unwrap_seconds"): Range(lo=0, lo_open=True, inf_ok=True),  # inf: no time limit
    ("rig-sheet", "size"): Range(lo=16, hi=1024, huge=True),  # tile height: a thumbnail .. a 2-3 GB sheet
    ("fit-rig", "resolution"): SIZE,
    ("fit-rig", "test_every"): HOLD_OUT,
    ("hair-swap", "size"): Range(lo=16, hi=1024, huge=True),  # the rig sheet's tile height
    ("edit-texture", "size"): Range(lo=16, hi=1024, huge=True),
    ("avatar", "resolution"): SIZE,
    ("avatar", "steps"): COUNT,
    ("avatar", "face_points"): COUNT,
    ("avatar", "test_every"): HOLD_OUT,
    ("avatar", "turntable_frames"): COUNT,
    ("animate", "resolution"): SIZE,
    ("animate", "frames"): COUNT,
    ("animate", "turn_deg"): Range(lo=0, hi=180),
    ("animate", "distance_m"): POSITIVE,
    ("animate", "fov_deg"): Range(lo=0, hi=180, lo_open=True, hi_open=True),
    ("photo", "resolution"): SIZE,
    ("photo", "steps"): COUNT,
    ("photo", "face_points"): COUNT,
    ("batch", "workers"): COUNT,
    ("batch", "retries"): Range(lo=0),  # 0: no retry
    ("batch", "timeout"): POSITIVE,
    ("batch", "item_threads"): COUNT,
    ("batch", "backoff"): POSITIVE,
}

# Every other option at a small valid value, so that nothing slow can start if a refusal is missing.
# Required paths do not exist: the option must be refused before any file is read.
BASE: dict[str, list[str]] = {
    "run": ["--out", "{tmp}/out", "--mesh", "{tmp}/missing.obj", "--rig", "ring", "--resolution", "16",
            "--steps", "1"],
    "render-capture": ["{tmp}/missing.obj", "--out", "{tmp}/out", "--rig", "ring", "--resolution", "16",
                       "--num-views", "2", "--supersample", "1"],
    "inspect": ["{tmp}/missing_capture", "--plot", "{tmp}/plot.png"],
    "reconstruct": ["{tmp}/missing_capture", "--out", "{tmp}/out", "--resolution", "16", "--steps", "1"],
    "extract-mesh": ["{tmp}/missing_run", "--resolution", "8", "--target-faces", "100", "--texture-size", "16",
                     "--unwrap-seconds", "1"],
    "rig-sheet": ["ict-facekit:{tmp}/missing_rig", "--out", "{tmp}/sheet.png", "--size", "64"],
    "fit-rig": ["{tmp}/missing_capture", "--out", "{tmp}/out", "--rig", "ict-facekit:{tmp}/missing_rig",
                "--resolution", "16"],
    "hair-swap": ["{tmp}/missing_receiver", "{tmp}/missing_donor", "--out", "{tmp}/out", "--size", "64"],
    "edit-texture": ["{tmp}/missing_avatar", "--out", "{tmp}/out", "--tint", "1,1,1", "--size", "64"],
    "avatar": ["{tmp}/missing_capture", "--out", "{tmp}/out", "--resolution", "16", "--steps", "1",
               "--face-points", "10", "--turntable-frames", "1"],
    "animate": ["{tmp}/missing_avatar", "--clip", "builtin:blink", "--out", "{tmp}/v.mp4", "--resolution", "16",
                "--frames", "2"],
    "photo": ["{tmp}/missing.jpg", "--out", "{tmp}/out", "--resolution", "16", "--steps", "1", "--face-points", "10"],
    "batch": ["{tmp}/missing.jsonl", "--out", "{tmp}/out", "--workers", "1", "--retries", "0", "--timeout", "5"],
}


def numeric_kind(annotation) -> type | None:
    """int or float for ``int``, ``float``, ``int | None``, ``Optional[float]`` ...; None for anything else."""
    if annotation in (int, float):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {numeric_kind(a) for a in typing.get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 and None not in kinds else None
    if typing.get_origin(annotation) is typing.Annotated:
        return numeric_kind(typing.get_args(annotation)[0])
    return None


def numeric_options() -> dict[tuple[str, str], type]:
    found = {}
    for name, fn in COMMANDS.items():
        hints = typing.get_type_hints(fn, include_extras=True)
        for param in inspect.signature(fn).parameters:
            kind = numeric_kind(hints.get(param))
            if kind is not None:
                found[(name, param)] = kind
    return found


def flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def test_the_range_table_covers_every_numeric_option():
    found = numeric_options()
    undeclared = sorted(set(found) - set(RANGES))
    assert not undeclared, f"numeric options without a declared range in RANGES: {undeclared}"
    stale = sorted(set(RANGES) - set(found))
    assert not stale, f"RANGES names options that no longer exist: {stale}"


CASES = [(command, param, value) for (command, param), kind in sorted(numeric_options().items())
         if (command, param) in RANGES for value in RANGES[(command, param)].bad_values(kind)]


def _with(argv: list[str], option: str, value: str) -> list[str]:
    """argv with ``option`` set to ``value`` (replacing a base value)."""
    if option in argv:
        i = argv.index(option)
        return [*argv[:i], option, value, *argv[i + 2:]]
    return [*argv, option, value]


@pytest.mark.parametrize(("command", "param", "value"), CASES, ids=[f"{c}-{p}={v}" for c, p, v in CASES])
def test_out_of_range_option_is_refused_at_the_door(command, param, value, cli, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in BASE[command]]
    result = cli(command, *_with(argv, flag(param), value))
    assert_refused(result, flag(param), root=tmp_path, before={})
    number = float(value)
    spellings = {value, str(number)} | ({str(int(number))} if math.isfinite(number) and number.is_integer() else set())
    assert any(s in result.err for s in spellings), f"the refused value {value} is not named:\n{result.err}"
