"""Benchmark batch jobs (issue 15 targets). Prints a table per part; run under the heavy-job lock on a quiet machine:

    flock /tmp/hf-heavy.lock .venv/bin/python bench/bench_batch.py [--work ../bench_out/batch] [--parts ...]

Inputs are made in ``--work/inputs`` (nothing downloaded): scikit-image's astronaut portrait (as PNG, and mirrored
as JPEG), a 32 px capture of the built-in rig, a tiny reconstruction preset, a finished tiny reconstruction for the
export items, and six broken inputs.

* **broken** (24 items, 6 broken): 18 small jobs (3 photo at 64 px / 30 steps, 6 rig renders, 2 rig clips, 5 tiny
  reconstructions, 2 exports) and six that must fail for their own reason: a missing file, a corrupt JPEG, a photo
  without a face (scikit-image's coffee), a capture with a NaN camera, a mesh in a format nobody reads (.fbx), and a
  reconstruction that runs past its 30 s timeout. ``--workers 2``: the batch is ``kill -9``-ed when half the items
  have finished, then run again with ``--resume``; the table gives every item's final state and reason, and the
  number of attempts per item that ran to a successful end (must be at most 1).
* **throughput**: the 18 good items with ``--workers 1``, ``--workers 2`` and ``--ray auto`` (a local Ray cluster of
  the machine's cores, one thread per item), each into a fresh folder, one after the other: items per hour and the
  ratios. Then 8 rig renders with 1 item at a time locally (``--workers 1 --item-threads 2``) and on the local Ray
  cluster (``--item-threads 2``: one task at a time), and the per-item overhead of the Ray path (the wall-time
  difference divided by the items, the cluster's start included and also given apart).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from headforge.batch.records import read_attempts, read_record  # noqa: E402
from headforge.cli import main  # noqa: E402

TINY_PRESET = (REPO / "tests" / "batch_fixtures.py").read_text().split('TINY_PRESET = """')[1].split('"""')[0]
PHOTO = {"resolution": 64, "steps": 30, "face_points": 500}


def make_inputs(root: Path) -> None:
    from PIL import Image
    from skimage import data

    if (root / "ready").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    astronaut = Image.fromarray(data.astronaut())
    astronaut.save(root / "astronaut.png")
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "mirrored.jpg", quality=92)
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    (root / "corrupt.jpg").write_bytes((root / "mirrored.jpg").read_bytes()[:300])
    (root / "head.fbx").write_text("Kaydara FBX Binary? no: a text file named like an FBX\n")
    (root / "tiny.toml").write_text(TINY_PRESET)
    assert main(["render-capture", "builtin", "--out", str(root / "cap"), "--rig", "ring", "--num-views", "8",
                 "--resolution", "32"]) == 0
    shutil.copytree(root / "cap", root / "cap_nan")
    cams = json.loads((root / "cap_nan" / "camera_params.json").read_text())
    first = next(iter(cams["world_2_cam"]))
    cams["world_2_cam"][first][0][3] = float("nan")
    (root / "cap_nan" / "camera_params.json").write_text(json.dumps(cams))
    assert main(["reconstruct", str(root / "cap"), "--out", str(root / "run"), "--preset", str(root / "tiny.toml"),
                 "--test-every", "4"]) == 0
    (root / "ready").write_text("ok")


def good_items() -> list[dict]:
    items = [{"id": "photo-astronaut", "input": "builtin:astronaut", "job": "photo", **PHOTO},
             {"id": "photo-png", "input": "astronaut.png", "job": "photo", **PHOTO},
             {"id": "photo-mirrored", "input": "mirrored.jpg", "job": "photo", **PHOTO}]
    items += [{"id": f"render-{v}", "input": "builtin", "job": "render-capture", "rig": "ring", "num_views": v,
               "resolution": 64} for v in range(4, 10)]
    items += [{"id": f"clip-{c}", "input": "builtin", "job": "render-capture", "rig": "ring", "num_views": 3,
               "resolution": 48, "animation": f"builtin:{c}", "frames": 3} for c in ("blink", "smile")]
    items += [{"id": f"recon-{s}", "input": "cap", "job": "reconstruct", "preset": "tiny.toml", "steps": s,
               "test_every": 4} for s in (150, 200, 250, 300, 350)]
    items += [{"id": "export-splats", "input": "run", "job": "export", "format": ["ply", "splat"]},
              {"id": "export-spz", "input": "run", "job": "export", "format": ["spz"]}]
    return items


BROKEN = {  # id -> (item, the reason it must fail with)
    "missing-file": ({"input": "missing.jpg", "job": "photo", **PHOTO}, "does not exist"),
    "corrupt-image": ({"input": "corrupt.jpg", "job": "photo", **PHOTO}, "corrupt or truncated"),
    "no-face": ({"input": "coffee.png", "job": "photo", **PHOTO}, "face"),
    "nan-camera": ({"input": "cap_nan", "job": "reconstruct", "preset": "tiny.toml"}, "non-finite"),
    "wrong-format": ({"input": "head.fbx", "job": "render-capture", "resolution": 32}, ".fbx"),
    "timeout": ({"input": "cap", "job": "reconstruct", "preset": "tiny.toml", "steps": 1_000_000, "timeout": 30},
                "stopped after 30 s"),
}


def write_manifest(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def batch_process(manifest: Path, out: Path, *args: str) -> subprocess.Popen:
    log = open(out.with_name(out.name + ".log"), "ab")  # noqa: SIM115 - the process owns it
    return subprocess.Popen([sys.executable, "-m", "headforge.cli", "batch", str(manifest), "--out", str(out), *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=manifest.parent,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def finished(out: Path, ids: list[str]) -> int:
    count = 0
    for i in ids:
        r = read_record(out / "items" / i)
        count += r is not None and r.state in ("done", "failed")
    return count


def completions(out: Path, item_id: str) -> int:
    return sum(1 for e in read_attempts(out / "items" / item_id) if e["event"] == "end" and e["state"] == "done")


def part_broken(work: Path) -> None:
    inputs = work / "inputs"
    items = good_items() + [{"id": k, **v[0]} for k, v in BROKEN.items()]
    order = np.random.default_rng(15).permutation(len(items))  # broken items spread through the batch
    items = [items[i] for i in order]
    manifest = write_manifest(inputs / "broken24.jsonl", items)
    out = work / "broken24"
    shutil.rmtree(out, ignore_errors=True)
    ids = [i["id"] for i in items]
    t0 = time.monotonic()
    proc = batch_process(manifest, out, "--workers", "2")
    while finished(out, ids) < len(ids) // 2 and proc.poll() is None:
        time.sleep(0.5)
    running = [i for i in ids if (r := read_record(out / "items" / i)) is not None and r.state == "running"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic() - t0
    before = {i: completions(out, i) for i in ids}
    t1 = time.monotonic()
    resume = subprocess.run([sys.executable, "-m", "headforge.cli", "batch", str(manifest), "--out", str(out),
                             "--workers", "2", "--resume"], cwd=inputs, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True)
    resumed_s = time.monotonic() - t1
    summary = json.loads((out / "batch.json").read_text())
    print(f"\n## broken: 24 items, kill -9 at {killed_at:.0f} s with {sum(before.values())} done and "
          f"{len(running)} running ({', '.join(running)}); --resume took {resumed_s:.0f} s, exit {resume.returncode}")
    print("| item | job | state | attempts | successful ends (before kill / total) | reason |")
    print("|---|---|---|---|---|---|")
    ok = True
    for item in summary["items"]:
        done_total = completions(out, item["id"])
        err = item["error"]
        reason = "" if err is None else f"{err['kind']} / {err['class']}: {err['message'].splitlines()[0][:90]}"
        print(f"| {item['id']} | {item['job']} | {item['state']} | {item['attempt']} | {before[item['id']]} / "
              f"{done_total} | {reason} |")
        expected = BROKEN.get(item["id"])
        ok &= done_total <= 1
        ok &= (item["state"] == "failed" and expected[1] in (err["message"] if err else "")) if expected \
            else item["state"] == "done"
    print(f"\ncounts {summary['counts']}; every item as expected and none run twice to success: {ok}")


def timed_batch(manifest: Path, out: Path, *args: str) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "headforge.cli", "batch", str(manifest), "--out", str(out), *args],
                          cwd=manifest.parent, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"batch {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "batch.json").read_text())


def ray_start_seconds() -> float:
    code = ("import time, ray; t = time.monotonic(); ray.init(num_cpus=2, include_dashboard=False, "
            "log_to_driver=False); print(time.monotonic() - t); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def part_throughput(work: Path) -> None:
    inputs = work / "inputs"
    manifest = write_manifest(inputs / "good18.jsonl", good_items())
    rows = []
    for label, args in (("local, 1 worker", ("--workers", "1")), ("local, 2 workers", ("--workers", "2")),
                        ("Ray (local cluster, 2 CPUs)", ("--ray", "auto"))):
        wall, summary = timed_batch(manifest, work / f"good18_{label.split()[0].strip(',')}_{args[-1]}", *args)
        item_s = [i["seconds"] for i in summary["items"]]
        rows.append((label, wall, summary["counts"]["done"], statistics.median(item_s)))
    base = rows[0][1]
    print("\n## throughput: the 18 good items (3 photo, 8 rig renders, 5 reconstructions, 2 exports)")
    print("| executor | wall s | done | items / hour | vs 1 worker | median item s (in its process) |")
    print("|---|---|---|---|---|---|")
    for label, wall, done, med in rows:
        print(f"| {label} | {wall:.0f} | {done} | {3600 * done / wall:.0f} | {base / wall:.2f}x | {med:.1f} |")

    small = write_manifest(inputs / "renders8.jsonl", [
        {"id": f"r{k}", "input": "builtin", "job": "render-capture", "rig": "ring", "num_views": 4, "resolution": 64}
        for k in range(8)])
    local_wall, local = timed_batch(small, work / "renders8_local", "--workers", "1", "--item-threads", "2")
    ray_wall, ray = timed_batch(small, work / "renders8_ray", "--ray", "auto", "--item-threads", "2")
    start = statistics.median(ray_start_seconds() for _ in range(3))
    per_local = statistics.median(i["seconds"] for i in local["items"])
    per_ray = statistics.median(i["seconds"] for i in ray["items"])
    print("\n## Ray overhead: 8 rig renders, one at a time, 2 threads each")
    print("| path | wall s | median item s (in its process) | wall per item s |")
    print("|---|---|---|---|")
    print(f"| local | {local_wall:.1f} | {per_local:.2f} | {local_wall / 8:.2f} |")
    print(f"| Ray (local cluster) | {ray_wall:.1f} | {per_ray:.2f} | {ray_wall / 8:.2f} |")
    print(f"\nRay overhead per item: {(ray_wall - local_wall) / 8:.2f} s with the cluster's start "
          f"({start:.1f} s, median of 3) spread over the 8 items, {(ray_wall - start - local_wall) / 8:.2f} s without")


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=REPO.parent / "bench_out" / "batch")
    parser.add_argument("--parts", default="broken,throughput")
    args = parser.parse_args()
    work = args.work.resolve()
    make_inputs(work / "inputs")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; work folder {work}")
    for part in args.parts.split(","):
        {"broken": part_broken, "throughput": part_throughput}[part](work)


if __name__ == "__main__":
    main_bench()
