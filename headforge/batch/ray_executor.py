"""Attempts as Ray tasks (``pip install 'headforge[dist]'``): ``--ray auto`` starts a new local Ray cluster on this
machine (stopped with the batch), ``--ray HOST:PORT`` (or ``ray://HOST:PORT``) joins a running one (``ray start
--head`` on the head node). A cluster with token authentication (Ray's default when ``~/.ray/auth_token`` exists)
is joined only with ``RAY_AUTH_MODE=token`` and its token (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``); a cluster
that refuses to be joined is an error naming the address and that fix.

Each attempt is one task (``max_retries=0``: retries are the batch's, with its backoff and record). The task only
starts the attempt's child process and waits for it (the item's isolation is that process, as on one machine), so
Ray's workers are reused and import nothing heavy (``spec``, ``records``, ``attempt``). A task asks for the
item's threads as ``num_cpus`` and, when its job runs on CUDA, ``num_gpus=1``; the task runs the same attempt as
the local executor (a child process), so timeouts, logs and records are the same. Before anything is submitted
the cluster must answer (a TCP probe with a time limit, so a wrong address is an error, not a hang) and hold the
resources the items ask for (else an error naming them, not a task that waits forever). A worker killed mid-item
(or its node lost) comes back as ``WorkerLost`` and is retried like a crash.

On a cluster of several machines, the manifest's inputs and ``--out`` must be on a filesystem every node mounts at
the same path, and every node needs headforge installed.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from headforge.batch.attempt import GRACE_SECONDS, run_attempt
from headforge.batch.executors import Finished
from headforge.batch.records import FailureKind
from headforge.batch.spec import AttemptSpec
from headforge.errors import InputError

PROBE_SECONDS = 5.0
JOIN_FIX = ("check that the address is the head node's GCS address (`ray status` on the head prints it) and that "
            "this Ray is the cluster's version; a cluster with token authentication (a token in ~/.ray/auth_token "
            "when `ray start` ran) needs RAY_AUTH_MODE=token here, with its token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token")
LOST_AFTER = 120.0  # past the item's timeout + grace, the driver cancels the task itself


def _ray_attempt(spec_json: dict) -> dict:
    return run_attempt(AttemptSpec(**spec_json))


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed", fix="pip install 'headforge[dist]'") from None
    return ray


def probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """Raise ``InputError`` unless something accepts a TCP connection at ``HOST:PORT`` within ``seconds``."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray {address!r} is not auto or HOST:PORT", fix="give --ray auto (a local cluster), or "
                         "the head node's address, e.g. --ray 10.0.0.5:6379 (what `ray start --head` printed)")
    try:
        with socket.create_connection((host, int(port)), timeout=seconds):
            pass
    except OSError as error:
        raise InputError(f"no Ray cluster answers at {address} within {seconds:g} s ({error})",
                         fix="start one with `ray start --head --port PORT` on the head node, check the address "
                             "and the firewall, or use --ray auto for a local cluster") from None


def _first_line(error: BaseException) -> str:
    """``Class: first line`` of an error and of the error it was raised from (Ray wraps the reason)."""
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return line if error.__cause__ is None else f"{line} ({_first_line(error.__cause__)})"


@dataclass
class _Task:
    spec: AttemptSpec
    submitted: float


class RayExecutor:
    name = "ray"

    def __init__(self, address: str, threads: int, local_cpus: int):
        ray = self.ray = import_ray()
        self.address = address
        self.threads = threads
        if address == "auto":
            # "local": always a new cluster (None would join one that `ray start` left on this machine, and then
            # refuse num_cpus)
            ray.init(address="local", num_cpus=local_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            probe(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError) as error:  # Ray's AuthenticationError is a RuntimeError
                ray.shutdown()
                raise InputError(f"cannot join the Ray cluster at {address}: {_first_line(error)}",
                                 fix=JOIN_FIX) from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.node_cpus = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
        total = ray.cluster_resources()
        self.cpus = float(total.get("CPU", 0.0))
        self.gpus = float(total.get("GPU", 0.0)) > 0
        if self.node_cpus < threads:
            ray.shutdown()
            raise InputError(f"each item asks for {threads} CPU(s) but the largest node of the Ray cluster has "
                             f"{self.node_cpus:g}", fix=f"give --item-threads {max(1, int(self.node_cpus))} or less")
        self.capacity = max(1, int(self.cpus // threads))
        self._remote = ray.remote(max_retries=0)(_ray_attempt)
        self._tasks: dict[object, _Task] = {}
        self._timed_out: set[str] = set()

    def check_gpus(self, item_ids: list[str]) -> None:
        if item_ids and not self.gpus:
            raise InputError(f"item(s) {', '.join(item_ids)} run on CUDA but the Ray cluster has no GPU",
                             fix="add a GPU node to the cluster, or give those items device=cpu (or auto)")

    def submit(self, spec: AttemptSpec, gpu: bool) -> None:
        ref = self._remote.options(num_cpus=self.threads, num_gpus=1 if gpu else 0,
                                   name=f"headforge-batch:{spec.id}").remote(spec.to_json())
        self._tasks[ref] = _Task(spec, time.monotonic())

    def running(self) -> int:
        return len(self._tasks)

    def wait(self, timeout: float) -> list[Finished]:
        if not self._tasks:
            return []
        self._cancel_overdue()
        refs = list(self._tasks)
        ready, rest = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return [self._collect(ref) for ref in ready]

    def _collect(self, ref) -> Finished:
        task = self._tasks.pop(ref)
        try:
            return Finished(task.spec, self.ray.get(ref))
        except self.ray.exceptions.RayError as error:
            if task.spec.id in self._timed_out:
                return Finished(task.spec, None, f"the Ray task did not return {LOST_AFTER:g} s past the item's "
                                f"time limit and was cancelled", FailureKind.TIMEOUT)
            return Finished(task.spec, None, _first_line(error))

    def _cancel_overdue(self) -> None:
        now = time.monotonic()
        for ref, task in self._tasks.items():
            limit = task.spec.timeout
            if limit is not None and task.spec.id not in self._timed_out and \
                    now - task.submitted > limit + GRACE_SECONDS + LOST_AFTER:
                self._timed_out.add(task.spec.id)
                self.ray.cancel(ref, force=True)

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in list(self._tasks):
                self.ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: the child is stopped, SIGTERM
            deadline = time.monotonic() + GRACE_SECONDS + 5
            while self._tasks and time.monotonic() < deadline:
                self.wait(0.5)
        self.ray.shutdown()

    def describe(self) -> str:
        where = "a local Ray cluster" if self.address == "auto" else f"the Ray cluster at {self.address}"
        return (f"{where}: {self.cpus:g} CPUs{', GPUs' if self.gpus else ''}, {self.capacity} item(s) at once, "
                f"{self.threads} thread(s) each")
