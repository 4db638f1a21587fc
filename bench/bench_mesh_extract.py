"""Benchmark field -> textured mesh on CPU: wall time per stage (a table), mesh quality, Chamfer to the full mesh.

Run: ``.venv/bin/python bench/bench_mesh_extract.py [--field analytic|radiance|run] [--run RUN_DIR]
[--resolution 256]``.

- ``analytic``: a head-like SDF (a squashed sphere with a nose bump and a neck cut by the box, so the cap and the
  decimation are exercised) with a cheap colour function: the extraction machinery alone.
- ``radiance``: an untrained SDF ``RadianceField`` (hash grid, default decoder sizes): adds the cost of querying
  a real network for every grid point and texture sample.
- ``run``: the field of a finished ``headforge reconstruct`` run (``--run RUN_DIR``), e.g. the case of issue 9
  item 12: ``reconstruct --method hashgrid --preset fast --resolution 64 --steps 300`` on the sample head, whose
  extract-mesh sat for more than 25 minutes in the xatlas unwrap. For an LPS VolSDF run (``--sdf --preset sdf``)
  this is the engine-readiness check of its mesh.

Every case goes through :func:`headforge.stages.mesh_stage.extract_mesh_stage` (into a temporary folder) and prints
the stage times, the :class:`MeshReport` of the result, and, for comparison, the report of the same marching-cubes
mesh decimated without the repair (what extract-mesh wrote before issue 9).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.representations.mesh_io import load_mesh
from headforge.stages.mesh_cleanup import chamfer_distance, decimate, sample_surface, weld_and_drop_degenerate
from headforge.stages.mesh_extract import extract_mesh, field_bounds, iso_level
from headforge.stages.mesh_quality import mesh_report
from headforge.stages.mesh_stage import extract_mesh_stage
from headforge.stages.mesh_types import MeshExtractConfig, UnwrapMethod


def head_sdf(p: torch.Tensor) -> torch.Tensor:  # [N, 3] -> [N, 1] (approximately metric)
    q = p / torch.tensor([0.075, 0.1, 0.09])
    skull = (q.norm(dim=-1) - 1) * 0.075
    nose = (p - torch.tensor([0.0, -0.01, 0.09])).norm(dim=-1) - 0.015
    neck = torch.maximum((p[:, [0, 2]] / torch.tensor([0.05, 0.05])).norm(dim=-1) * 0.05 - 0.05, p[:, 1] + 0.02)
    return torch.minimum(torch.minimum(skull, nose), neck)[:, None]


def head_color(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [N, 3], [N, 3] -> [N, 3]
    t = torch.sigmoid(p[:, 1:2] / 0.02)
    return torch.cat([0.8 - 0.5 * t, 0.6 - 0.4 * t, 0.5 - 0.3 * t], -1)


def make_field(args: argparse.Namespace):
    if args.field == "analytic":
        return SimpleNamespace(cfg=SimpleNamespace(sdf=True), bounds=(torch.full((3,), -0.2), torch.full((3,), 0.2)),
                               sdf=head_sdf, density=None, color=head_color)
    if args.field == "radiance":
        from headforge.representations.fields import FieldConfig, RadianceField

        return RadianceField(FieldConfig(sdf=True, prefer_tcnn=False)).eval()
    if args.run is None:
        raise SystemExit("--field run needs --run RUN_DIR")
    from headforge.pipeline.methods import load_field

    return load_field(Path(args.run) / "field.pt")[0].eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--field", choices=["analytic", "radiance", "run"], default="analytic")
    ap.add_argument("--run", type=Path, default=None, help="RUN_DIR of a finished field run (--field run)")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--target-faces", type=int, default=100_000)
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--unwrap", choices=[m.value for m in UnwrapMethod], default="auto")
    ap.add_argument("--unwrap-seconds", type=float, default=180.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    field = make_field(args)
    cfg = MeshExtractConfig(resolution=args.resolution, target_faces=args.target_faces,
                            texture_size=args.texture_size, unwrap=UnwrapMethod(args.unwrap),
                            unwrap_seconds=args.unwrap_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = extract_mesh_stage(field, cfg, Path(tmp) / "mesh")
        total = time.perf_counter() - start
        mesh = load_mesh(result.files.ply)

        # the same grid without the repair (as before issue 9): marching cubes, weld, decimate
        raw_cfg = MeshExtractConfig(resolution=args.resolution, target_faces=None, keep_largest_component=False,
                                    fill_holes_max_edges=0, level=cfg.level, progress=False)
        is_sdf = bool(field.cfg.sdf)
        lo, hi = field_bounds(field, cfg)
        full = extract_mesh(field.sdf if is_sdf else field.density, lo, hi, raw_cfg, is_sdf=is_sdf)
        old = decimate(weld_and_drop_degenerate(full), args.target_faces)

    print(f"\nfield={args.field}{' ' + str(args.run) if args.run else ''} resolution={args.resolution} "
          f"threads={args.threads} level={iso_level(cfg, is_sdf):g} target_faces={args.target_faces} "
          f"texture={args.texture_size} unwrap={args.unwrap} -> {result.unwrap.value}\n")
    print(f"| {'stage':<26s} | {'seconds':>8s} |\n|{'-' * 28}|{'-' * 10}|")
    for name, sec in result.seconds:
        print(f"| {name:<26s} | {sec:8.2f} |")
    print(f"| {'total':<26s} | {total:8.2f} |\n")
    print("written:  " + result.report.summary())
    print("no repair: " + mesh_report(old).summary())
    a_to_b, b_to_a = chamfer_distance(sample_surface(mesh, 100_000), sample_surface(full, 100_000, seed=1))
    print(f"written vs full marching-cubes mesh, Chamfer: {a_to_b * 1000:.3f} / {b_to_a * 1000:.3f} mm")


if __name__ == "__main__":
    main()
