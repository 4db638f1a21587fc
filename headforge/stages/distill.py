"""Stage: distil one neural field into another representation (Progressive Volume Distillation, Fang et al. 2023).

A trained *teacher* (any encoding: hash grid, tri-plane, tri-grid; density or SDF geometry) is queried at 3D
points and a freshly initialised *student* (any encoding) is fitted to its outputs directly in 3D, with no
images involved. The student keeps the teacher's bounds (``student_cfg``'s bounds are replaced).

**Where the points come from** (each step draws ``batch_points`` of them):

- ``uniform_share`` uniformly in the box: teaches empty space (and whatever the teacher has elsewhere);
- ``occupied_share`` uniformly inside the teacher's occupied occupancy-grid cells (the whole occupied volume);
- the rest from a *surface pool*: random rays from a sphere around the box through random points in it are
  rendered with the teacher (no grad, its occupancy grid for sampling) and points are drawn from the samples
  with probability proportional to the rendering weight, uniformly within each sample's interval. These are
  the points that make the pictures, each paired with the direction it was seen from. The pool is redrawn
  every ``pool_refresh`` steps.

**Losses.** Raw densities span orders of magnitude (0 in air, 10^3-10^4 per metre inside), so density is matched
on the bounded opacity scale ``alpha_k = 1 - exp(-sigma * delta_k)`` at a few interval lengths
``delta_k = step * alpha_scales[k]`` (``step`` is the teacher grid's marching step): small deltas resolve the
sharp surface, large ones keep a gradient for thin haze. Colour is an alpha-weighted MSE (colour matters only
where there is something to see): surface-pool points use their viewing direction, the others a uniformly random
direction. SDF students add the eikonal loss. Adam with exponential learning-rate decay; seeded.

After distillation the student gets its own occupancy grid (the teacher grid's configuration), rebuilt from the
student's density: every cell scored at ``grid_rounds`` random points, ``occs = max`` of the scores.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Annotated, Protocol

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.geometry.rays import Rays
from headforge.renderers.occupancy import OccupancyGrid, binarize, cell_points, ema_update
from headforge.renderers.volume import Sampling, VolumeRendererConfig, clip_rays, render_samples
from headforge.representations.fields.field import FieldConfig, RadianceField
from headforge.representations.fields.sdf import eikonal_loss
from headforge.training.loop import Hook, LoopOptions, run_loop, seed_everything
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, OptionError, Positive, Seconds


@dataclass(frozen=True)
class DistillConfig(Checked):
    steps: NonNegativeInt = 2000
    batch_points: Count = 8192
    uniform_share: Fraction = 0.2  # of each batch: uniform in the box
    occupied_share: Fraction = 0.2  # in the teacher's occupied grid cells; the rest from the surface pool
    pool_rays: Count = 4096  # rays rendered with the teacher to build the surface pool
    pool_points: Count = 65536  # points drawn (by rendering weight) into the pool
    pool_refresh: Count = 250  # steps between pool rebuilds
    # density loss intervals, in teacher-grid marching steps
    alpha_scales: Annotated[tuple[Positive, ...], at.MinLen(1)] = (1.0, 16.0)
    density_weight: NonNegative = 1.0
    color_weight: NonNegative = 1.0
    eikonal_weight: NonNegative = 0.1  # SDF students only
    lr: Positive = 1e-2
    lr_final: Positive = 1e-3
    max_seconds: Seconds | None = None  # stop when this much wall time is spent (None: run all steps); the lr then
    # decays with the share of this time spent, reaching lr_final at the end
    grid_rounds: Count = 4  # random points per cell when the student's occupancy grid is rebuilt
    seed: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if self.uniform_share + self.occupied_share > 1:
            raise OptionError("occupied_share", self.occupied_share,
                              f"<= 1 - uniform_share ({1 - self.uniform_share:g}): the two shares sum to <= 1")


@dataclass(frozen=True)
class DistillResult:
    student: RadianceField
    grid: OccupancyGrid  # rebuilt from the student's own density
    steps: int  # steps actually run (fewer than cfg.steps when max_seconds ran out)
    seconds: float
    history: tuple[tuple[int, float, float], ...]  # (step, density loss, colour loss)


class Teacher(Protocol):
    """What a teacher must offer (``RadianceField`` does); analytic stand-ins work too."""

    @property
    def bounds(self) -> tuple[Tensor, Tensor]: ...
    def density(self, points: Tensor) -> Tensor: ...  # [..., 3] -> [..., 1]
    def color(self, points: Tensor, directions: Tensor) -> Tensor: ...  # [..., 3] x2 -> [..., 3]
    def query(self, points: Tensor, directions: Tensor, normals: bool | None = None): ...


# ---------------------------------------------------------------------------------------------- maths
def opacity_at_scales(sigma: Tensor, deltas: Tensor) -> Tensor:  # [N, 1], [K] -> [N, K] = 1 - exp(-sigma delta)
    return -torch.expm1(-sigma * deltas)


def weighted_color_mse(rgb: Tensor, target: Tensor, weight: Tensor) -> Tensor:  # [N, 3], [N, 3], [N] -> []
    return (weight[:, None] * (rgb - target).square()).sum() / (3 * weight.sum().clamp_min(1e-8))


def uniform_in_box(n: int, lo: Tensor, hi: Tensor, generator: torch.Generator) -> Tensor:  # -> [n, 3]
    return lo + torch.rand(n, 3, generator=generator).to(lo) * (hi - lo)


def random_directions(n: int, generator: torch.Generator) -> Tensor:  # -> [n, 3] unit, uniform on the sphere
    return F.normalize(torch.randn(n, 3, generator=generator), dim=-1)


def occupied_points(grid: OccupancyGrid, n: int, generator: torch.Generator) -> Tensor:
    """n points [n, 3] uniform inside randomly chosen occupied cells of ``grid``."""
    occupied = grid.binaries.flatten().nonzero()[:, 0]  # [O]
    if len(occupied) == 0:
        raise RuntimeError("the teacher's occupancy grid has no occupied cell: the teacher is empty "
                           "(untrained or collapsed), there is nothing to distil")
    pick = occupied[torch.randint(len(occupied), (n,), generator=generator).to(occupied.device)]
    jitter = torch.rand(n, 3, generator=generator).to(grid.lo)
    return cell_points(pick, grid.cfg.resolution, grid.lo, grid.hi, jitter)


def random_box_rays(n: int, lo: Tensor, hi: Tensor, generator: torch.Generator) -> Rays:
    """n rays from a sphere around the box (radius 1.5 x its half diagonal) through uniform points in the box."""
    centre, radius = (lo + hi) / 2, float((hi - lo).norm()) / 2 * 1.5
    origins = centre + random_directions(n, generator).to(lo) * radius  # [n, 3]
    directions = F.normalize(uniform_in_box(n, lo, hi, generator) - origins, dim=-1)  # [n, 3]
    return Rays(origins, directions, torch.ones(n, dtype=lo.dtype, device=lo.device))


@torch.no_grad()
def surface_pool(teacher: Teacher, grid: OccupancyGrid, n_rays: int, n_points: int, generator: torch.Generator,
                 chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Points the teacher's renders are made of: (points [P, 3], their viewing directions [P, 3]).

    Random rays are rendered with ``grid``'s sampler; ``n_points`` samples are drawn with probability equal to
    their rendering weight (with replacement), each placed uniformly within its interval. Returns empty
    tensors when no ray sees anything.
    """
    lo, hi = (b.to(grid.lo) for b in teacher.bounds)
    rays = random_box_rays(n_rays, lo, hi, generator)
    rcfg = VolumeRendererConfig(stratified=True)
    pts, dirs, weights = [], [], []
    for s in range(0, n_rays, chunk):
        o, d = rays.origins[s:s + chunk], rays.directions[s:s + chunk]  # [R, 3] each
        t_near, t_far, hit = clip_rays(o, d, lo, hi, 0.0)
        smp = grid.march(o, d, t_near, t_far, hit, stratified=True, generator=generator)
        if len(smp) == 0:  # (the encodings cannot take zero points)
            continue
        r = render_samples(teacher, o, d, rays.z_scale[s:s + chunk], Sampling(smp), rcfg)
        u = torch.rand(len(smp), generator=generator).to(smp.t_starts)
        t = smp.t_starts + u * (smp.t_ends - smp.t_starts)  # [S]
        ds = d[smp.ray_indices]  # [S, 3]
        pts.append(o[smp.ray_indices] + ds * t[:, None])
        dirs.append(ds)
        weights.append(r.weights.detach())
    w = torch.cat(weights) if weights else torch.zeros(0)
    if len(w) == 0 or float(w.sum()) <= 0:
        empty = torch.zeros(0, 3, device=grid.lo.device)
        return empty, empty
    pick = torch.multinomial(w.cpu().double(), n_points, replacement=True, generator=generator).to(w.device)
    return torch.cat(pts)[pick], torch.cat(dirs)[pick]


