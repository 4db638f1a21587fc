"""Benchmark neural-field encodings and the volume renderer on CPU: median wall times.

Run: ``.venv/bin/python bench/bench_fields.py [--repeats 5] [--threads 2]``.

- encoding forward+backward (sum of squares of the features, backward to the parameters) for 2^16 and 2^18
  points: hash grid (L=16, F=2, T=2^19, N 16..2048, the Instant-NGP defaults; torch path and compiled CPU
  kernel), tri-plane (3 x 32 x 256^2),
  tri-grid (3 x 32 x 3 x 256^2, PanoHead's depth 3). Points are uniform in the cube ("random", the worst
  case for cache locality) and, for the hash grid, ordered along rays ("rays", what the renderer produces).
- render (forward only, no grad) of 4096 rays through a hash-grid density field holding a ball of radius
  0.1 m in the 0.4 m head box, marching at the default step (box diagonal / 512): without and with occupancy
  skipping (grid 64^3 fitted to the field), and with skipping plus early ray termination (transmittance
  < 1e-4, front-to-back pruning); the sample count (samples composited) is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.geometry.rays import Rays
from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid
from headforge.renderers.volume import VolumeRendererConfig, render_rays
from headforge.representations.fields.field import FieldConfig, RadianceField
from headforge.representations.fields.hash_grid import HashGridConfig, HashGridEncoding
from headforge.representations.fields.planes import PlaneConfig, TriGridEncoding, TriPlaneEncoding


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ray_ordered_points(n: int) -> torch.Tensor:  # [n, 3] in [0, 1]: 128 samples along each of n / 128 rays
    rays = n // 128
    o = torch.rand(rays, 3)
    d = torch.nn.functional.normalize(torch.randn(rays, 3), dim=-1)
    t = torch.linspace(0, 0.5, 128)
    return (o[:, None] + d[:, None] * t[:, None]).reshape(-1, 3).clamp(0, 1)


def bench_encodings(repeats: int) -> list[tuple[str, str, float]]:
    rows = []
    encoders = {
        "hashgrid torch": (HashGridEncoding(HashGridConfig(backend="torch")), False),
        "hashgrid cpu kernel": (HashGridEncoding(HashGridConfig(backend="cpu")), False),
        "triplane": (TriPlaneEncoding(PlaneConfig(resolution=256, channels=32)), True),
        "trigrid": (TriGridEncoding(PlaneConfig(resolution=256, channels=32, depth=3)), True),
    }
    for log2n in (16, 18):
        n = 1 << log2n
        for name, (enc, signed) in encoders.items():
            inputs = {"random": torch.rand(n, 3)}
            if name.startswith("hashgrid"):
                inputs["rays"] = ray_ordered_points(n)
            for kind, x in inputs.items():
                x = x * 2 - 1 if signed else x

                def step(enc=enc, x=x):
                    enc.zero_grad(set_to_none=True)
                    enc(x).square().sum().backward()

                rows.append((f"{name} fwd+bwd 2^{log2n} ({kind})", f"{n} pts", median_time(step, repeats)))
    return rows


def bench_render(repeats: int) -> list[tuple[str, str, float]]:
    torch.manual_seed(0)
    field = RadianceField(FieldConfig(prefer_tcnn=False))
    # give the field a ball: bias the density of its decoder by distance (the MLP's last bias is per-field)
    ball = lambda p: 300.0 * (p.norm(dim=-1, keepdim=True) < 0.1).float()  # noqa: E731
    inner = field._to_density

    def to_density(points, value):
        return inner(points, value * 0 + ball(points))

    field._to_density = to_density  # bench-only: a known occupied region, real field cost per sample
    n = 4096
    o = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1) * 0.5
    d = torch.nn.functional.normalize(torch.rand(n, 3) * 0.3 - 0.15 - o, dim=-1)
    rays = Rays(o, d, torch.ones(n))
    grid = OccupancyGrid(OccupancyConfig(resolution=64), *field.bounds)
    with torch.no_grad():
        grid.update(0, field.density)
    plain = VolumeRendererConfig(background=(1.0, 1.0, 1.0))
    early = VolumeRendererConfig(background=(1.0, 1.0, 1.0), early_stop_eps=1e-4)
    rows = []
    for label, sampler, cfg in (("no skipping", grid.sampler(skip=False), plain),
                                ("occupancy skipping", grid.sampler(), plain),
                                ("occupancy + early stop", grid.sampler(), early)):
        with torch.no_grad():
            count = len(render_rays(field, rays, cfg, sampler=sampler).samples)

            def run(sampler=sampler, cfg=cfg):
                render_rays(field, rays, cfg, sampler=sampler)

            rows.append((f"render 4096 rays, {label}", f"{count} samples", median_time(run, repeats)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench_encodings(args.repeats) + bench_render(args.repeats)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}")
    print(f"{'case':<46} {'size':>16} {'median ms':>10}")
    for name, size, t in rows:
        print(f"{name:<46} {size:>16} {t * 1000:>10.1f}")


if __name__ == "__main__":
    main()
