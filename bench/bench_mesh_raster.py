"""Benchmark the pure-torch mesh rasterizer on CPU: median wall times for forward and forward+backward.

Run: ``.venv/bin/python bench/bench_mesh_raster.py`` (uses 2 torch threads). The mesh is an
icosphere (subdivision 5 -> 20,480 triangles) and a latitude-longitude sphere (exactly 100,000
triangles), both bumped and squashed like a head and filling about 60 % of the image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.renderers.mesh_raster import rasterize
from headforge.renderers.mesh_shading import interpolate, texture


def icosphere(subdivisions: int) -> tuple[torch.Tensor, torch.Tensor]:  # -> [V, 3], [F, 3]
    t = (1 + 5 ** 0.5) / 2
    v = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                      [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    f = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                      [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values  # [3F, 2]
        uniq, inv = torch.unique(edges, dim=0, return_inverse=True)
        mids = len(v) + inv.reshape(3, -1).T  # [F, 3] midpoint of edges (01, 12, 20)
        v = torch.cat([v, (v[uniq[:, 0]] + v[uniq[:, 1]]) / 2])
        a, b, c = f.unbind(1)
        m01, m12, m20 = mids.unbind(1)
        f = torch.cat([torch.stack(x, 1) for x in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    v = v / v.norm(dim=1, keepdim=True)
    return v, f


def uv_sphere(n_lat: int, n_lon: int) -> tuple[torch.Tensor, torch.Tensor]:  # 2 n_lon (n_lat - 1) faces
    theta = torch.arange(1, n_lat, dtype=torch.float64) * torch.pi / n_lat  # [n_lat - 1] rings
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * torch.pi / n_lon
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
    v = torch.cat([ring, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)])
    top, bottom = len(ring), len(ring) + 1
    idx = torch.arange(len(ring)).reshape(n_lat - 1, n_lon)
    a, b = idx[:-1], idx[:-1].roll(-1, 1)
    c, d = idx[1:], idx[1:].roll(-1, 1)
    quads = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    caps = torch.cat([torch.stack([torch.full_like(idx[0], top), idx[0], idx[0].roll(-1)], -1),
                      torch.stack([torch.full_like(idx[-1], bottom), idx[-1].roll(-1), idx[-1]], -1)])
    return v, torch.cat([quads, caps])


def head_like(v: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bump = 1 + 0.08 * torch.sin(5 * v[:, 0]) * torch.cos(4 * v[:, 1]) + 0.05 * torch.relu(v[:, 2])
    v = v * bump[:, None] * torch.tensor([0.85, 1.1, 0.95], dtype=v.dtype)
    return v.float(), f


def to_clip(v: torch.Tensor, near: float = 0.5, far: float = 10.0, focal: float = 2.75) -> torch.Tensor:
    z = v[:, 2] + 3.2  # camera looks down +z at the head
    a, b = (far + near) / (far - near), -2 * far * near / (far - near)
    return torch.stack([focal * v[:, 0], focal * v[:, 1], a * z + b, z], -1)[None]


def timings(fn, repeats: int) -> tuple[float, float]:  # (median, min) seconds
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meshes = {"20k": head_like(*icosphere(5)), "100k": head_like(*uv_sphere(201, 250))}
    tex = torch.rand(512, 512, 3)
    rows = []
    for label, (verts, faces) in meshes.items():
        uvs = verts[:, :2] * 0.5 + 0.5  # planar projection, enough for timing
        for res in (256, 512):
            clip = to_clip(verts)

            def forward(clip=clip, faces=faces, res=res):
                with torch.no_grad():
                    return rasterize(clip, faces, (res, res), backend="torch")

            def forward_backward(clip=clip, faces=faces, res=res, uvs=uvs):
                c = clip.clone().requires_grad_(True)
                t = tex.clone().requires_grad_(True)
                r = rasterize(c, faces, (res, res), backend="torch")
                uv = interpolate(uvs, r, faces)
                texture(t, uv, filter="linear").mean().backward()

            cover = forward().mask.float().mean().item()
            rows.append((label, len(faces), res, cover, *timings(forward, args.repeats),
                         *timings(forward_backward, args.repeats)))
    header = (f"{'mesh':>6} {'faces':>7} {'res':>5} {'cover':>6} {'fwd med':>8} {'fwd min':>8} {'f+b med':>8} "
              f"{'f+b min':>8}")
    print(f"mesh rasterizer, torch CPU path, {torch.get_num_threads()} threads, seconds over {args.repeats} runs "
          "(other processes sharing the cores inflate the medians; min is the cleaner figure)")
    print(header)
    print("-" * len(header))
    for label, nf, res, cover, tf, tf_min, tb, tb_min in rows:
        print(f"{label:>6} {nf:>7} {res:>4}² {cover:>6.2f} {tf:>8.3f} {tf_min:>8.3f} {tb:>8.3f} {tb_min:>8.3f}")


if __name__ == "__main__":
    main()