@torch.no_grad()
def rebuild_grid(field: RadianceField | Teacher, like: OccupancyGrid, rounds: int,
                 generator: torch.Generator) -> OccupancyGrid:
    """A fresh occupancy grid with ``like``'s configuration over ``field``'s bounds, scored from ``field``'s
    density at ``rounds`` random points per cell (max of the opacity estimates), binarised like training does."""
    lo, hi = (b.detach().to(like.lo) for b in field.bounds)
    grid = OccupancyGrid(like.cfg, lo, hi).to(like.lo.device)
    idx = torch.arange(grid.n_cells, device=grid.lo.device)
    occs = grid.occs.clone()
    for _ in range(rounds):
        jitter = torch.rand(len(idx), 3, generator=generator).to(grid.lo)
        pts = cell_points(idx, grid.cfg.resolution, grid.lo, grid.hi, jitter)  # [C, 3]
        sigma = torch.cat([field.density(c).reshape(-1) for c in pts.split(grid.cfg.chunk)])  # [C]
        occs = ema_update(occs, idx, (sigma * grid.step_size).to(occs), 1.0)
    grid.occs.copy_(occs)
    grid.binaries.copy_(binarize(occs, grid.cfg.occ_thre).view_as(grid.binaries))
    return grid


def student_config(student_cfg: FieldConfig, teacher: Teacher) -> FieldConfig:
    lo, hi = teacher.bounds
    return dataclasses.replace(student_cfg, bounds_min=tuple(float(x) for x in lo),
                               bounds_max=tuple(float(x) for x in hi))


