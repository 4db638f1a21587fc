"""Benchmark field -> textured mesh on CPU: wall time per stage and mesh sizes.

Run: ``.venv/bin/python bench/bench_mesh_extract.py [--field analytic|radiance] [--resolution 256]``.
``analytic`` is a head-like SDF (a squashed sphere with a nose bump and a neck cut by the box, so the cap and
the decimation are exercised) with a cheap colour function: it measures the extraction machinery alone.
``radiance`` is an untrained SDF ``RadianceField`` (hash grid, default decoder sizes): it adds the cost of
querying a real network for every grid point and texture sample.
"""

from __future__ import annotations

import argparse
import time

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.stages.mesh_cleanup import chamfer_distance, clean_mesh, sample_surface
from headforge.stages.mesh_extract import MeshExtractConfig, extract_mesh
from headforge.stages.texture_bake import bake_onto_uvs, unwrap_uvs


def head_sdf(p: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, 1] (approximately metric)
    q = p / torch.tensor([0.075, 0.1, 0.09])
    skull = (q.norm(dim=-1) - 1) * 0.075
    nose = (p - torch.tensor([0.0, -0.01, 0.09])).norm(dim=-1) - 0.015
    neck = torch.maximum((p[:, [0, 2]] / torch.tensor([0.05, 0.05])).norm(dim=-1) * 0.05 - 0.05, p[:, 1] + 0.02)
    return torch.minimum(torch.minimum(skull, nose), neck)[:, None]


def head_color(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [N, 3], [N, 3] -> [N, 3]
    t = torch.sigmoid(p[:, 1:2] / 0.02)
    return torch.cat([0.8 - 0.5 * t, 0.6 - 0.4 * t, 0.5 - 0.3 * t], -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--field", choices=["analytic", "radiance"], default="analytic")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--target-faces", type=int, default=100_000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = MeshExtractConfig(resolution=args.resolution, target_faces=None, texture_size=args.texture_size)
    lo, hi = (-0.2, -0.2, -0.2), (0.2, 0.2, 0.2)
    if args.field == "analytic":
        scalar_fn, color_fn = head_sdf, head_color
    else:
        from headforge.representations.fields import FieldConfig, RadianceField

        field = RadianceField(FieldConfig(sdf=True, prefer_tcnn=False)).eval()
        scalar_fn, color_fn = field.sdf, field.color
    times: dict[str, float] = {}

    t = time.perf_counter()
    raw = extract_mesh(scalar_fn, lo, hi, cfg, is_sdf=True)  # sample + marching cubes + weld/largest/holes
    times["sample + marching cubes + cleanup"] = time.perf_counter() - t
    t = time.perf_counter()
    mesh = clean_mesh(raw, keep_largest=False, fill_holes_max_edges=0, target_faces=args.target_faces)
    times[f"decimate {raw.num_faces} -> {mesh.num_faces}"] = time.perf_counter() - t
    t = time.perf_counter()
    mesh = unwrap_uvs(mesh, texture_size=cfg.texture_size, padding=cfg.texture_padding)
    times["xatlas unwrap"] = time.perf_counter() - t
    t = time.perf_counter()
    mesh = bake_onto_uvs(mesh, color_fn, cfg)
    times[f"bake {cfg.texture_size}^2 x {cfg.bake_supersample ** 2} samples"] = time.perf_counter() - t

    a_to_b, b_to_a = chamfer_distance(sample_surface(mesh, 100_000), sample_surface(raw, 100_000, seed=1))
    print(f"field={args.field} resolution={args.resolution} threads={args.threads} "
          f"voxel={0.4 / args.resolution * 1000:.2f} mm")
    for name, sec in times.items():
        print(f"  {name:<45s} {sec:8.2f} s")
    print(f"  decimated vs full mesh Chamfer: {a_to_b * 1000:.3f} / {b_to_a * 1000:.3f} mm")


if __name__ == "__main__":
    main()
