"""Shared cores: Gaussian training step time quiet vs. with one competing busy process, as a ratio.

The main job's setting: the built-in sample head rendered on the 32-view sphere at 256 px, the ``fast``
preset. Each row runs in a fresh worker process (libgomp reads its wait policy once, when torch loads it), which
trains ``--steps`` steps ``--repeats`` times quiet and again while a pure-Python busy loop competes for the cores;
a step's time is a run's training seconds / steps (initialisation excluded), the median over the repeats.
The wait policy libgomp actually used is read back from ``OMP_DISPLAY_ENV=VERBOSE`` (GOMP_SPINCOUNT: 0 passive,
300000 libgomp's default spin-then-sleep). Target (issue 9): at most 2.5x slower with one busy process.
Rows: libgomp's default (torch imported before headforge: the old behaviour), headforge's default (passive),
passive with one thread, and passive after a short spin (GOMP_SPINCOUNT=10000); ``--rows`` picks some.

    flock /tmp/hf-heavy.lock .venv/bin/python bench/bench_threads.py --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_LOOP = "while True:\n    pass\n"


@dataclass(frozen=True)
class Row:
    label: str
    wait: str  # "passive" (headforge's default) or "default" (libgomp's spin-then-sleep, torch imported first)
    threads: int | None  # None: headforge's choice (the available cores)
    spincount: str | None = None  # GOMP_SPINCOUNT: busy-wait this many spins before sleeping (None: policy's)


def render_sample_capture(root: Path, resolution: int) -> Path:
    from headforge.assets.sample_head import load_sample_head
    from headforge.geometry.camera_rigs import RigConfig, RigKind
    from headforge.stages.render_capture import RenderCaptureConfig, render_capture

    capture = root / f"sample_capture_{resolution}"
    if not capture.exists():
        cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.SPHERE32, resolution=resolution))
        render_capture(load_sample_head().mesh, cfg, capture, progress=False)
    return capture


def worker(args: argparse.Namespace) -> None:
    """One configuration: train quiet, then against a busy loop; prints one JSON line."""
    if args.wait == "default":  # load libgomp before headforge can ask for passive waiting: the old behaviour
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch  # noqa: F401
    else:  # headforge before torch: it sets OMP_WAIT_POLICY=PASSIVE before libgomp loads
        import headforge  # noqa: F401
    from dataclasses import replace

    import torch

    from headforge.captures.formats import read_capture
    from headforge.captures.inspect import summarize
    from headforge.pipeline.methods import Method, load_preset
    from headforge.stages.gaussian_train import train_gaussians
    from headforge.stages.views import load_views
    from headforge.threads import configure_threads

    threads = configure_threads(args.threads)
    preset = load_preset(Method.GAUSSIANS, args.preset, resolution=args.resolution, steps=args.steps)
    capture = read_capture(args.capture).at_resolution(preset.resolution)
    summary = summarize(capture)
    train = load_views(capture, capture.split.train)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    cfg = replace(preset.train, checkpoint_every=10**9)

    def step_seconds() -> list[float]:
        return [train_gaussians(train, bounds, cfg, progress=False).seconds / cfg.steps for _ in range(args.repeats)]

    step_seconds()  # warm-up: kernel load, allocator
    result = {"threads": threads, "quiet": step_seconds()}
    for n in args.busy:
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
        try:
            time.sleep(0.5)
            result[f"busy{n}"] = step_seconds()
        finally:
            for p in busy:
                p.kill()
                p.wait()
    print(json.dumps(result))


def run_row(row: Row, args: argparse.Namespace, capture: Path) -> dict:
    env = dict(os.environ, OMP_DISPLAY_ENV="VERBOSE")
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("GOMP_SPINCOUNT", None)
    if row.spincount is not None:
        env["GOMP_SPINCOUNT"] = row.spincount
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--wait", row.wait, "--capture", str(capture),
           "--resolution", str(args.resolution), "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--preset", args.preset, "--busy", *map(str, args.busy)]
    if row.threads is not None:
        cmd += ["--threads", str(row.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"worker {row.label} failed:\n{done.stderr[-3000:]}")
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "spincount": spin.group(1) if spin else "?"}


def format_table(results: list[dict], busy: list[int]) -> str:
    """A markdown table: one row per configuration, one column per number of busy processes."""
    heads = [f"{n} busy s/step (slowdown)" for n in busy]
    lines = [f"| {'configuration':34} | threads | GOMP_SPINCOUNT | quiet s/step | " + " | ".join(heads) + " |",
             f"|{'-' * 36}|---------|----------------|--------------|" + "|".join("-" * (len(h) + 2) for h in heads)
             + "|"]
    for r in results:
        cells = " | ".join(f"{s:.3f} ({s / r['quiet_s']:.2f}x)".rjust(len(h))
                           for h, s in zip(heads, r["loaded_s"].values(), strict=True))
        lines.append(f"| {r['row']:34} | {r['threads']:7d} | {r['spincount']:>14} | {r['quiet_s']:12.3f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per condition (median)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--busy", type=int, nargs="+", default=[1], help="competing busy processes, one column each")
    ap.add_argument("--out", type=Path, default=None, help="keep the capture here (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per worker")
    ap.add_argument("--rows", type=int, nargs="+", default=None, help="run only these rows (0-based)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--wait", default="passive", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--capture", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    from headforge.threads import available_cores

    root = args.out or Path(tempfile.mkdtemp(prefix="hf-bench-threads-"))
    capture = render_sample_capture(root, args.resolution)
    cores = available_cores()
    rows = [Row("before: libgomp default wait", "default", cores),
            Row("headforge default (passive wait)", "passive", None),
            Row("passive wait, 1 thread", "passive", 1),
            Row("passive wait, spin 10k first", "passive", None, "10000")]
    if args.rows:
        rows = [rows[i] for i in args.rows]
    results = []
    for row in rows:
        r = run_row(row, args, capture)
        q = statistics.median(r["quiet"])
        loaded = {n: statistics.median(r[f"busy{n}"]) for n in args.busy}
        results.append({"row": row.label, "threads": r["threads"], "spincount": r["spincount"], "quiet_s": q,
                        "loaded_s": {str(n): s for n, s in loaded.items()}})
    print(f"\nGaussian training step, sample head {args.resolution} px, preset {args.preset}, {cores} available "
          f"cores; median of {args.repeats} runs x {args.steps} steps; s/step quiet and with N competing busy "
          f"processes (slowdown = loaded / quiet)")
    print(format_table(results, args.busy))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