# ---------------------------------------------------------------------------------------------- the stage
class SurfacePoolHook(Hook):
    """Before each step, redraw the surface pool every ``pool_refresh`` steps (and at the first step)."""

    def __init__(self, teacher: Teacher, grid: OccupancyGrid, cfg: DistillConfig, generator: torch.Generator):
        self.teacher, self.grid, self.cfg, self.generator = teacher, grid, cfg, generator
        self.points: Tensor | None = None  # [P, 3]
        self.directions: Tensor | None = None  # [P, 3]

    def step_pre(self, step: int) -> None:
        if self.points is None or (step - 1) % self.cfg.pool_refresh == 0:
            self.points, self.directions = surface_pool(self.teacher, self.grid, self.cfg.pool_rays,
                                                        self.cfg.pool_points, self.generator)


@dataclass(frozen=True)
class DistillStep:
    loss: Tensor  # []
    density: Tensor  # [] density loss
    color: Tensor  # [] colour loss


class DistillTask:
    """One distillation step: a batch of 3D points (uniform / occupied / surface pool), student vs teacher."""

    def __init__(self, teacher: Teacher, teacher_grid: OccupancyGrid, student: RadianceField,
                 pool: SurfacePoolHook | None, cfg: DistillConfig, generator: torch.Generator):
        self.teacher, self.teacher_grid, self.student, self.pool = teacher, teacher_grid, student, pool
        self.cfg, self.generator = cfg, generator
        self.device = teacher_grid.lo.device
        self.lo, self.hi = (b.detach().to(teacher_grid.lo) for b in teacher.bounds)
        self.deltas = torch.tensor(cfg.alpha_scales, dtype=self.lo.dtype, device=self.device) \
            * teacher_grid.step_size  # [K]
        enc = [p for n, p in student.named_parameters() if n.startswith("encoding")]
        mlp = [p for n, p in student.named_parameters() if not n.startswith("encoding")]
        self.optimizer = torch.optim.Adam([{"params": enc}, {"params": mlp}], lr=cfg.lr, betas=(0.9, 0.99),
                                          eps=1e-15)
        self.decay = (cfg.lr_final / cfg.lr) ** (1 / max(cfg.steps, 1))
        self.n_uniform = round(cfg.batch_points * cfg.uniform_share)
        self.n_occupied = round(cfg.batch_points * cfg.occupied_share)
        self.n_surface = cfg.batch_points - self.n_uniform - self.n_occupied
        self.t0 = time.perf_counter()

    def forward(self, step: int) -> DistillStep:
        cfg, gen, lo, hi = self.cfg, self.generator, self.lo, self.hi
        n_uniform, n_occupied, n_surface = self.n_uniform, self.n_occupied, self.n_surface
        parts_p = [uniform_in_box(n_uniform, lo, hi, gen)]
        if n_occupied:
            parts_p.append(occupied_points(self.teacher_grid, n_occupied, gen))
        n_random_dirs = n_uniform + n_occupied
        if n_surface and len(self.pool.points):
            pick = torch.randint(len(self.pool.points), (n_surface,), generator=gen).to(self.device)
            parts_p.append(self.pool.points[pick])
            parts_d = [random_directions(n_random_dirs, gen).to(lo), self.pool.directions[pick]]
        else:  # nothing visible in the pool: fill the surface share uniformly
            parts_p.append(uniform_in_box(n_surface, lo, hi, gen))
            parts_d = [random_directions(cfg.batch_points, gen).to(lo)]
        points, dirs = torch.cat(parts_p), torch.cat(parts_d)  # [N, 3] each
        with torch.no_grad():
            t_out = self.teacher.query(points, dirs, normals=False)
            t_alpha = opacity_at_scales(t_out.density, self.deltas)  # [N, K]
        s_out = self.student.query(points, dirs, normals=True if self.student.cfg.sdf else False)
        s_alpha = opacity_at_scales(s_out.density, self.deltas)  # [N, K]
        density_loss = (s_alpha - t_alpha).square().mean()
        color_loss = weighted_color_mse(s_out.rgb, t_out.rgb, t_alpha[:, -1])  # weight: opacity at the widest delta
        loss = cfg.density_weight * density_loss + cfg.color_weight * color_loss
        if self.student.cfg.sdf and s_out.gradients is not None and cfg.eikonal_weight > 0:
            loss = loss + cfg.eikonal_weight * eikonal_loss(s_out.gradients)
        return DistillStep(loss, density_loss, color_loss)

    def update(self, step: int) -> None:
        cfg = self.cfg
        self.optimizer.step()
        for g in self.optimizer.param_groups:
            if cfg.max_seconds is None:
                g["lr"] *= self.decay
            else:  # the decay follows the share of the time budget spent (the step count is not known ahead)
                spent = min((time.perf_counter() - self.t0) / cfg.max_seconds, 1.0)
                g["lr"] = cfg.lr * self.decay ** (cfg.steps * spent)

    def log_row(self, step: int, out: DistillStep) -> tuple[int, float, float]:
        return step, out.density.item(), out.color.item()

    def postfix(self, row: tuple) -> dict[str, str]:
        return {"density": f"{row[1]:.2e}", "colour": f"{row[2]:.2e}"}

    def state(self) -> dict:
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict()}


