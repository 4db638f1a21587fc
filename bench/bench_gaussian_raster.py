"""Benchmark rasterize_gaussians: median forward and forward+backward times per backend.

    .venv/bin/python bench/bench_gaussian_raster.py [--repeats 5] [--backends cpu torch] [--include-slow]

Scene: N Gaussians uniform in a 0.1 m-radius ball (a head-sized 0.2 m region) 0.6 m in front of
the camera, scales 2-5 mm, opacities 0.3-0.7, SH degree 3 colours, focal = --focal x width so the
ball spans about 60 % of the image at the default 1.8. The loss is an L1 against a fixed image plus
the alpha sum, so every output has a gradient. The torch reference is far slower; its largest cases
are skipped unless --include-slow (the table says so). Other processes share the CPU cores, so the
numbers are noisy: medians are reported, and "cpu s" is this process's CPU time (threads summed).
Importing headforge before torch (first import below) sets OMP_WAIT_POLICY=PASSIVE unless it is set: spinning
OpenMP workers otherwise waste the time slices other processes need, which inflates every torch op
and kernel call several-fold (2.4 s instead of 0.6-0.9 s at 512^2 x 100k, measured at load 5 on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.renderers.gaussian_raster import gsplat_available, rasterize_gaussians

TORCH_MAX_N = 10_000  # the torch reference takes minutes (and GBs) beyond this; --include-slow runs it


def make_scene(n: int, size: int, focal: float, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=-1, keepdim=True) * 0.1 * torch.rand(n, 1, generator=g) ** (1 / 3)
    scene = dict(means=means + torch.tensor([0.0, 0.0, 0.6]), quats=torch.randn(n, 4, generator=g),
                 scales=0.002 + 0.003 * torch.rand(n, 3, generator=g),
                 opacities=0.3 + 0.4 * torch.rand(n, generator=g),
                 colors=0.3 * torch.randn(n, 16, 3, generator=g),
                 world_to_camera=torch.eye(4)[None],
                 Ks=torch.tensor([[[focal * size, 0, size / 2], [0, focal * size, size / 2], [0, 0, 1]]]))
    return {k: v.to(device) for k, v in scene.items()}


def run_once(scene: dict, size: int, backend: str, target: torch.Tensor, device: str) -> tuple[float, float, float]:
    params = {k: (v.clone().requires_grad_() if k not in ("world_to_camera", "Ks") else v) for k, v in scene.items()}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = rasterize_gaussians(**params, width=size, height=size, sh_degree=3, backend=backend)
    sync()
    t1 = time.perf_counter()
    loss = (out.rgb - target).abs().mean() + out.alpha.mean()
    loss.backward()
    sync()
    return t1 - t0, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    parser.add_argument("--focal", type=float, default=1.8, help="focal length in image widths")
    parser.add_argument("--include-slow", action="store_true", help="also run the torch reference on big cases")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = args.backends or (["gsplat"] if device == "cuda" and gsplat_available() else []) + ["cpu", "torch"]
    if device == "cuda":
        backends = [b for b in backends if b != "cpu"]
    rows = []
    for backend in backends:
        for size in args.sizes:
            for n in args.counts:
                label = f"{backend:6s} {size}x{size} N={n // 1000}k"
                if backend == "torch" and n > TORCH_MAX_N and not args.include_slow:
                    rows.append((backend, size, n, None, None, None, 0, "skipped (minutes; --include-slow)"))
                    print(f"{label}: skipped", flush=True)
                    continue
                scene = make_scene(n, size, args.focal, device)
                target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
                run_once(scene, size, backend, target, device)  # warm-up (and first-use kernel build)
                reps = args.repeats if backend != "torch" else max(1, min(args.repeats, 3))
                times = [run_once(scene, size, backend, target, device) for _ in range(reps)]
                fwd, total, cpu = (statistics.median(t[i] for t in times) for i in range(3))
                with torch.no_grad():
                    out = rasterize_gaussians(**scene, width=size, height=size, sh_degree=3, backend=backend)
                coverage = out.alpha.gt(0.5).float().mean().item()
                rows.append((backend, size, n, fwd, total, cpu, reps, f"alpha>0.5 on {coverage:.0%} of pixels"))
                print(f"{label}: fwd {fwd:.3f} s, fwd+bwd {total:.3f} s (cpu {cpu:.2f} s)", flush=True)
    print_table(rows, torch.get_num_threads(), device)


def print_table(rows: list, threads: int, device: str) -> None:
    wait = os.environ.get("OMP_WAIT_POLICY", "unset")
    title = f"rasterize_gaussians, SH degree 3, medians ({device}, {threads} torch threads, OMP_WAIT_POLICY {wait})"
    header = ("backend", "image", "N", "fwd s", "fwd+bwd s", "cpu s", "runs", "note")
    cells = [(b, f"{s}x{s}", f"{n // 1000}k", *(("-",) * 3 if f is None else
                                                  (f"{f:.3f}", f"{t:.3f}", f"{c:.2f}")), str(r), note)
             for b, s, n, f, t, c, r, note in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
        print(title)
        for line in (header, *cells):
            print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h in ("backend", "note") else "right")
    for line in cells:
        table.add_row(*line)
    Console(width=max(120, math.ceil(sum(len(h) for h in header) * 2.5))).print(table)


if __name__ == "__main__":
    main()
