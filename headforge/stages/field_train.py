"""Stage: fit a neural radiance field (hash grid, tri-plane or tri-grid; density or VolSDF) to a capture.

Random batches of training rays; samples from an occupancy grid that skips empty space (updated from the
field's density every few steps, as nerfacc's OccGridEstimator); colour loss against the ground truth
composited over a random background (masks then teach transparency), an opacity-vs-mask loss, and the
eikonal loss for SDF fields. SDF fields score the occupancy grid's cells by distance
(``sdf < cell diagonal``, :func:`~headforge.renderers.occupancy.sdf_occupancy_density`), not by density, so that a
sharp VolSDF density never hides the cells just outside the surface from the sampler. As nerfacc's estimators do,
a no-grad density pass first drops the samples behind
the surface (transmittance below ``early_stop_eps``) so that the gradient pass only sees the visible ones. The
eikonal loss is taken on ``eikonal_points`` points per step (half drawn from the rendered samples, which sit near
the surface, half uniform in the box), not on every sample: the double backward through the encoding is the most
expensive part of an SDF step. Adam with an exponentially decaying learning rate. The occupancy update and the
beta cap are hooks of the shared loop (:mod:`headforge.training`: seeding, backgrounds, checkpoints with exact
resume, the divergence check, the ``max_seconds`` budget).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import Rays, generate_rays
from headforge.metrics import mse_to_psnr
from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid, sdf_occupancy_density
from headforge.renderers.volume import VolumeRendererConfig, render_rays
from headforge.representations.fields.field import FieldConfig, RadianceField
from headforge.representations.fields.sdf import eikonal_loss
from headforge.stages.views import ViewBatch
from headforge.training.background import Background, TrainingBackground
from headforge.training.checkpoint import CheckpointKind, load_for_resume, restore_rng
from headforge.training.loop import Checkpointing, Hook, LoopOptions, run_loop, seed_everything
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, OptionError, Positive, Seconds


class SdfSkip(StrEnum):
    """How an SDF field scores its occupancy-grid cells (density fields always use their density)."""

    DISTANCE = "distance"  # sdf < cell diagonal (sdf_occupancy_density): cells beside the surface stay sampled
    DENSITY = "density"  # the VolSDF density, as density fields do (stops sampling just outside once beta is small)


@dataclass(frozen=True)
class FieldTrainConfig(Checked):
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    occupancy: OccupancyConfig = dataclasses.field(default_factory=OccupancyConfig)
    steps: Count = 3000
    rays_per_batch: Count = 2048
    lr: Positive = 1e-2
    lr_final: Positive = 1e-3
    weight_decay: NonNegative = 1e-6  # on the MLPs only
    mask_weight: NonNegative = 0.05  # BCE between rendered opacity and the mask (captures with masks)
    eikonal_weight: NonNegative = 0.1  # SDF fields
    eikonal_points: Count = 4096  # SDF fields: points per step for the eikonal loss (half near the surface)
    beta_final: Positive | None = None  # SDF fields: anneal an upper bound on VolSDF's beta from beta_init to this
    beta_anneal_steps: Count | None = None  # ... geometrically over this many steps (None: all steps), then hold it
    sdf_skip: SdfSkip = SdfSkip.DISTANCE  # SDF fields: how occupancy cells are scored (see SdfSkip)
    early_stop_eps: Fraction = 1e-4  # drop samples behind transmittance below this (0: keep all)
    alpha_thre: Fraction = 0.0  # drop samples with alpha below this (0: keep all)
    background: Background = Background.RANDOM
    skip_empty_space: bool = True
    checkpoint_every: Count = 1000
    checkpoint_minutes: Positive | None = 10.0  # also checkpoint after this much wall time (None: only by steps)
    max_seconds: Seconds | None = None  # wall-clock budget of one run: stop (with a checkpoint) once it is spent
    # with max_seconds: the lr decay and the beta annealing follow the share of the budget spent or of the steps
    # done, whichever is further (a run of unknown length still anneals fully); off: they follow the steps only
    anneal_over_budget: bool = False
    eval_chunk: Count = 8192  # rays per evaluation batch
    seed: NonNegativeInt = 0

    def __post_init__(self):
        super().__post_init__()
        if self.eikonal_points < 2:
            raise OptionError("eikonal_points", self.eikonal_points, ">= 2 (half are drawn near the surface)")
        if self.beta_final is not None and not self.field.sdf:
            raise OptionError("beta_final", self.beta_final, "unset: beta_final anneals VolSDF's beta, so it needs an "
                              "SDF field (--sdf)")
        if self.anneal_over_budget and self.max_seconds is None:
            raise OptionError("anneal_over_budget", True, "false, or set max_seconds too (it anneals over that budget)")
        if not (self.early_stop_eps < 1 and self.alpha_thre < 1):
            raise OptionError("early_stop_eps" if self.early_stop_eps >= 1 else "alpha_thre",
                              max(self.early_stop_eps, self.alpha_thre), "< 1")


@dataclass(frozen=True)
class FieldTrainResult:
    field: RadianceField
    grid: OccupancyGrid
    steps: int  # the last step reached (cfg.steps unless max_seconds ran out first)
    seconds: float
    background: Tensor  # [3] evaluation background
    history: tuple[tuple[int, float, float], ...]  # (step, loss, batch psnr)


@dataclass(frozen=True)
class RayBank:
    """Every training pixel as a ray: origins/directions [M, 3], z_scale [M], rgb [M, 3], alpha [M] | None."""

    origins: Tensor
    directions: Tensor
    z_scale: Tensor
    rgb: Tensor
    alpha: Tensor | None

    @staticmethod
    def from_views(views: ViewBatch) -> RayBank:
        rays = generate_rays(views.cameras)
        return RayBank(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3), rays.z_scale.reshape(-1),
                       views.images.reshape(-1, 3), None if views.alphas is None else views.alphas.reshape(-1))


def eikonal_points(samples: Tensor, bounds: tuple[Tensor, Tensor], n: int, generator: torch.Generator) -> Tensor:
    """n points [n, 3] for the eikonal loss: half drawn from the ray samples [S, 3] (near the visible surface),
    the rest uniform in the box (keeps the SDF a distance far from the surface too)."""
    lo, hi = bounds
    n_near = min(n // 2, len(samples))
    pick = torch.randint(len(samples), (n_near,), generator=generator).to(samples.device) if n_near else None
    u = torch.rand(n - n_near, 3, generator=generator).to(lo)
    parts = [lo + (hi - lo) * u] + ([samples[pick]] if pick is not None else [])
    return torch.cat(parts)


def beta_cap(cfg: FieldTrainConfig, step: int, budget_share: float = 0.0) -> float:
    """Upper bound on VolSDF's beta at ``step``: geometric from beta_init to beta_final (inf without annealing).
    ``budget_share`` (in [0, 1]: the share of ``max_seconds`` spent, with ``anneal_over_budget``) takes over when it
    is further along than the steps."""
    if cfg.beta_final is None:
        return math.inf
    b0 = cfg.field.sdf_net.volsdf.beta_init
    n = cfg.beta_anneal_steps or max(cfg.steps, 1)
    return b0 * (cfg.beta_final / b0) ** min(max(step / n, budget_share), 1.0)


def field_bounds(lo: Tensor, hi: Tensor, margin: float = 1.05) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A cube around the capture bounds (the encodings want one scale on every axis)."""
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * margin
    return tuple((centre - half).tolist()), tuple((centre + half).tolist())


