"""CPU threads: how many, and how they wait, so that training degrades gracefully on a busy machine.

All CPU kernels (torch's own ops, MKL, and the C++ kernels in ``renderers/gaussian_cpu`` and
``representations/fields/hash_cpu``, which split their work with ``at::parallel_for``) run on torch's
intra-op thread pool, which is GNU OpenMP (``libgomp``, bundled with the torch wheel). Two settings matter:

* **Waiting.** By default libgomp threads spin for a few milliseconds at every barrier. When another process
  holds a core, the spinning threads take time slices from the one thread that still has work, and every
  parallel region waits for it: steps slowed 5-10x at a load of 4 on 2 cores. ``OMP_WAIT_POLICY=PASSIVE``
  makes waiting threads sleep instead. libgomp reads it once, when it is loaded (the first ``import torch``),
  so :func:`apply_environment_defaults` (called by ``import headforge``) sets it with ``setdefault``: it takes
  effect when headforge is imported before torch (the CLI always is) and never overrides a user's value.
* **Count.** :func:`available_cores` counts the cores this process may use: its CPU affinity, capped by a
  cgroup CPU quota (``/sys/fs/cgroup/cpu.max``, or cgroup v1's ``cpu.cfs_quota_us``), which libgomp's
  default ignores (a container limited to 2 CPUs on a 64-core host would start 64 threads).

Precedence of the thread count: ``--threads N`` on the command line (:func:`pop_threads_option`), then the
environment variable ``HEADFORGE_THREADS``, then ``OMP_NUM_THREADS`` as the user set it, then the available
cores. :func:`configure_threads` applies it with ``torch.set_num_threads``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from headforge.errors import InputError

ENV_THREADS = "HEADFORGE_THREADS"
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` ("QUOTA PERIOD" in microseconds, or "max PERIOD"); None: no cap."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    period = float(parts[1]) if len(parts) > 1 else 100_000.0
    quota = float(parts[0])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_us: str, period_us: str) -> float | None:
    """Cores allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; a quota of -1 means no cap."""
    quota, period = float(quota_us.strip()), float(period_us.strip())
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(cpu_max: Path = CGROUP_V2_CPU_MAX, v1_dir: Path = CGROUP_V1_CPU) -> float | None:
    """This process's cgroup CPU quota in cores, or None where there is none (or no cgroup files to read)."""
    if cpu_max.is_file():
        return parse_cpu_max(cpu_max.read_text())
    quota, period = v1_dir / "cpu.cfs_quota_us", v1_dir / "cpu.cfs_period_us"
    if quota.is_file() and period.is_file():
        return parse_cfs_quota(quota.read_text(), period.read_text())
    return None


def available_cores(affinity: set[int] | None = None, quota: float | None = None, *,
                    read_quota: bool = True) -> int:
    """Cores this process may use: the CPUs in its affinity mask, capped by the cgroup quota (floored, >= 1).

    ``affinity`` / ``quota`` default to this process's (``os.sched_getaffinity``, :func:`cgroup_cpu_quota`);
    ``read_quota=False`` ignores the cgroup (for tests with fake inputs).
    """
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if quota is None and read_quota:
        quota = cgroup_cpu_quota()
    cores = max(1, len(affinity))
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return cores


def _positive_int(text: str, source: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{source} = {text!r} is not a positive whole number of threads",
                         fix=f"give {source} a number such as 1 or 2, or leave it unset to use the available cores")
    return value


def thread_count(requested: int | None = None, environ: Mapping[str, str] | None = None,
                 cores: int | None = None) -> int:
    """The thread count to use: ``requested`` (``--threads``), else $HEADFORGE_THREADS, else $OMP_NUM_THREADS,
    else :func:`available_cores` (``cores`` overrides it, for tests)."""
    environ = os.environ if environ is None else environ
    if requested is not None:
        return _positive_int(str(requested), "--threads")
    if environ.get(ENV_THREADS):
        return _positive_int(environ[ENV_THREADS], ENV_THREADS)
    omp = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp:
        return _positive_int(omp, "OMP_NUM_THREADS")
    return cores if cores is not None else available_cores()


def apply_environment_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Before torch loads OpenMP: passive waiting, and OMP_NUM_THREADS from the available cores.

    Only fills in variables the user left unset (``setdefault``); $HEADFORGE_THREADS, when set, gives the count.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not environ.get("OMP_NUM_THREADS"):
        threads = environ.get(ENV_THREADS, "")
        environ["OMP_NUM_THREADS"] = threads if threads.isdigit() and int(threads) > 0 else str(available_cores())


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count (which the C++ kernels follow) by :func:`thread_count`; returns it."""
    import torch

    threads = thread_count(requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def pop_threads_option(argv: list[str]) -> tuple[int | None, list[str]]:
    """Take a global ``--threads N`` / ``--threads=N`` out of a command line; returns (N or None, the rest)."""
    rest, value = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--threads" or arg.startswith("--threads="):
            if "=" in arg:
                text = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                text = argv[i]
            else:
                raise InputError("--threads needs a value", fix="write --threads N, e.g. --threads 2")
            value = _positive_int(text, "--threads")
        else:
            rest.append(arg)
        i += 1
    return value, rest
