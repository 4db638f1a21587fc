"""Stage: fit 3D Gaussians to a capture's training views (3DGS recipe, gsplat's defaults).

Adam per parameter group with the usual learning rates (positions scaled by the scene size and
decayed exponentially), L1 + D-SSIM, mask supervision over a random (or fixed, or learned)
background, SH degree raised every ``sh_degree_interval`` steps, adaptive density control
(densify.py, a hook of the shared loop), visual-hull or random initialisation. Seeding, backgrounds,
checkpoints (exact resume, refused when the config differs), the divergence check and the
``max_seconds`` budget come from :mod:`headforge.training`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor

from headforge.errors import InputError
from headforge.metrics import psnr, ssim
from headforge.renderers.gaussian_raster import GaussianRender, rasterize_gaussians
from headforge.representations.gaussians import GaussianLearningRates, GaussianModel, Splats, activate, init_splats
from headforge.stages.densify import DensifyConfig, DensifyHook, DensifyState
from headforge.stages.gaussian_init import hull_surface_points, point_colors, random_points, visual_hull
from headforge.stages.views import ViewBatch, composite
from headforge.training.background import Background, TrainingBackground
from headforge.training.checkpoint import CheckpointKind, latest_checkpoint, load_for_resume, restore_rng
from headforge.training.loop import Checkpointing, LoopOptions, run_loop, seed_everything
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, Positive, Seconds

__all__ = ["Background", "GaussianTrainConfig", "GaussianTrainResult", "InitKind", "initial_splats",
           "latest_checkpoint", "make_optimizer", "render_splats", "scene_scale", "train_gaussians"]


class InitKind(StrEnum):
    VISUAL_HULL = "visual_hull"  # points on the masks' visual hull, coloured from the views
    RANDOM = "random"  # uniform in the capture bounds


@dataclass(frozen=True)
class GaussianTrainConfig(Checked):
    steps: Count = 7000
    max_sh_degree: Annotated[int, at.Ge(0), at.Le(3)] = 3
    sh_degree_interval: Count = 1000
    init: InitKind = InitKind.VISUAL_HULL
    init_points: Annotated[int, at.Ge(1), at.Le(10_000_000)] = 30_000
    init_opacity: Annotated[float, at.Gt(0), at.Lt(1)] = 0.1
    hull_resolution: Annotated[int, at.Ge(8), at.Le(512)] = 96
    means_lr: NonNegative = 1.6e-4  # x scene scale, decayed to means_lr_final
    means_lr_final: NonNegative = 1.6e-6
    scales_lr: NonNegative = 5e-3
    quats_lr: NonNegative = 1e-3
    opacities_lr: NonNegative = 5e-2
    sh0_lr: NonNegative = 2.5e-3
    shN_lr: NonNegative = 2.5e-3 / 20
    ssim_lambda: Fraction = 0.2
    background: Background = Background.RANDOM
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    antialiased: bool = False
    checkpoint_every: Count = 1000
    checkpoint_minutes: Positive | None = 10.0  # also checkpoint after this much wall time (None: only by steps)
    max_seconds: Seconds | None = None  # wall-clock budget of one run: stop (with a checkpoint) once it is spent
    seed: NonNegativeInt = 0


@dataclass(frozen=True)
class GaussianTrainResult:
    splats: Splats  # activated, detached, at the SH degree of the last step reached
    sh_degree: int
    steps: int  # the last step reached (cfg.steps unless max_seconds ran out first)
    seconds: float  # training time of this run (excluding resumed steps)
    background: Tensor  # [3] the background colour used for evaluation (learned one, or white)
    history: tuple[tuple[int, float, float, int], ...]  # (step, loss, psnr, gaussians)


def scene_scale(views: ViewBatch) -> float:
    """gsplat's scene scale: 1.1 x the largest camera distance from the cameras' mean centre."""
    c = views.cameras.centers()
    return 1.1 * float((c - c.mean(0)).norm(dim=-1).max().clamp_min(1e-3))


def initial_splats(views: ViewBatch, lo: Tensor, hi: Tensor, cfg: GaussianTrainConfig,
                   generator: torch.Generator) -> Splats:
    if cfg.init == InitKind.VISUAL_HULL:
        if views.alphas is None:
            raise InputError("visual-hull initialisation needs masks, and this capture has none",
                             fix="use --init random (a background colour is then learned)")
        occ = visual_hull(views.cameras, views.alphas, lo, hi, cfg.hull_resolution)
        points = hull_surface_points(occ, lo, hi, cfg.init_points, generator)
    else:
        points = random_points(lo, hi, cfg.init_points, generator)
    return init_splats(points, point_colors(points, views), max_sh_degree=cfg.max_sh_degree,
                       init_opacity=cfg.init_opacity)


def learning_rates(cfg: GaussianTrainConfig, scale: float) -> GaussianLearningRates:
    return GaussianLearningRates(means=cfg.means_lr * scale, quats=cfg.quats_lr, scales=cfg.scales_lr,
                                 opacities=cfg.opacities_lr, sh0=cfg.sh0_lr, shN=cfg.shN_lr)


def make_optimizer(model: GaussianModel, cfg: GaussianTrainConfig, scale: float) -> torch.optim.Adam:
    """One Adam group per trained per-Gaussian tensor, named after it (what the model declares)."""
    groups = [{"params": [t], "lr": lr, "name": name}
              for name, (t, lr) in model.param_groups(learning_rates(cfg, scale)).items() if lr is not None]
    return torch.optim.Adam(groups, eps=1e-15)


def render_splats(splats: Splats, views_cameras, sh_degree: int, background: Tensor,
                  antialiased: bool = False) -> GaussianRender:
    w, h = views_cameras.same_size()
    return rasterize_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, splats.sh,
                               views_cameras.world_to_camera, views_cameras.intrinsics(), w, h,
                               sh_degree=sh_degree, background=background, antialiased=antialiased)


@dataclass(frozen=True)
class GaussianStep:
    loss: Tensor  # []
    render: GaussianRender
    target: Tensor  # [1, H, W, 3]


def decayed_lr(lr0: float, lr1: float, step: int, steps: int) -> float:
    """Exponential decay from ``lr0`` at step 0 to ``lr1`` at ``steps`` (3DGS's position schedule)."""
    return lr0 * (lr1 / lr0) ** min(step / max(steps, 1), 1.0) if lr0 > 0 else 0.0


class SplatStepLog:
    """The history row and progress fields every splat trainer shows: (step, loss, PSNR of the view, count)."""

    model: GaussianModel

    def log_row(self, step: int, out) -> tuple[int, float, float, int]:
        return step, out.loss.item(), float(psnr(out.render.rgb.detach(), out.target)[0]), len(self.model)

    def postfix(self, row: tuple) -> dict[str, str]:
        return {"loss": f"{row[1]:.4f}", "psnr": f"{row[2]:.2f}", "gaussians": str(row[3])}


class GaussianTask(SplatStepLog):
    """One Gaussian training step (3DGS): a random view over this step's background, L1 + D-SSIM."""

    def __init__(self, model: GaussianModel, optimizer: torch.optim.Optimizer, data: ViewBatch,
                 background: TrainingBackground, densify: DensifyState, cfg: GaussianTrainConfig, scale: float,
                 generator: torch.Generator, device: str):
        self.model, self.optimizer, self.data, self.background = model, optimizer, data, background
        self.densify, self.cfg, self.generator, self.device = densify, cfg, generator, device
        self.lr0, self.lr1 = cfg.means_lr * scale, cfg.means_lr_final * scale

    def forward(self, step: int) -> GaussianStep:
        cfg, data = self.cfg, self.data
        i = int(torch.randint(len(data), (1,), generator=self.generator))
        cams = data.cameras[[i]]
        bg = self.background.sample(self.generator, self.device)
        target = composite(data.images[i:i + 1], None if data.alphas is None else data.alphas[i:i + 1], bg.detach())
        degree = min(step // cfg.sh_degree_interval, cfg.max_sh_degree)
        render = render_splats(activate(self.model, degree), cams, degree, bg, cfg.antialiased)
        l1 = (render.rgb - target).abs().mean()
        loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1 - ssim(render.rgb, target).mean())
        return GaussianStep(loss, render, target)

    def update(self, step: int) -> None:
        for g in self.optimizer.param_groups:
            if g["name"] == "means":
                g["lr"] = decayed_lr(self.lr0, self.lr1, step, self.cfg.steps)
        self.optimizer.step()

    def state(self) -> dict:
        return {"model": {k: v.detach().cpu() for k, v in self.model.per_gaussian().items()},
                "optimizer": self.optimizer.state_dict(), "grad2d": self.densify.grad2d.cpu(),
                "count": self.densify.count.cpu(), "background": self.background.state()}


def train_gaussians(train: ViewBatch, bounds: tuple[Tensor, Tensor], cfg: GaussianTrainConfig, *,
                    checkpoint_dir: Path | None = None, resume: bool = False, init: Splats | None = None,
                    device: str = "cpu", progress: bool = True) -> GaussianTrainResult:
    """Fit Gaussians to ``train``; with ``resume``, continue from the latest checkpoint in ``checkpoint_dir``
    (refused when its config differs, see :mod:`headforge.training.checkpoint`)."""
    gen = seed_everything(cfg.seed)
    scale = scene_scale(train)
    background = TrainingBackground.create(cfg.background, train.alphas is not None, device)
    cfg = replace(cfg, background=background.choice)
    found = load_for_resume(checkpoint_dir, CheckpointKind.GAUSSIANS, cfg) \
        if (resume and checkpoint_dir is not None) else None
    payload = None if found is None else found[1]
    if payload is not None:
        model = GaussianModel.from_tensors(payload["state"]["model"]).to(device)
    else:
        splats = init if init is not None else initial_splats(train, *bounds, cfg, gen)
        model = GaussianModel.from_splats(splats, cfg.max_sh_degree).to(device)
    optimizer = make_optimizer(model, cfg, scale)
    group = background.param_group(name="background")
    if group is not None:
        optimizer.add_param_group(group)
    densify = DensifyState.empty(len(model), device)
    if payload is not None:
        st = payload["state"]
        optimizer.load_state_dict(st["optimizer"])
        densify = DensifyState(st["grad2d"].to(device), st["count"].to(device))
        background.load_state(st["background"])
        restore_rng(payload, gen)
    task = GaussianTask(model, optimizer, train.to(device), background, densify, cfg, scale, gen, device)
    hooks = [DensifyHook(model, optimizer, densify, cfg.densify, scale, gen)]
    ck = None if checkpoint_dir is None else Checkpointing(checkpoint_dir, CheckpointKind.GAUSSIANS, cfg,
                                                           cfg.checkpoint_every, cfg.checkpoint_minutes)
    options = LoopOptions("train gaussians", cfg.steps, log_every=50, start=0 if payload is None else payload["step"],
                          max_seconds=cfg.max_seconds, checkpointing=ck)
    run = run_loop(task, options, gen, hooks, progress=progress)
    degree = min(run.steps // cfg.sh_degree_interval, cfg.max_sh_degree)
    with torch.no_grad():
        final = activate(task.model, degree).detach()
    return GaussianTrainResult(Splats(*(t.cpu() for t in (final.means, final.quats, final.scales, final.opacities,
                                                          final.sh))), degree, run.steps, run.seconds,
                               background.for_evaluation(), run.history)
