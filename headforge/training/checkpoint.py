"""Training checkpoints: one payload layout for every trainer, written atomically, checked on resume.

A checkpoint ``step_NNNNNN.pt`` holds::

    format      CHECKPOINT_FORMAT (an int; bumped when the layout changes)
    kind        CheckpointKind: which trainer wrote it
    config      dataclasses.asdict(the trainer's config)
    step        the last completed step
    generator   the trainer's torch.Generator state; torch_rng: the global CPU RNG state
    state       the trainer's own tensors (model, optimizer, ...), a dict it defines

Resuming refuses (``InputError`` naming the checkpoint) a checkpoint of another format or kind, and one
whose config differs from the run's in any key but :data:`RESUMABLE_KEYS`; ``steps`` may only grow.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from headforge.atomic import atomic_path
from headforge.errors import InputError
from headforge.io.files import load_torch

CHECKPOINT_FORMAT = 1

# Config keys (top level) that may change between a checkpoint and its resumption: none of them changes what
# a step computes. ``steps`` must stay >= the checkpoint's step (a run cannot be resumed into its past).
RESUMABLE_KEYS = frozenset({"steps", "checkpoint_every", "checkpoint_minutes", "max_seconds"})


# What every checkpoint payload holds (see the module docstring).
PAYLOAD_KEYS = ("format", "kind", "config", "step", "generator", "torch_rng", "state")


class CheckpointKind(StrEnum):
    GAUSSIANS = "gaussians"
    FIELD = "field"
    AVATAR = "avatar"


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}.pt"


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step_*.pt"))
    return found[-1] if found else None


def save_checkpoint(directory: Path, kind: CheckpointKind, config: Any, step: int, generator: torch.Generator,
                    state: dict) -> Path:
    """Write ``directory/step_NNNNNN.pt`` atomically; returns its path."""
    path = Path(directory) / checkpoint_name(step)
    payload = {"format": CHECKPOINT_FORMAT, "kind": str(kind), "config": dataclasses.asdict(config), "step": step,
               "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "state": state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def config_differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs between two ``asdict`` configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def check_resumable(path: Path, payload: dict, kind: CheckpointKind, config: Any) -> None:
    """Raise ``InputError`` unless ``payload`` (read from ``path``) can continue a ``kind`` run with ``config``."""
    fresh = "start a fresh run (without --resume, or into another --out)"
    if not isinstance(payload, dict) or "format" not in payload:
        raise InputError("the checkpoint has no format version (it predates checkpoint format "
                         f"{CHECKPOINT_FORMAT}, or is not a headforge training checkpoint)", path=path, fix=fresh)
    if payload["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint format {payload['format']} is not the format this headforge reads "
                         f"({CHECKPOINT_FORMAT})", path=path, fix=fresh)
    if payload.get("kind") != kind:
        raise InputError(f"this is a {payload['kind']} training checkpoint; a {kind} run cannot resume from it",
                         path=path, fix=f"resume with the method that wrote it, or {fresh}")
    new = dataclasses.asdict(config)
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("step"), int):
        raise InputError("the checkpoint has no config or step", path=path, fix=fresh)
    changed = [d for d in config_differences(payload["config"], new) if d[0] not in RESUMABLE_KEYS]
    if changed:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
        raise InputError(f"the run's configuration differs from the checkpoint's ({listed})", path=path,
                         fix="resume with the checkpoint's settings (only "
                             f"{', '.join(sorted(RESUMABLE_KEYS))} may change), or {fresh}")
    if new["steps"] < payload["step"]:
        raise InputError(f"steps = {new['steps']} is before the checkpoint's step {payload['step']}", path=path,
                         fix=f"pass steps >= {payload['step']}, or {fresh}")


def load_for_resume(directory: Path, kind: CheckpointKind, config: Any, device="cpu") -> tuple[Path, dict] | None:
    """The latest checkpoint in ``directory`` as (path, payload), checked against ``kind`` and ``config``;
    None when there is none."""
    path = latest_checkpoint(Path(directory))
    if path is None:
        return None
    fix = "delete it to resume from the one before, or start a fresh run"
    payload = load_torch(path, "checkpoint", fix, device=device)  # random bytes, truncation, not a dict
    check_resumable(path, payload, kind, config)
    missing = [k for k in PAYLOAD_KEYS if k not in payload]
    if missing:
        raise InputError(f"the checkpoint lacks {', '.join(missing)}", path=path, fix=fix)
    return path, payload


def restore_rng(payload: dict, generator: torch.Generator) -> None:
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
