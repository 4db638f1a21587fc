"""Stage: fit 3D Gaussians to a capture's training views (3DGS recipe, gsplat's defaults).

Adam per parameter group with the usual learning rates (positions scaled by the scene size and
decayed exponentially), L1 + D-SSIM, mask supervision over a random (or fixed, or learned)
background, SH degree raised every ``sh_degree_interval`` steps, adaptive density control
(densify.py), visual-hull or random initialisation, atomic checkpoints with exact resume, seeded.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.atomic import atomic_path
from headforge.errors import InputError
from headforge.metrics import psnr, ssim
from headforge.renderers.gaussian_raster import GaussianRender, rasterize_gaussians
from headforge.representations.gaussians import GaussianModel, Splats, activate, init_splats
from headforge.stages.densify import DensifyConfig, DensifyState, densify_step
from headforge.stages.gaussian_init import hull_surface_points, point_colors, random_points, visual_hull
from headforge.stages.views import ViewBatch, composite


class Background(StrEnum):
    RANDOM = "random"  # a new random colour each step (needs masks): transparency is learned right
    WHITE = "white"
    BLACK = "black"
    LEARNED = "learned"  # one colour optimised with the splats (captures without masks)


class InitKind(StrEnum):
    VISUAL_HULL = "visual_hull"  # points on the masks' visual hull, coloured from the views
    RANDOM = "random"  # uniform in the capture bounds


@dataclass(frozen=True)
class GaussianTrainConfig:
    steps: int = 7000
    max_sh_degree: int = 3
    sh_degree_interval: int = 1000
    init: InitKind = InitKind.VISUAL_HULL
    init_points: int = 30_000
    init_opacity: float = 0.1
    hull_resolution: int = 96
    means_lr: float = 1.6e-4  # x scene scale, decayed to means_lr_final
    means_lr_final: float = 1.6e-6
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    opacities_lr: float = 5e-2
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    ssim_lambda: float = 0.2
    background: Background = Background.RANDOM
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    antialiased: bool = False
    checkpoint_every: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class GaussianTrainResult:
    splats: Splats  # activated, detached, full SH degree reached
    sh_degree: int
    steps: int
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


def make_optimizer(model: GaussianModel, cfg: GaussianTrainConfig, scale: float) -> torch.optim.Adam:
    lrs = {"means": cfg.means_lr * scale, "quats": cfg.quats_lr, "log_scales": cfg.scales_lr,
           "logit_opacities": cfg.opacities_lr, "sh0": cfg.sh0_lr, "shN": cfg.shN_lr}
    groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in model.parameter_dict().items()]
    return torch.optim.Adam(groups, eps=1e-15)


def render_splats(splats: Splats, views_cameras, sh_degree: int, background: Tensor,
                  antialiased: bool = False) -> GaussianRender:
    w, h = views_cameras.same_size()
    return rasterize_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, splats.sh,
                               views_cameras.world_to_camera, views_cameras.intrinsics(), w, h,
                               sh_degree=sh_degree, background=background, antialiased=antialiased)


def save_checkpoint(path: Path, step: int, model: GaussianModel, optimizer, state: DensifyState,
                    background: Tensor, generator: torch.Generator, cfg: GaussianTrainConfig) -> None:
    payload = {"step": step, "model": {k: v.detach().cpu() for k, v in model.parameter_dict().items()},
               "optimizer": optimizer.state_dict(), "grad2d": state.grad2d.cpu(), "count": state.count.cpu(),
               "background": background.detach().cpu(), "generator": generator.get_state(),
               "torch_rng": torch.get_rng_state(), "config": asdict(cfg)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step_*.pt"))
    return found[-1] if found else None


def train_gaussians(train: ViewBatch, bounds: tuple[Tensor, Tensor], cfg: GaussianTrainConfig, *,
                    checkpoint_dir: Path | None = None, resume: bool = False, init: Splats | None = None,
                    device: str = "cpu", progress: bool = True) -> GaussianTrainResult:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    scale = scene_scale(train)
    if train.alphas is None and cfg.background == Background.RANDOM:
        cfg = replace(cfg, background=Background.LEARNED)
    ckpt = latest_checkpoint(checkpoint_dir) if (resume and checkpoint_dir is not None) else None
    if ckpt is not None:
        payload = torch.load(ckpt, map_location="cpu", weights_only=False)
        model = GaussianModel(*(payload["model"][k] for k in ("means", "quats", "log_scales", "logit_opacities",
                                                             "sh0", "shN"))).to(device)
        start = payload["step"]
        gen.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
    else:
        splats = init if init is not None else initial_splats(train, *bounds, cfg, gen)
        model = GaussianModel.from_splats(splats, cfg.max_sh_degree).to(device)
        start = 0
    learned_bg = torch.nn.Parameter(torch.full((3,), 0.5, device=device))
    optimizer = make_optimizer(model, cfg, scale)
    if cfg.background == Background.LEARNED:
        optimizer.add_param_group({"params": [learned_bg], "lr": 1e-2, "name": "background"})
    state = DensifyState.empty(len(model), device)
    if ckpt is not None:
        optimizer.load_state_dict(payload["optimizer"])
        state = DensifyState(payload["grad2d"].to(device), payload["count"].to(device))
        with torch.no_grad():
            learned_bg.copy_(payload["background"])
    data = train.to(device)
    fixed = {Background.WHITE: 1.0, Background.BLACK: 0.0}
    lr0, lr1 = cfg.means_lr * scale, cfg.means_lr_final * scale
    history = []
    t0 = time.perf_counter()
    bar = tqdm(range(start + 1, cfg.steps + 1), desc="train gaussians", unit="step", disable=not progress,
               initial=start, total=cfg.steps)
    densify_groups = [g for g in optimizer.param_groups if g["name"] != "background"]
    for step in bar:
        i = int(torch.randint(len(data), (1,), generator=gen))
        cams = data.cameras[[i]]
        if cfg.background == Background.RANDOM:
            bg = torch.rand(3, generator=gen).to(device)
        elif cfg.background == Background.LEARNED:
            bg = learned_bg.clamp(0, 1)
        else:
            bg = torch.full((3,), fixed[cfg.background], device=device)
        target = composite(data.images[i:i + 1], None if data.alphas is None else data.alphas[i:i + 1], bg.detach())
        degree = min(step // cfg.sh_degree_interval, cfg.max_sh_degree)
        render = render_splats(activate(model, degree), cams, degree, bg, cfg.antialiased)
        l1 = (render.rgb - target).abs().mean()
        loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1 - ssim(render.rgb, target).mean())
        loss.backward()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training diverged at step {step} (loss {float(loss)}); the last checkpoint "
                                     f"in {checkpoint_dir} is intact")
        densify_step(model, _GroupsView(optimizer, densify_groups), state, cfg.densify, step, render, scale, gen)
        for g in optimizer.param_groups:
            if g["name"] == "means":
                g["lr"] = lr0 * (lr1 / lr0) ** min(step / max(cfg.steps, 1), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == cfg.steps:
            p = float(psnr(render.rgb.detach(), target)[0])
            history.append((step, loss.item(), p, len(model)))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{p:.2f}", gaussians=len(model))
        if checkpoint_dir is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save_checkpoint(checkpoint_dir / f"step_{step:06d}.pt", step, model, optimizer, state, learned_bg,
                            gen, cfg)
    bg_eval = learned_bg.detach().clamp(0, 1) if cfg.background == Background.LEARNED else torch.ones(3)
    degree = min(cfg.steps // cfg.sh_degree_interval, cfg.max_sh_degree)
    with torch.no_grad():
        final = activate(model, degree).detach()
    return GaussianTrainResult(Splats(*(t.cpu() for t in (final.means, final.quats, final.scales, final.opacities,
                                                          final.sh))), degree, cfg.steps,
                               time.perf_counter() - t0, bg_eval.cpu(), tuple(history))


class _GroupsView:
    """The optimizer as densification sees it: only the Gaussian parameter groups (not the background)."""

    def __init__(self, optimizer: torch.optim.Optimizer, groups: list[dict]):
        self.param_groups = groups
        self.state = optimizer.state
