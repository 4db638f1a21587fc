"""Rigged GLB export (issue 13 targets): size, export time, and sparse against dense morph targets.

Run: ``.venv/bin/python bench/bench_export.py [--fit FIT_DIR] [--avatar AVATAR_RUN] [--quantize]``. The defaults,
../bench_out/lps_fit_ict_256 (an ICT-FaceKit fit-rig folder) and ../bench_out/lps_avatar_256 (an avatar run), are
made by `bench/bench_rig_fit.py` and `bench/bench_avatar.py`; the built-in rig row needs nothing. 2 torch threads;
quote the load it ran under.

Per head: the GLB with sparse targets (what `headforge export` writes) and with dense ones (every vertex of every
target stored), the bytes of the 52 targets alone in each (the buffer views their accessors use), the whole file, and
the export time (median of 5, in memory). The target: sparse targets >= 5x smaller than dense ones. ``--quantize`` adds
the GLB with ``quantize_targets`` (sparse normalized SHORT deltas, KHR_mesh_quantization) and its ratio. Then the whole
`headforge export --format all` of the avatar run (every file, one folder), once.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.io.glb import read_glb
from headforge.pipeline.avatar_file import load_avatar
from headforge.pipeline.fitted_rig import load_fitted_rig
from headforge.representations.rig.clips import read_clip
from headforge.stages.rig_export import ExportHead, RigGlbConfig, build_rigged_glb

ROOT = Path(__file__).resolve().parents[1]
BENCH_OUT = ROOT.parent / "bench_out"
CLIPS = ("builtin:blink", "builtin:smile", "builtin:talk", "builtin:head_turn")


@dataclass(frozen=True)
class GlbFigure:
    name: str
    vertices: int
    sparse_mb: float
    dense_mb: float
    sparse_targets_mb: float
    dense_targets_mb: float
    seconds: float  # median export time, sparse
    quantized_mb: float | None = None  # with --quantize: sparse normalized SHORT targets (KHR_mesh_quantization)
    quantized_targets_mb: float | None = None

    @property
    def targets_ratio(self) -> float:
        return self.dense_targets_mb / self.sparse_targets_mb

    @property
    def quantized_ratio(self) -> float | None:
        return None if self.quantized_targets_mb is None else self.dense_targets_mb / self.quantized_targets_mb


def target_bytes(glb: bytes) -> int:
    """Bytes of the buffer views the morph targets' accessors use (sparse indices and values, or dense data)."""
    doc = read_glb(glb).document
    views = doc["bufferViews"]
    used: set[int] = set()
    for mesh in doc.get("meshes", []):
        for prim in mesh["primitives"]:
            for target in prim.get("targets", []):
                for acc_index in target.values():
                    acc = doc["accessors"][acc_index]
                    if "bufferView" in acc:
                        used.add(acc["bufferView"])
                    if "sparse" in acc:
                        used |= {acc["sparse"]["indices"]["bufferView"], acc["sparse"]["values"]["bufferView"]}
    return sum(views[i]["byteLength"] for i in used)


def measure(name: str, head: ExportHead, repeats: int = 5, quantize: bool = False) -> GlbFigure:
    clips = [read_clip(c) for c in CLIPS]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sparse = build_rigged_glb(head, clips, RigGlbConfig())
        times.append(time.perf_counter() - t0)
    dense = build_rigged_glb(head, clips, RigGlbConfig(sparse_targets=False))
    mb = 1e-6
    verts = sum(read_glb(sparse).document["accessors"][p["attributes"]["POSITION"]]["count"]
                for m in read_glb(sparse).document["meshes"] for p in m["primitives"] if "targets" in p)
    quantized = build_rigged_glb(head, clips, RigGlbConfig(quantize_targets=True)) if quantize else None
    return GlbFigure(name, verts, len(sparse) * mb, len(dense) * mb, target_bytes(sparse) * mb,
                     target_bytes(dense) * mb, statistics.median(times),
                     None if quantized is None else len(quantized) * mb,
                     None if quantized is None else target_bytes(quantized) * mb)


def builtin_head() -> ExportHead:
    """The built-in rig at its neutral identity with the sample head's colours as a 512 px texture."""
    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.pipeline.fitted_rig import texture_from_image
    from headforge.representations.rig.arkit import NUM_ARKIT
    from headforge.representations.rig.deform import RigPose
    from headforge.stages.rig_params import RigParams, Similarity

    rig = load_rig(parse_rig_spec("builtin"))
    d = torch.float64
    params = RigParams(Similarity(torch.tensor(1.0, dtype=d), torch.eye(3, dtype=d), torch.zeros(3, dtype=d)),
                       torch.zeros(rig.num_identity, dtype=d), torch.zeros(1, NUM_ARKIT, dtype=d),
                       RigPose.rest(1, dtype=d))
    t = torch.linspace(0, 1, 512)
    image = torch.stack(torch.broadcast_tensors(0.75 + 0.1 * t[None, :], 0.55 + 0.1 * t[:, None],
                                                0.45 + 0.05 * (t[None, :] * t[:, None])), -1)
    return ExportHead(rig, params, texture_from_image(rig, image))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", type=Path, default=BENCH_OUT / "lps_fit_ict_256")
    ap.add_argument("--avatar", type=Path, default=BENCH_OUT / "lps_avatar_256")
    ap.add_argument("--quantize", action="store_true",
                    help="also export with quantize_targets (sparse normalized SHORT deltas, KHR_mesh_quantization)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    rows.append(measure("built-in rig (neutral, 512 px texture)", builtin_head(), quantize=args.quantize))
    if (args.fit / "rig_fit.json").is_file():
        fit = load_fitted_rig(args.fit)
        rows.append(measure(f"ICT-FaceKit fit ({args.fit.name})", ExportHead(fit.rig, fit.params, fit.texture),
                            quantize=args.quantize))
    else:
        print(f"(no fit at {args.fit}: ICT row left out)")
    if (args.avatar / "avatar" / "avatar.json").is_file():
        avatar = load_avatar(args.avatar / "avatar")
        n = {k: v for k, v in avatar.gaussians.counts().items() if v}
        rows.append(measure(f"LPS avatar ({args.avatar.name}, splats {n})", ExportHead.of_avatar(avatar),
                            quantize=args.quantize))
    print("\n| head | glTF vertices with targets | GLB sparse (MB) | GLB dense (MB) | targets sparse (MB) "
          "| targets dense (MB) | targets dense / sparse | export (s, median of 5) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.vertices} | {r.sparse_mb:.2f} | {r.dense_mb:.2f} | {r.sparse_targets_mb:.2f} | "
              f"{r.dense_targets_mb:.2f} | {r.targets_ratio:.1f}x ({'meets' if r.targets_ratio >= 5 else 'misses'} "
              f"5x) | {r.seconds:.2f} |")
    if args.quantize:
        print("\n| head | GLB quantized (MB) | targets quantized (MB) | targets dense / quantized |")
        print("|---|---|---|---|")
        for r in rows:
            q = r.quantized_ratio
            print(f"| {r.name} | {r.quantized_mb:.2f} | {r.quantized_targets_mb:.2f} | {q:.1f}x "
                  f"({'meets' if q >= 5 else 'misses'} 5x) |")
    if (args.avatar / "avatar" / "avatar.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "headforge.cli", "export", str(args.avatar), "--out",
                            f"{tmp}/export", "--format", "all"], check=True)
            print(f"\nheadforge export {args.avatar.name} --format all: {time.perf_counter() - t0:.1f} s "
                  "(one run, with the interpreter's start)")


if __name__ == "__main__":
    main()
