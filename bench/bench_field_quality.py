"""Quality of neural-field reconstruction on the real LPS head scan, within a wall-clock training budget.

Renders ``../shared/data/lps_head/head.obj`` into a 32-view sphere32 capture (head frame, 15.5 cm wide head;
every 4th view held out: 24 train / 8 test), trains a field for as many steps as fit in ``--minutes`` and prints
held-out PSNR (whole image and inside the mask), SSIM, steps and seconds, plus the PSNR of the held-out views seen
from behind (camera centre z < 0 in the head frame: the back of the head and behind the ears).

    .venv/bin/python bench/bench_field_quality.py --resolution 256 --minutes 15 --encoding hashgrid
    .venv/bin/python bench/bench_field_quality.py --resolution 256 --minutes 15 --encoding hashgrid --chamfer
    .venv/bin/python bench/bench_field_quality.py --resolution 256 --minutes 15 --equal-memory
    .venv/bin/python bench/bench_field_quality.py --resolution 256 --minutes 15 --encoding hashgrid --distill

**Time budget.** One ``train_field`` run with ``max_seconds`` (the training loop stops after the step during which
the budget ran out, with a checkpoint) and ``anneal_over_budget``: the learning rate's exponential decay and the
VolSDF beta annealing follow the share of the budget spent, so they end where a run of known length would.

**Modes** (combine freely):

- ``--chamfer``: trains the chosen encoding with *both* geometries (density and SDF; ``--sdf`` only picks which is
  listed first; ``--chamfer-main-only`` trains just the one ``--sdf`` picks), extracts each mesh by marching cubes
  (``extract_mesh``: the geometry half of ``field_to_mesh``; no texture is baked) and reports the mean Chamfer
  distance to the scan in both directions, in the Chamfer convention's frame where the head is 25 cm wide. The capture
  is rendered at the real 15.5 cm scale, so the extracted mesh is scaled by 0.25 / 0.155 about the head-frame origin:
  the head-frame transform is ``p' = s R (p - centre)`` with the centre and rotation measured on the unscaled scan and
  only ``s`` depending on the target width, so scaling the 15.5 cm frame by the ratio gives exactly the 25 cm frame
  (checked against the scan brought directly into the 25 cm frame). Both point sets are cropped twice (rows of the
  table): to the field's box shrunk by two marching-cubes cells (the extracted mesh is capped where the box cuts the
  shoulders), and to the capture's scene bounds, which the field box pads by 5%: the scan goes on past the box and
  the images see it, so the field paints that surface onto its box walls and the padding band is not head geometry.
  Scan -> recon is reported over the whole (cropped) scan and
  over its *observed* surface, the samples some camera of the capture sees (``depth_map_visibility``: within 2 mm
  behind a view's depth map), as the DTU benchmark's observation masks do: the LPS scan holds a closed mouth cavity
  behind the lips (about a tenth of its area) that no camera outside the head can see.
- ``--equal-memory``: trains a tri-plane (R^2 x C per plane) and a tri-grid ((R/2)^2 x 4 x C per grid: the same
  parameter count) and compares held-out PSNR, especially on the views from behind, where the tri-grid's depth
  slices should keep front and back apart.
- ``--distill``: distils the trained field into the two other encodings (``headforge.stages.distill``, within
  ``--distill-minutes`` each) and reports the held-out PSNR each student keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch
from rich.console import Console
from rich.table import Table

from headforge.captures.formats import read_capture
from headforge.captures.inspect import summarize
from headforge.config_io import from_dict
from headforge.geometry.camera_rigs import RigConfig, RigKind
from headforge.geometry.head_frame import HeadFrameSpec, to_head_frame
from headforge.geometry.rays import Rays, generate_rays
from headforge.geometry.visibility import depth_map_visibility
from headforge.renderers.occupancy import OccupancyConfig
from headforge.renderers.volume import VolumeRendererConfig, render_rays
from headforge.representations.fields.field import FieldConfig, RadianceField
from headforge.representations.fields.hash_grid import HashGridConfig
from headforge.representations.fields.planes import PlaneConfig
from headforge.representations.fields.sdf import HEAD_CURVATURE_RADIUS, volsdf_silhouette_offset
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import load_mesh
from headforge.stages.distill import DistillConfig, distill_field
from headforge.stages.evaluate import Evaluation, evaluate
from headforge.stages.field_train import FieldTrainConfig, FieldTrainResult, field_render_fn, train_field
from headforge.stages.gaussian_train import latest_checkpoint
from headforge.stages.mesh_cleanup import nearest_distances, sample_surface
from headforge.stages.mesh_extract import MeshExtractConfig, extract_mesh
from headforge.stages.render_capture import RenderCaptureConfig, render_capture
from headforge.stages.views import ViewBatch, load_views

DATA = Path(os.environ.get("HEADFORGE_LPS_HEAD", Path(__file__).resolve().parents[2] / "shared" / "data" / "lps_head"))
CAPTURE_HEAD_WIDTH = 0.155  # metres: the capture is rendered at a real head's size
CHAMFER_HEAD_WIDTH = 0.25  # metres: the Chamfer convention scales the head to 25 cm wide
OBSERVED_TOLERANCE = 0.002  # metres (capture scale): a scan point within this behind a view's depth map is seen
ENCODINGS = ("hashgrid", "triplane", "trigrid")


# ---------------------------------------------------------------------------------------------- configs
def field_config(encoding: str, sdf: bool, planes: PlaneConfig | None = None) -> FieldConfig:
    """The fields_default preset's encodings (CPU, 256 px): hash grid L=16, T=2^18, N<=1024; planes 128^2 x 16,
    tri-grid depth 4 (its default keeps the plane resolution, so it has 4x the tri-plane's parameters)."""
    return FieldConfig(encoding=encoding, sdf=sdf,
                       hashgrid=HashGridConfig(n_levels=16, log2_table_size=18, max_resolution=1024),
                       planes=planes or PlaneConfig(resolution=128, channels=16, depth=4))


def train_config(field: FieldConfig, args: argparse.Namespace) -> FieldTrainConfig:
    occupancy = OccupancyConfig(resolution=args.occupancy_resolution, warmup_steps=128, step_size=args.step_size)
    return FieldTrainConfig(field=field, occupancy=occupancy,
                            steps=args.max_steps, rays_per_batch=args.rays_per_batch, checkpoint_every=args.max_steps,
                            beta_final=args.beta_final if field.sdf else None)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class BudgetRun:
    result: FieldTrainResult
    cfg: FieldTrainConfig  # the config it trained with (for rendering)
    steps: int
    seconds: float  # training wall clock


def train_for_budget(train: ViewBatch, bounds, cfg: FieldTrainConfig, budget_s: float, ckpt_dir: Path,
                     progress: bool, device: str = "cpu") -> BudgetRun:
    """One train_field run with the wall-clock budget ``max_seconds = budget_s`` (at most ``cfg.steps``); the lr decay
    and the beta annealing follow the share of the budget spent (``anneal_over_budget``)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for old in ckpt_dir.glob("step_*.pt"):
        old.unlink()
    cfg = dataclasses.replace(cfg, max_seconds=budget_s, anneal_over_budget=True, checkpoint_minutes=None)
    result = train_field(train, bounds, cfg, checkpoint_dir=ckpt_dir, progress=progress, device=device)
    if result.steps == 0:
        raise RuntimeError("no training step was run (is --max-steps 0?)")
    return BudgetRun(result, cfg, result.steps, result.seconds)


def load_budget_run(train: ViewBatch, bounds, ckpt_dir: Path) -> BudgetRun:
    """The field a previous run left in ``ckpt_dir`` (its last checkpoint, with its own config), untrained further.
    Its training seconds are unknown (NaN)."""
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise SystemExit(f"--score-only: no checkpoint in {ckpt_dir}; run the benchmark with this --out first")
    payload = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = from_dict(FieldTrainConfig, payload["config"], ckpt)
    result = train_field(train, bounds, cfg, checkpoint_dir=ckpt_dir, resume=True, progress=False)  # 0 steps
    return BudgetRun(result, cfg, payload["step"], math.nan)


# ---------------------------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Scores:
    psnr: float
    psnr_masked: float | None
    ssim: float
    psnr_back: float  # mean over the held-out views seen from behind (camera z < 0)
    psnr_back_masked: float | None


def score(model: RadianceField, grid, cfg: FieldTrainConfig, test: ViewBatch, background: torch.Tensor,
          back: tuple[int, ...]) -> tuple[Scores, Evaluation]:
    ev = evaluate(field_render_fn(model, grid, cfg), test, background)
    bv = [v for v in ev.per_view if v.view in back]
    pm = [v.psnr_masked for v in bv if v.psnr_masked is not None]
    return Scores(ev.psnr, ev.psnr_masked, ev.ssim, sum(v.psnr for v in bv) / len(bv),
                  sum(pm) / len(pm) if pm else None), ev


def back_views(test: ViewBatch) -> tuple[int, ...]:
    """Held-out views whose camera centre is behind the head (z < 0; the face looks along +z)."""
    z = test.cameras.centers()[:, 2]
    back = tuple(i for i, zi in zip(test.indices, z.tolist(), strict=True) if zi < 0)
    if not back:
        raise RuntimeError(f"none of the held-out views {test.indices} looks from behind (camera z < 0)")
    return back


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------- chamfer
@dataclass(frozen=True)
class ChamferScores:
    scan_to_recon_mm: float  # over the whole scan (inside the box)
    scan_to_recon_observed_mm: float  # over the scan surface some capture camera sees (depth_map_visibility)
    recon_to_scan_mm: float
    observed_fraction: float  # of the scan's (cropped) surface samples
    faces: int
    scan_points: int
    recon_points: int


def scan_in_chamfer_frame() -> TexturedMesh:
    """The scan's vertices/faces in the 25 cm frame, checked to be the capture's frame scaled by 0.25 / 0.155."""
    mesh = load_mesh(DATA / "head.obj")
    small, _ = to_head_frame(mesh, HeadFrameSpec(head_width_m=CAPTURE_HEAD_WIDTH))
    big, _ = to_head_frame(mesh, HeadFrameSpec(head_width_m=CHAMFER_HEAD_WIDTH))
    k = CHAMFER_HEAD_WIDTH / CAPTURE_HEAD_WIDTH
    err = float((big.vertices.double() - k * small.vertices.double()).abs().max())
    if err > 1e-5:
        raise RuntimeError(f"the 25 cm head frame is not the 15.5 cm frame scaled by {k:.4f} (max error {err:.2e} m)")
    return big


def depth_bias_mm(model: RadianceField, grid, capture, indices: tuple[int, ...], chunk: int = 8192) -> float:
    """Median (rendered depth - true depth) over held-out pixels that are opaque in both (mm, 25 cm frame).

    The true depth is the capture's 16-bit depth map (camera-space z of the scan); the rendered one is the field's
    expected depth along the pixel's ray. Positive: the reconstructed surface lies behind the true one."""
    diffs = []
    rcfg = VolumeRendererConfig(normals=False, early_stop_eps=1e-4)
    for i in indices:
        rays = generate_rays(capture.cameras[i:i + 1])
        o, d, z = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3), rays.z_scale.reshape(-1)
        depth, alpha = [], []
        with torch.no_grad():
            for s in range(0, len(o), chunk):
                r = render_rays(model, Rays(o[s:s + chunk], d[s:s + chunk], z[s:s + chunk]), rcfg, grid.sampler())
                depth.append(r.depth_z[:, 0])
                alpha.append(r.alpha[:, 0])
        true = capture.load_depth(i).reshape(-1)
        both = (true > 0) & (torch.cat(alpha).double() > 0.99)
        diffs.append((torch.cat(depth).double() - true)[both])
    k = CHAMFER_HEAD_WIDTH / CAPTURE_HEAD_WIDTH
    return float(torch.cat(diffs).median()) * 1000 * k


