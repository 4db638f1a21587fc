"""Small real batch items for the batch tests: a built-in rig render (about 1.5 s) and a tiny Gaussian reconstruction
(a few seconds, a checkpoint every 25 steps) of a 32 px capture rendered once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from headforge.batch.records import read_attempts, read_record
from headforge.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_PRESET = """resolution = 32

[train]
steps = 300
checkpoint_every = 25
max_sh_degree = 0
init_points = 2000

[train.densify]
refine_start = 100000
refine_stop = 100000
refine_every = 100
reset_every = 100000
"""


def render_item(item_id: str, views: int = 4, **extra) -> dict:
    return {"id": item_id, "input": "builtin", "job": "render-capture", "rig": "ring", "num_views": views,
            "resolution": 64, **extra}


def reconstruct_item(item_id: str, **extra) -> dict:
    return {"id": item_id, "input": "cap", "job": "reconstruct", "preset": "tiny.toml", "test_every": 4, **extra}


def make_tiny_capture(root: Path) -> Path:
    """``root`` with ``cap/`` (the built-in rig, 8 ring views of 32 px) and ``tiny.toml``."""
    assert main(["render-capture", "builtin", "--out", str(root / "cap"), "--rig", "ring", "--num-views", "8",
                 "--resolution", "32"]) == 0
    (root / "tiny.toml").write_text(TINY_PRESET)
    return root


def write_manifest(folder: Path, *rows: dict, name: str = "batch.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def start_batch(manifest: Path, out: Path, *args: str) -> subprocess.Popen:
    """``headforge batch`` in its own process (to be killed); its output goes to ``out``.log."""
    log = open(out.with_name(out.name + ".log"), "ab")  # noqa: SIM115 - the process owns it
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "headforge.cli", "batch", str(manifest), "--out", str(out), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=manifest.parent)


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def completions(out: Path, item_id: str) -> int:
    """How many attempts of the item ran to the end and succeeded (attempts.jsonl)."""
    return sum(1 for e in read_attempts(out / "items" / item_id) if e["event"] == "end" and e["state"] == "done")


def record(out: Path, item_id: str):
    return read_record(out / "items" / item_id)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
