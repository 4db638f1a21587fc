"""The training loop shared by every trainer, with hooks around the step (gsplat's ``Strategy`` manner).

One step, in this order (the order is part of the numerics: a refactor must keep it)::

    hook.step_pre(step)                  occupancy-grid update, VolSDF beta cap, distillation pool refresh
    out = task.forward(step)             draws from the generator, renders, returns out.loss
    hook.step_pre_backward(step, out)
    optimizer.zero_grad(set_to_none=True); out.loss.backward()
    divergence check                     a non-finite loss raises FloatingPointError (checkpoints stay intact)
    hook.step_post_backward(step, out)   densification (reads the screen-space gradients)
    task.update(step)                    learning-rate schedule and optimizer.step(), in the task's order
    history row every ``log_every`` steps and at the last step
    checkpoint every ``checkpoint_every`` steps, at the last step, and every ``checkpoint_minutes``
    stop when ``max_seconds`` ran out (after writing a checkpoint at that step)
    stop when SIGINT or SIGTERM arrived during the step: checkpoint at that step, raise ``Interrupted``
                                         (also at the last step: the user asked to stop)

Steps count from 1; ``LoopResult.steps`` is the last completed one. While the loop runs (in the main
thread) SIGINT and SIGTERM only set a flag, read between steps (never mid-step, never mid-save: a second
ctrl-C during the checkpoint's write just sets the flag again); the previous handlers come back when the
loop ends, however it ends.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.errors import Interrupted
from headforge.training.checkpoint import CheckpointKind, save_checkpoint
from headforge.validation import Checked, Count, NonNegativeInt, OptionError, Seconds

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (model initialisation) and return the run's own generator (every draw of a step)."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class StepOutput(Protocol):
    loss: Tensor  # [] the scalar to minimise


class Task(Protocol):
    """One trainer's step. ``forward`` builds the loss, ``update`` applies it (lr schedule + optimizer.step)."""

    optimizer: torch.optim.Optimizer

    def forward(self, step: int) -> StepOutput: ...
    def update(self, step: int) -> None: ...
    def log_row(self, step: int, out: StepOutput) -> tuple: ...  # a history row
    def postfix(self, row: tuple) -> dict[str, str]: ...  # progress-bar fields for that row
    def state(self) -> dict: ...  # the checkpoint's "state" entry


class Hook:
    """Something that acts around the step; every method defaults to doing nothing."""

    def step_pre(self, step: int) -> None:
        pass

    def step_pre_backward(self, step: int, out: StepOutput) -> None:
        pass

    def step_post_backward(self, step: int, out: StepOutput) -> None:
        pass


@dataclass(frozen=True)
class Checkpointing:
    directory: Path
    kind: CheckpointKind
    config: Any  # the trainer's config dataclass, recorded in every checkpoint
    every: int  # steps
    minutes: float | None = None  # also write one when this much wall time passed since the last (None: never)


@dataclass(frozen=True)
class LoopOptions(Checked):
    name: str  # progress-bar label and error messages
    steps: NonNegativeInt  # the last step to run
    log_every: Count
    start: NonNegativeInt = 0  # the step resumed from (0: a fresh run)
    max_seconds: Seconds | None = None  # wall-clock budget of this run (None: none)
    divergence_hint: str | None = None  # appended to the divergence error
    checkpointing: Checkpointing | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.start > self.steps:
            raise OptionError("steps", self.steps, f">= the step resumed from ({self.start})")


@dataclass(frozen=True)
class LoopResult:
    steps: int  # the last completed step (options.steps unless the budget ran out first)
    seconds: float  # wall time of this run (resumed steps excluded)
    history: tuple[tuple, ...]  # this run's rows
    out_of_time: bool  # stopped by max_seconds before options.steps
    checkpoints: tuple[Path, ...] = field(default=())  # written by this run, in order


def diverged(name: str, step: int, loss: float, checkpointing: Checkpointing | None, hint: str | None) -> str:
    parts = [f"{name} diverged at step {step} (loss {loss})"]
    if checkpointing is not None:
        parts.append(f"the last checkpoint in {checkpointing.directory} is intact")
    if hint:
        parts.append(hint)
    return "; ".join(parts)


class StopRequest:
    """The first stop signal received while the loop runs (None: none)."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:  # a signal handler: only records the signal
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to a :class:`StopRequest` for the block, then restore the previous handlers.
    Outside the main thread (where Python cannot set handlers) the request never fires."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.signal(s, request) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_loop(task: Task, options: LoopOptions, generator: torch.Generator, hooks: Sequence[Hook] = (), *,
             progress: bool = True) -> LoopResult:
    """Run steps ``options.start + 1 .. options.steps`` of ``task`` (see the module docstring)."""
    ck = options.checkpointing
    history, written = [], []
    t0 = last_save = time.perf_counter()
    done, out_of_time = options.start, False

    def save(step: int) -> None:
        nonlocal last_save
        written.append(save_checkpoint(ck.directory, ck.kind, ck.config, step, generator, task.state()))
        last_save = time.perf_counter()

    bar = tqdm(range(options.start + 1, options.steps + 1), desc=options.name, unit="step", disable=not progress,
               initial=options.start, total=options.steps)
    with stop_requests() as stop, contextlib.closing(bar):
        for step in bar:
            for h in hooks:
                h.step_pre(step)
            out = task.forward(step)
            for h in hooks:
                h.step_pre_backward(step, out)
            task.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if not math.isfinite(out.loss.item()):
                raise FloatingPointError(diverged(options.name, step, out.loss.item(), ck, options.divergence_hint))
            for h in hooks:
                h.step_post_backward(step, out)
            task.update(step)
            done = step
            if step % options.log_every == 0 or step == options.steps:
                row = task.log_row(step, out)
                history.append(row)
                bar.set_postfix(task.postfix(row))
            now = time.perf_counter()
            out_of_time = options.max_seconds is not None and now - t0 >= options.max_seconds and step < options.steps
            if ck is not None and (step % ck.every == 0 or step == options.steps or out_of_time
                                   or (ck.minutes is not None and now - last_save >= 60 * ck.minutes)
                                   or stop.signum is not None):
                save(step)
            if stop.signum is not None:  # the checkpoint above is at this step (a signal during it changes nothing)
                raise Interrupted(step, options.steps, stop.signum, written[-1] if ck is not None else None,
                                  None if ck is not None else "this loop writes no checkpoints")
            if out_of_time:
                break
    return LoopResult(done, time.perf_counter() - t0, tuple(history), out_of_time, tuple(written))