def error_figure(path: Path, points, dist_mm, observed, title: str) -> None:
    """Scan samples [N, 3] (25 cm frame) coloured by their distance to the reconstruction (mm, clipped at 5), seen
    from four sides (painter's order, nearest drawn last); samples no camera sees are grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (title, horizontal axis, its sign, depth axis, sign toward the viewer): +x is the subject's left, +z the face
    views = (("front", 0, 1, 2, 1), ("back", 0, -1, 2, -1), ("subject's left", 2, -1, 0, 1),
             ("subject's right", 2, 1, 0, -1))
    fig, axes = plt.subplots(1, 4, figsize=(20, 6.5), layout="constrained")
    for ax, (name, h, hs, dp, ds) in zip(axes, views, strict=True):
        order = np.argsort(ds * points[:, dp])
        p, d, o = points[order], dist_mm[order], observed[order]
        colours = plt.get_cmap("viridis")(np.clip(d / 5.0, 0, 1))
        colours[~o] = (0.8, 0.8, 0.8, 1.0)
        ax.scatter(hs * p[:, h], p[:, 1], c=colours, s=1.0, linewidths=0)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(matplotlib.colors.Normalize(0, 5), "viridis"), ax=axes, shrink=0.8,
                 label="distance to the reconstruction (mm, 25 cm head); grey: no camera sees it")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def observed_scan_samples(scan: TexturedMesh, capture, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_points`` samples [n, 3] of the scan (25 cm frame) and whether some camera of the capture sees each [n]
    (depth-map test within OBSERVED_TOLERANCE, at the capture's scale)."""
    k = CHAMFER_HEAD_WIDTH / CAPTURE_HEAD_WIDTH
    points = sample_surface(scan, n_points, seed=1)
    depths = [capture.load_depth(i) for i in range(len(capture))]
    return points, depth_map_visibility(points.double() / k, capture.native_cameras, depths, OBSERVED_TOLERANCE) > 0


