"""Where attempts run: :class:`LocalExecutor` (a thread per worker, each attempt a child process) or
:class:`~headforge.batch.ray_executor.RayExecutor` (each attempt a Ray task). The driver only sees this interface:
``submit`` an attempt, ``wait`` for finished ones (final records as JSON), ``close``.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from dataclasses import dataclass
from typing import Protocol

from headforge.batch.attempt import run_attempt
from headforge.batch.records import FailureKind
from headforge.batch.spec import AttemptSpec


@dataclass(frozen=True)
class Finished:
    spec: AttemptSpec
    record: dict | None  # the final record; None when the worker was lost (``lost`` says how)
    lost: str | None = None
    kind: FailureKind = FailureKind.LOST


class Executor(Protocol):
    name: str
    capacity: int  # attempts that run at once
    gpus: bool  # the executor hands out GPUs (device=auto jobs then ask for one)

    def check_gpus(self, item_ids: list[str]) -> None:
        """Refuse, before anything runs, items that ask for a GPU the executor cannot give."""

    def submit(self, spec: AttemptSpec, gpu: bool) -> None: ...

    def running(self) -> int: ...

    def wait(self, timeout: float) -> list[Finished]: ...

    def close(self, cancel: bool) -> None: ...

    def describe(self) -> str: ...


class LocalExecutor:
    """``workers`` attempts at once on this machine, each a child process with ``cores / workers`` threads."""

    name = "local"
    gpus = False  # reserves no device: a job on CUDA uses this machine's GPU itself (and fails per item without one)

    def __init__(self, workers: int):
        self.capacity = workers
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-worker")
        self._futures: dict[cf.Future, AttemptSpec] = {}
        self._cancel = threading.Event()

    def check_gpus(self, item_ids: list[str]) -> None:
        """Nothing to refuse: see ``gpus``."""

    def submit(self, spec: AttemptSpec, gpu: bool) -> None:
        self._futures[self._pool.submit(run_attempt, spec, self._cancel)] = spec

    def running(self) -> int:
        return len(self._futures)

    def wait(self, timeout: float) -> list[Finished]:
        if not self._futures:
            return []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            spec = self._futures.pop(future)
            out.append(Finished(spec, future.result()))  # run_attempt records every failure itself
        return out

    def close(self, cancel: bool) -> None:
        if cancel:
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def describe(self) -> str:
        return f"local, {self.capacity} worker(s)"