def make_field(cfg: FieldTrainConfig, lo: Tensor, hi: Tensor, margin: float = 1.05) -> RadianceField:
    bmin, bmax = field_bounds(lo, hi, margin)
    return RadianceField(dataclasses.replace(cfg.field, bounds_min=bmin, bounds_max=bmax))


def make_field_optimizer(model: RadianceField, cfg: FieldTrainConfig) -> torch.optim.Adam:
    enc = [p for n, p in model.named_parameters() if n.startswith("encoding")]
    mlp = [p for n, p in model.named_parameters() if not n.startswith("encoding")]
    return torch.optim.Adam([{"params": enc, "weight_decay": 0.0}, {"params": mlp, "weight_decay": cfg.weight_decay}],
                            lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)


def render_image_rays(model: RadianceField, grid: OccupancyGrid, rays: Rays, background: Tensor,
                      cfg: FieldTrainConfig, chunk: int) -> tuple[Tensor, Tensor]:
    """Evaluation render of rays [..., 3] in chunks: rgb [..., 3], alpha [...] (no gradients)."""
    shape = rays.origins.shape[:-1]
    o, d, z = rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3), rays.z_scale.reshape(-1)
    rcfg = VolumeRendererConfig(normals=False, early_stop_eps=cfg.early_stop_eps, alpha_thre=cfg.alpha_thre)
    sampler = grid.sampler(skip=cfg.skip_empty_space)
    rgbs, alphas = [], []
    for s in range(0, o.shape[0], chunk):
        sl = slice(s, s + chunk)
        r = render_rays(model, Rays(o[sl], d[sl], z[sl]), rcfg, sampler, background=background)
        rgbs.append(r.rgb.detach())
        alphas.append(r.alpha[..., 0].detach())
    return torch.cat(rgbs).reshape(*shape, 3), torch.cat(alphas).reshape(shape)