def chamfer_to_scan(model: RadianceField, scan_all: torch.Tensor, observed_all: torch.Tensor, scene_bounds,
                    mc_resolution: int, n_points: int, level: float | None = None,
                    figure: Path | None = None) -> dict[str, ChamferScores]:
    """Chamfer distance (mm, 25 cm frame) between the field's marching-cubes mesh at iso ``level`` (None: the
    default, 0 for SDF fields) and the scan, for two crops:

    - ``field box``: the field's box less two marching-cubes cells (the extracted mesh is capped where the box cuts
      the shoulders, and that cap is not reconstruction error);
    - ``scene bounds``: the capture's own bounds (``summarize``), which the field box pads by 5% on each side. The
      scan goes on past the box (shoulders), and the images see that part: a field cannot hold surface outside its
      box, so it puts what those pixels show on the box's walls, and the padding band next to them is corrupted.

    Scan -> recon is given over the whole cropped scan (``scan_all`` [n, 3], 25 cm frame) and over its observed
    part (``observed_all`` [n], from :func:`observed_scan_samples`), as DTU's observation masks do (the LPS scan has a
    closed mouth cavity behind the lips that no camera can see)."""
    k = CHAMFER_HEAD_WIDTH / CAPTURE_HEAD_WIDTH
    lo, hi = (b.detach().cpu() for b in model.bounds)
    mesh = extract_mesh(model.sdf if model.cfg.sdf else model.density, lo, hi,
                        MeshExtractConfig(resolution=mc_resolution, target_faces=None, progress=False, level=level),
                        is_sdf=model.cfg.sdf)
    recon_all = k * sample_surface(mesh, n_points, seed=0)
    margin = 2 * float((hi - lo).max()) / mc_resolution  # two marching-cubes cells (metres, capture scale)
    crops = {"field box": (lo + margin, hi - margin), "scene bounds": scene_bounds}
    out = {}
    for name, (c_lo, c_hi) in crops.items():
        def inside(p: torch.Tensor, a: torch.Tensor = k * c_lo, b: torch.Tensor = k * c_hi) -> torch.Tensor:
            return ((p >= a) & (p <= b)).all(-1)  # [N, 3] (25 cm frame) -> [N] bool

        recon, keep = recon_all[inside(recon_all)], inside(scan_all)
        target, observed = scan_all[keep], observed_all[keep].numpy()
        d_scan, d_recon = nearest_distances(target, recon), nearest_distances(recon, target)
        out[name] = ChamferScores(1000 * float(d_scan.mean()), 1000 * float(d_scan[observed].mean()),
                                  1000 * float(d_recon.mean()), float(observed.mean()), len(mesh.faces), len(target),
                                  len(recon))
        if figure is not None and name == "field box":
            error_figure(figure, target.numpy(), 1000 * d_scan, observed,
                         f"scan -> reconstruction, {figure.stem}: {out[name].scan_to_recon_observed_mm:.2f} mm mean "
                         f"on the observed surface")
    return out


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--split", choices=("spread", "every"), default="spread",
                    help="held-out views: 8 spread over azimuth, or every 4th view (the earlier figures)")
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget per trained field")
    ap.add_argument("--encoding", choices=ENCODINGS, default="hashgrid")
    ap.add_argument("--sdf", action="store_true", help="VolSDF geometry instead of density")
    ap.add_argument("--beta-final", type=float, default=None,
                    help="SDF fields: anneal VolSDF's beta bound to this many metres over the budget")
    ap.add_argument("--chamfer", action="store_true", help="train density and SDF; Chamfer distance to the scan")
    ap.add_argument("--chamfer-main-only", action="store_true",
                    help="with --chamfer: only the main geometry (--sdf or density), not both")
    ap.add_argument("--equal-memory", action="store_true", help="tri-plane vs tri-grid at equal parameter count")
    ap.add_argument("--distill", action="store_true", help="distil the trained field into the other encodings")
    ap.add_argument("--plane-resolution", type=int, default=128, help="R of the --equal-memory tri-plane")
    ap.add_argument("--plane-channels", type=int, default=16)
    ap.add_argument("--distill-minutes", type=float, default=None, help="per student (default: --minutes / 2)")
    ap.add_argument("--max-steps", type=int, default=100_000, help="cap on training steps")
    ap.add_argument("--rays-per-batch", type=int, default=2048)
    ap.add_argument("--occupancy-resolution", type=int, default=96)
    ap.add_argument("--step-size", type=float, default=None,
                    help="marching step in metres (default: box diagonal / 512)")
    ap.add_argument("--mc-resolution", type=int, default=256)
    ap.add_argument("--chamfer-points", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the main field trains")
    ap.add_argument("--out", type=Path, default=None, help="keep the capture and checkpoints here (else a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--score-only", action="store_true",
                    help="train nothing: score the last checkpoints a previous run left in --out (main fields only)")
    args = ap.parse_args()
    if not (DATA / "head.obj").is_file():
        raise SystemExit(f"LPS head not found at {DATA}")
    if args.score_only and (args.equal_memory or args.distill):
        raise SystemExit("--score-only scores the main fields only; drop --equal-memory / --distill")
    if args.plane_resolution % 2:
        raise SystemExit("--plane-resolution must be even (the equal-memory tri-grid uses R/2)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    progress = not args.quiet
    budget = args.minutes * 60
    root = args.out or Path(tempfile.mkdtemp(prefix="hf-field-bench-"))
    capture_dir = root / f"lps_capture_{args.resolution}"
    if not capture_dir.exists():
        cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.SPHERE32, resolution=args.resolution),
                                  head_frame=HeadFrameSpec(head_width_m=CAPTURE_HEAD_WIDTH), test_every=4)
        render_capture(load_mesh(DATA / "head.obj"), cfg, capture_dir, progress=progress)
    capture = read_capture(capture_dir / "transforms.json", test_every=4,
                           test_views=range(0, 32, 4) if args.split == "every" else None)
    summary = summarize(capture)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    train = load_views(capture, capture.split.train)
    test = load_views(capture, capture.split.test)
    back = back_views(test)
    console = Console(width=None if sys.stdout.isatty() else 150)  # wide tables in logs too
    console.print(f"LPS head: {len(train)} train / {len(test)} held-out views at {args.resolution} px; held-out views "
                  f"from behind (camera z < 0): {back}; budget {args.minutes:g} min per field; "
                  f"{torch.get_num_threads()} threads")
    record: dict = {"resolution": args.resolution, "minutes": args.minutes, "back_views": list(back)}

    # ---- the main field (and, for --chamfer, the other geometry)
    geometries = [args.sdf] + ([not args.sdf] if args.chamfer and not args.chamfer_main_only else [])
    runs: dict[str, tuple[BudgetRun, Scores]] = {}
    for sdf in geometries:
        name = f"{args.encoding}{' sdf' if sdf else ''}"
        ckpt_dir = root / "ckpt" / name.replace(" ", "_")
        if args.score_only:
            run = load_budget_run(train, bounds, ckpt_dir)
        else:
            run = train_for_budget(train, bounds, train_config(field_config(args.encoding, sdf), args), budget,
                                   ckpt_dir, progress, args.device)
        s, _ = score(run.result.field, run.result.grid, run.cfg, test, run.result.background, back)
        runs[name] = (run, s)
    table = Table(title=f"Held-out quality, LPS head, {args.resolution} px, {args.minutes:g} min budget")
    for col in ("field", "params", "steps", "train s", "PSNR", "PSNR masked", "SSIM", "PSNR back", "masked back"):
        table.add_column(col)
    for name, (run, s) in runs.items():
        table.add_row(name, f"{n_params(run.result.field):,}", str(run.steps), f"{run.seconds:.0f}", fmt(s.psnr),
                      fmt(s.psnr_masked), fmt(s.ssim, 4), fmt(s.psnr_back), fmt(s.psnr_back_masked))
        record[name] = {"steps": run.steps, "seconds": run.seconds,
                        "params": n_params(run.result.field), **dataclasses.asdict(s)}
    console.print(table)

    if args.chamfer:
        scan_points, observed = observed_scan_samples(scan_in_chamfer_frame(), capture, args.chamfer_points)
        k = CHAMFER_HEAD_WIDTH / CAPTURE_HEAD_WIDTH
        table = Table(title="Chamfer distance to the LPS scan (head 25 cm wide; mm; 'observed': the scan surface some "
                            "camera sees; crops: see chamfer_to_scan); depth bias: median rendered - true depth on "
                            "held-out views (mm, > 0: behind)")
        for col in ("field", "level", "crop", "scan -> recon (all)", "scan -> recon (observed)", "recon -> scan",
                    "mean (all)", "mean (observed)", "observed", "faces", "points scan / recon", "depth bias"):
            table.add_column(col)
        for name, (run, _) in runs.items():
            field = run.result.field
            bias = depth_bias_mm(field, run.result.grid, capture, test.indices)
            levels = {"default": None}
            if field.cfg.sdf:  # also the level where VolSDF's renders put the silhouette (see its docstring)
                h = volsdf_silhouette_offset(float(field.volsdf.beta.detach()), HEAD_CURVATURE_RADIUS)
                levels = {"0": 0.0, f"h = {1000 * k * h:.2f} mm": h}
            record[name]["chamfer"] = {}
            for level_name, level in levels.items():
                figure = root / f"chamfer_{name.replace(' ', '_')}_level_{level_name.split()[0]}.png"
                scores = chamfer_to_scan(field, scan_points, observed, bounds, args.mc_resolution,
                                         args.chamfer_points, level, figure)
                for crop, c in scores.items():
                    table.add_row(name, level_name, crop, fmt(c.scan_to_recon_mm), fmt(c.scan_to_recon_observed_mm),
                                  fmt(c.recon_to_scan_mm), fmt((c.scan_to_recon_mm + c.recon_to_scan_mm) / 2),
                                  fmt((c.scan_to_recon_observed_mm + c.recon_to_scan_mm) / 2),
                                  f"{100 * c.observed_fraction:.1f}%", f"{c.faces:,}",
                                  f"{c.scan_points:,} / {c.recon_points:,}", fmt(bias))
                    record[name]["chamfer"][f"{level_name} / {crop}"] = dataclasses.asdict(c)
            record[name]["depth_bias_mm"] = bias
        console.print(table)

    if args.equal_memory:
        R, C = args.plane_resolution, args.plane_channels
        variants = {f"triplane {R}^2 x {C}": PlaneConfig(resolution=R, channels=C),
                    f"trigrid {R // 2}^2 x 4 x {C}": PlaneConfig(resolution=R // 2, channels=C, depth=4)}
        table = Table(title="Tri-plane vs tri-grid at equal memory (held-out PSNR; 'back' = cameras behind the head)")
        for col in ("field", "params", "steps", "train s", "PSNR", "PSNR masked", "PSNR back", "masked back"):
            table.add_column(col)
        counts = []
        for name, planes in variants.items():
            enc = name.split()[0]
            run = train_for_budget(train, bounds, train_config(field_config(enc, args.sdf, planes), args), budget,
                                   root / "ckpt" / enc, progress)
            s, _ = score(run.result.field, run.result.grid, run.cfg, test, run.result.background, back)
            counts.append(sum(p.numel() for p in run.result.field.encoding.parameters()))
            table.add_row(name, f"{n_params(run.result.field):,}", str(run.steps), f"{run.seconds:.0f}", fmt(s.psnr),
                          fmt(s.psnr_masked), fmt(s.psnr_back), fmt(s.psnr_back_masked))
            record[name] = {"steps": run.steps, "seconds": run.seconds, "params": n_params(run.result.field),
                            **dataclasses.asdict(s)}
        if counts[0] != counts[1]:
            raise RuntimeError(f"the two encodings do not have equal memory: {counts}")
        console.print(table)

    if args.distill:
        teacher_name = next(iter(runs))
        run, ts = runs[teacher_name]
        minutes = args.distill_minutes if args.distill_minutes is not None else args.minutes / 2
        table = Table(title=f"Distillation of the {teacher_name} field ({minutes:g} min per student)")
        for col in ("student", "params", "steps", "s", "PSNR", "PSNR masked", "SSIM", "PSNR kept (dB)"):
            table.add_column(col)
        table.add_row(f"{teacher_name} (teacher)", f"{n_params(run.result.field):,}", str(run.steps),
                      f"{run.seconds:.0f}", fmt(ts.psnr), fmt(ts.psnr_masked), fmt(ts.ssim, 4), "")
        for enc in (e for e in ENCODINGS if e != args.encoding):
            d = distill_field(run.result.field, run.result.grid, field_config(enc, run.cfg.field.sdf),
                              DistillConfig(steps=args.max_steps, max_seconds=minutes * 60), progress=progress)
            s, _ = score(d.student, d.grid, run.cfg, test, run.result.background, back)
            table.add_row(enc, f"{n_params(d.student):,}", str(d.steps), f"{d.seconds:.0f}", fmt(s.psnr),
                          fmt(s.psnr_masked), fmt(s.ssim, 4), fmt(s.psnr - ts.psnr))
            record[f"distill {teacher_name} -> {enc}"] = {"steps": d.steps, "seconds": d.seconds,
                                                         "params": n_params(d.student), **dataclasses.asdict(s)}
        console.print(table)
    print(json.dumps(record))
    print(f"outputs (captures, checkpoints, Chamfer error figures): {root}")


if __name__ == "__main__":
    main()