def distill_field(teacher: Teacher, teacher_grid: OccupancyGrid, student_cfg: FieldConfig, cfg: DistillConfig, *,
                  progress: bool = True) -> DistillResult:
    """Fit a new field with ``student_cfg`` (bounds taken from the teacher) to ``teacher`` in 3D; see the module
    docstring. Runs on the teacher grid's device; the teacher is not changed (its gradients are not needed)."""
    device = teacher_grid.lo.device
    if not bool(teacher_grid.binaries.any()):
        raise RuntimeError("the teacher's occupancy grid has no occupied cell: the teacher is empty "
                           "(untrained or collapsed), or the grid is not the teacher's; there is nothing to distil")
    gen = seed_everything(cfg.seed)
    t0 = time.perf_counter()
    student = RadianceField(student_config(student_cfg, teacher)).to(device).train()
    task = DistillTask(teacher, teacher_grid, student, None, cfg, gen)
    hooks = []
    if task.n_surface > 0:
        task.pool = SurfacePoolHook(teacher, teacher_grid, cfg, gen)
        hooks.append(task.pool)
    options = LoopOptions(f"distil -> {student_cfg.encoding}", cfg.steps, log_every=25, max_seconds=cfg.max_seconds,
                          divergence_hint="lower DistillConfig.lr")
    run = run_loop(task, options, gen, hooks, progress=progress)
    student.eval()
    grid = rebuild_grid(student, teacher_grid, cfg.grid_rounds, gen)
    return DistillResult(student, grid, run.steps, time.perf_counter() - t0, tuple(run.history))