def field_render_fn(model: RadianceField, grid: OccupancyGrid, cfg: FieldTrainConfig):
    """A :data:`headforge.stages.evaluate.RenderFn` for a trained field."""
    def render(cameras: Cameras, background: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return render_image_rays(model, grid, generate_rays(cameras), background.to(grid.lo), cfg, cfg.eval_chunk)
    return render


@dataclass(frozen=True)
class FieldStep:
    loss: Tensor  # []
    mse: Tensor  # [] colour MSE of the batch (for the history's PSNR)
    samples: int


class BetaCapHook(Hook):
    """SDF fields: before each step, cap VolSDF's beta at :func:`beta_cap` (the annealing schedule)."""

    def __init__(self, model: RadianceField, cfg: FieldTrainConfig, budget: BudgetClock):
        self.model, self.cfg, self.budget = model, cfg, budget

    def step_pre(self, step: int) -> None:
        self.model.volsdf.beta_max.fill_(beta_cap(self.cfg, step, self.budget.share()))


class BudgetClock:
    """The share of ``cfg.max_seconds`` spent since this run started, in [0, 1]; always 0 unless
    ``cfg.anneal_over_budget`` (the schedules then follow the steps alone, deterministically)."""

    def __init__(self, cfg: FieldTrainConfig):
        self.max_seconds = cfg.max_seconds if cfg.anneal_over_budget else None
        self.t0 = time.perf_counter()

    def share(self) -> float:
        return 0.0 if self.max_seconds is None else min((time.perf_counter() - self.t0) / self.max_seconds, 1.0)


class OccupancyHook(Hook):
    """Before each step, let the occupancy grid update itself on its schedule (nerfacc's OccGridEstimator)."""

    def __init__(self, model: RadianceField, grid: OccupancyGrid, cfg: FieldTrainConfig, generator: torch.Generator):
        self.grid, self.generator = grid, generator
        if cfg.field.sdf and cfg.sdf_skip == SdfSkip.DISTANCE:
            self.occupancy_fn = lambda x: sdf_occupancy_density(model.sdf(x), grid.cell_diagonal, grid.step_size)
        else:
            self.occupancy_fn = model.density

    def step_pre(self, step: int) -> None:
        self.grid.update_every_n_steps(step, self.occupancy_fn, self.generator)


class FieldTask:
    """One field training step: a random batch of rays, colour (+ mask, + eikonal) loss; lr decays per step."""

    def __init__(self, model: RadianceField, grid: OccupancyGrid, optimizer: torch.optim.Optimizer, bank: RayBank,
                 background: TrainingBackground, cfg: FieldTrainConfig, generator: torch.Generator, device: str,
                 budget: BudgetClock):
        self.model, self.grid, self.optimizer, self.bank, self.budget = model, grid, optimizer, bank, budget
        self.background, self.cfg, self.generator, self.device = background, cfg, generator, device
        self.rcfg = VolumeRendererConfig(stratified=True, normals=False, early_stop_eps=cfg.early_stop_eps,
                                         alpha_thre=cfg.alpha_thre)
        self.decay = (cfg.lr_final / cfg.lr) ** (1 / max(cfg.steps, 1))

    def forward(self, step: int) -> FieldStep:
        cfg, bank, gen, device, model = self.cfg, self.bank, self.generator, self.device, self.model
        idx = torch.randint(bank.origins.shape[0], (cfg.rays_per_batch,), generator=gen)
        bg = self.background.sample(gen, device)
        rgb = bank.rgb[idx].to(device)
        alpha = None if bank.alpha is None else bank.alpha[idx].to(device)
        target = rgb if alpha is None else rgb * alpha[:, None] + bg.detach() * (1 - alpha[:, None])
        rays = Rays(bank.origins[idx].to(device), bank.directions[idx].to(device), bank.z_scale[idx].to(device))
        r = render_rays(model, rays, self.rcfg, self.grid.sampler(skip=cfg.skip_empty_space), background=bg,
                        generator=gen)
        mse = F.mse_loss(r.rgb, target)
        loss = F.smooth_l1_loss(r.rgb, target, beta=0.01)
        if alpha is not None and cfg.mask_weight > 0:
            loss = loss + cfg.mask_weight * F.binary_cross_entropy(r.alpha[:, 0].clamp(1e-5, 1 - 1e-5), alpha)
        if cfg.field.sdf and cfg.eikonal_weight > 0:
            pts = eikonal_points(r.samples.positions(rays.origins, rays.directions).detach(), model.bounds,
                                 cfg.eikonal_points, gen)
            loss = loss + cfg.eikonal_weight * eikonal_loss(model.gradient(pts, create_graph=True))
        return FieldStep(loss, mse, len(r.samples))

    def update(self, step: int) -> None:
        self.optimizer.step()
        if self.cfg.anneal_over_budget:  # lr = initial lr x decay^(steps x progress), progress by budget or steps
            progress = max(step / max(self.cfg.steps, 1), self.budget.share())
            for g in self.optimizer.param_groups:
                g["lr"] = g.setdefault("initial_lr", g["lr"]) * self.decay ** (self.cfg.steps * min(progress, 1.0))
            return
        for g in self.optimizer.param_groups:
            g["lr"] *= self.decay

    def log_row(self, step: int, out: FieldStep) -> tuple[int, float, float]:
        return step, out.loss.item(), mse_to_psnr(out.mse.item())

    def postfix(self, row: tuple) -> dict[str, str]:
        return {"loss": f"{row[1]:.4f}", "psnr": f"{row[2]:.2f}"}

    def state(self) -> dict:
        return {"field": self.model.state_dict(), "grid": self.grid.state_dict(),
                "optimizer": self.optimizer.state_dict(), "background": self.background.state()}


def train_field(train: ViewBatch, bounds: tuple[Tensor, Tensor], cfg: FieldTrainConfig, *,
                checkpoint_dir: Path | None = None, resume: bool = False, device: str = "cpu",
                progress: bool = True) -> FieldTrainResult:
    """Fit a field to ``train``; with ``resume``, continue from the latest checkpoint in ``checkpoint_dir``
    (refused when its config differs, see :mod:`headforge.training.checkpoint`)."""
    gen = seed_everything(cfg.seed)
    background = TrainingBackground.create(cfg.background, train.alphas is not None, device)
    cfg = dataclasses.replace(cfg, background=background.choice)
    model = make_field(cfg, *bounds).to(device)
    grid = OccupancyGrid(cfg.occupancy, *model.bounds).to(device)
    optimizer = make_field_optimizer(model, cfg)
    group = background.param_group(weight_decay=0.0)
    if group is not None:
        optimizer.add_param_group(group)
    found = load_for_resume(checkpoint_dir, CheckpointKind.FIELD, cfg, device) \
        if (resume and checkpoint_dir is not None) else None
    payload = None if found is None else found[1]
    if payload is not None:
        st = payload["state"]
        model.load_state_dict(st["field"])
        grid.load_state_dict(st["grid"])
        optimizer.load_state_dict(st["optimizer"])
        background.load_state(st["background"])
        restore_rng(payload, gen)
    budget = BudgetClock(cfg)
    hooks = ([BetaCapHook(model, cfg, budget)] if cfg.field.sdf else []) + [OccupancyHook(model, grid, cfg, gen)]
    task = FieldTask(model, grid, optimizer, RayBank.from_views(train), background, cfg, gen, device, budget)
    ck = None if checkpoint_dir is None else Checkpointing(checkpoint_dir, CheckpointKind.FIELD, cfg,
                                                           cfg.checkpoint_every, cfg.checkpoint_minutes)
    options = LoopOptions(f"train {cfg.field.encoding}", cfg.steps, log_every=25,
                          start=0 if payload is None else payload["step"], max_seconds=cfg.max_seconds,
                          checkpointing=ck)
    run = run_loop(task, options, gen, hooks, progress=progress)
    return FieldTrainResult(model.eval(), grid, run.steps, run.seconds, background.for_evaluation(), run.history)
