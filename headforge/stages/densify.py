"""Adaptive density control for Gaussian splats: gsplat's ``DefaultStrategy`` rules, in torch.

Runs on any device (it is what the CPU path uses; on CUDA it gives the same results as gsplat's
strategy with ``absgrad=False, revised_opacity=False, packed=False``):

- after every backward pass, accumulate the norm of each visible Gaussian's screen-space mean
  gradient (scaled to NDC: x by W/2, y by H/2, times the number of cameras) and its visibility count;
- every ``refine_every`` steps in [refine_start, refine_stop): Gaussians whose mean gradient exceeds
  ``grow_grad2d`` are duplicated when small (max scale <= grow_scale3d x scene_scale) or split in two
  (samples from the Gaussian, scales / 1.6) when large; then Gaussians with opacity < ``prune_opa``
  (and, after the first opacity reset, larger than prune_scale3d x scene_scale) are removed;
- every ``reset_every`` steps, opacities are clamped to 2 x prune_opa.
Every per-Gaussian tensor of the model follows its Gaussian (:func:`update_per_gaussian`, the pattern of
gsplat's ``_update_param_with_optimizer``): trained parameters and untrained side tensors alike (split
children inherit their parent's side values), and so do the optimizer's moments of the trained ones:
copied for duplicates, zeroed for split children, dropped for pruned ones. Optimizer groups that hold
no per-Gaussian tensor (a learned background) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headforge.geometry.rotations import quat_to_rotmat
from headforge.renderers.gaussian_raster import GaussianRender
from headforge.representations.gaussians import GaussianModel
from headforge.training.loop import Hook
from headforge.validation import Checked, Count, Fraction, NonNegativeInt, Positive


@dataclass(frozen=True)
class DensifyConfig(Checked):
    prune_opa: Fraction = 0.005
    grow_grad2d: Positive = 0.0002
    grow_scale3d: Positive = 0.01
    prune_scale3d: Positive = 0.1
    refine_start: NonNegativeInt = 500
    refine_stop: NonNegativeInt = 15_000
    refine_every: Count = 100
    reset_every: Count = 3000
    max_gaussians: Count = 1_000_000  # growth stops at this count


@dataclass
class DensifyState:
    grad2d: Tensor  # [N] accumulated gradient norms
    count: Tensor  # [N] times visible

    @staticmethod
    def empty(n: int, device) -> DensifyState:
        return DensifyState(torch.zeros(n, device=device), torch.zeros(n, device=device))


def accumulate(state: DensifyState, render: GaussianRender) -> None:
    """Add this step's screen-space gradient norms (call after backward)."""
    grad = render.means2d.grad
    if grad is None:
        raise RuntimeError("means2d has no gradient: call accumulate after loss.backward()")
    c = grad.shape[0]
    g = grad.detach().clone()
    g[..., 0] *= render.width / 2 * c
    g[..., 1] *= render.height / 2 * c
    visible = render.radii > 0  # [C, N]
    ids = visible.nonzero()[:, 1]
    state.grad2d.index_add_(0, ids, g[visible].norm(dim=-1))
    state.count.index_add_(0, ids, torch.ones_like(ids, dtype=state.count.dtype))


def update_per_gaussian(model: GaussianModel, optimizer: torch.optim.Optimizer,
                        param_fn: Callable[[str, Tensor], Tensor], state_fn: Callable[[str, Tensor], Tensor]) -> None:
    """Replace every per-Gaussian tensor ``t`` of ``model`` by ``param_fn(name, t)`` (rows may be added, removed
    or reordered) and, for trained ones, each Adam moment ``m`` by ``state_fn(name, m)``.

    Trained tensors become new ``nn.Parameter``s (so their gradients are dropped) and are swapped into their
    optimizer group; side tensors are replaced as buffers. Groups without a per-Gaussian tensor are untouched.
    """
    group_of = {id(g["params"][0]): g for g in optimizer.param_groups if len(g["params"]) == 1}
    for name, old in model.per_gaussian().items():
        if not isinstance(old, nn.Parameter):
            setattr(model, name, param_fn(name, old))
            continue
        new = nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        group = group_of.get(id(old))
        if group is not None:
            st = optimizer.state.pop(old, None)
            if st is not None:
                for key in ("exp_avg", "exp_avg_sq"):
                    st[key] = state_fn(name, st[key])
                optimizer.state[new] = st
            group["params"] = [new]
        setattr(model, name, new)


def refine(model: GaussianModel, optimizer: torch.optim.Optimizer, state: DensifyState, cfg: DensifyConfig,
           step: int, scene_scale: float, generator: torch.Generator | None = None, *,
           size: Tensor | None = None, keep_one_per: Tensor | None = None) -> dict[str, int]:
    """Grow and prune once; returns counts for logging and resets the accumulators.

    For Gaussians in local frames (bound Gaussians): ``size`` [N] is the factor from a Gaussian's own scales
    to world scales (the size thresholds compare world scales; splitting happens in the local frame), and
    ``keep_one_per`` [N] int64 names a group per Gaussian (-1: none) of which pruning keeps at least the most
    opaque member (a triangle that should stay covered is never emptied)."""
    with torch.no_grad():
        n = len(model)
        avg = state.grad2d / state.count.clamp_min(1)
        high = avg > cfg.grow_grad2d
        factor = torch.ones(n, device=model.means.device) if size is None else size.to(model.means)
        if factor.shape != (n,):
            raise ValueError(f"size must be [N] = [{n}], got {list(factor.shape)}")
        max_scale = model.log_scales.exp().max(-1).values * factor
        small = max_scale <= cfg.grow_scale3d * scene_scale
        room = max(0, cfg.max_gaussians - n)
        dupli = (high & small).nonzero()[:, 0][:room]
        split = (high & ~small).nonzero()[:, 0][:max(0, room - len(dupli))]
        # duplicate: append copies (moments copied too, as gsplat does)
        groups = None if keep_one_per is None else keep_one_per.clone()
        if len(dupli):
            update_per_gaussian(model, optimizer, lambda _, p: torch.cat([p, p[dupli]]),
                           lambda _, s: torch.cat([s, s[dupli]]))
            factor = torch.cat([factor, factor[dupli]])
            groups = None if groups is None else torch.cat([groups, groups[dupli]])
        # split: two children sampled inside each parent, parents removed
        if len(split):
            scales = model.log_scales[split].exp()
            R = quat_to_rotmat(model.quats[split])
            noise = torch.randn(2, len(split), 3, generator=generator, device=scales.device, dtype=scales.dtype)
            offsets = torch.einsum("nij,bnj->bni", R, scales[None] * noise)  # [2, S, 3]
            keep = torch.ones(len(model), dtype=torch.bool, device=scales.device)
            keep[split] = False

            def split_param(name: str, p: Tensor) -> Tensor:
                if name == "means":
                    children = (p[split][None] + offsets).reshape(-1, 3)
                elif name == "log_scales":
                    children = (p[split] - torch.log(torch.tensor(1.6))).repeat(2, 1)
                else:
                    children = p[split].repeat(2, *([1] * (p.ndim - 1)))
                return torch.cat([p[keep], children])

            def split_moment(_: str, m: Tensor) -> Tensor:
                return torch.cat([m[keep], torch.zeros_like(m[split]).repeat(2, *([1] * (m.ndim - 1)))])

            update_per_gaussian(model, optimizer, split_param, split_moment)
            factor = torch.cat([factor[keep], factor[split].repeat(2)])
            groups = None if groups is None else torch.cat([groups[keep], groups[split].repeat(2)])
        # prune
        prune = torch.sigmoid(model.logit_opacities) < cfg.prune_opa
        if step > cfg.reset_every:
            prune |= model.log_scales.exp().max(-1).values * factor > cfg.prune_scale3d * scene_scale
        if bool(prune.all()):
            prune[torch.argmax(model.logit_opacities)] = False  # never prune everything
        if groups is not None:
            prune &= ~keep_best_per_group(groups, model.logit_opacities, prune)
        if bool(prune.any()):
            keep = ~prune
            update_per_gaussian(model, optimizer, lambda _, p: p[keep], lambda _, s: s[keep])
        state.grad2d = torch.zeros(len(model), device=model.means.device)
        state.count = torch.zeros(len(model), device=model.means.device)
        return {"duplicated": len(dupli), "split": len(split), "pruned": int(prune.sum()), "total": len(model)}


def keep_best_per_group(groups: Tensor, score: Tensor, prune: Tensor) -> Tensor:
    """[N] bool: for every group (id >= 0) all of whose members ``prune`` would remove, its highest-``score``
    member (the Gaussians pruning must spare so that no group is emptied)."""
    valid = groups >= 0
    if not bool(valid.any()):
        return torch.zeros_like(prune)
    g = torch.where(valid, groups, 0)
    size = int(g.max()) + 1
    survivors = torch.zeros(size, dtype=torch.long, device=groups.device).index_add_(
        0, g[valid & ~prune], torch.ones_like(g[valid & ~prune]))
    empty = valid & (survivors[g] == 0)
    best = torch.full((size,), -float("inf"), dtype=score.dtype, device=score.device)
    best = best.scatter_reduce(0, g[empty], score[empty], reduce="amax")
    spare = empty & (score == best[g])
    # ties: keep only the first member of each group
    first = torch.full((size,), len(groups), dtype=torch.long, device=groups.device)
    idx = torch.arange(len(groups), device=groups.device)
    first = first.scatter_reduce(0, g[spare], idx[spare], reduce="amin")
    return spare & (idx == first[g])


def reset_opacities(model: GaussianModel, optimizer: torch.optim.Optimizer, cfg: DensifyConfig) -> None:
    ceiling = torch.logit(torch.tensor(cfg.prune_opa * 2.0)).item()
    update_per_gaussian(model, optimizer,
                   lambda name, p: p.clamp_max(ceiling) if name == "logit_opacities" else p,
                   lambda name, s: torch.zeros_like(s) if name == "logit_opacities" else s)


def densify_step(model: GaussianModel, optimizer: torch.optim.Optimizer, state: DensifyState, cfg: DensifyConfig,
                 step: int, render: GaussianRender, scene_scale: float,
                 generator: torch.Generator | None = None, local: LocalFrames | None = None
                 ) -> dict[str, int] | None:
    """The per-step hook: accumulate, and refine / reset on schedule. ``step`` counts from 1."""
    if step >= cfg.refine_stop:
        return None
    accumulate(state, render)
    stats = None
    if step > cfg.refine_start and step % cfg.refine_every == 0:
        extra = {} if local is None else {"size": local.size(), "keep_one_per": local.groups()}
        stats = refine(model, optimizer, state, cfg, step, scene_scale, generator, **extra)
    if step % cfg.reset_every == 0:
        reset_opacities(model, optimizer, cfg)
    return stats



@dataclass(frozen=True)
class LocalFrames:
    """What densifying Gaussians in local frames needs, read at refine time: ``size()`` [N] local-to-world scale
    factors and ``groups()`` [N] the group of each Gaussian that pruning must not empty (-1: none)."""

    size: Callable[[], Tensor]
    groups: Callable[[], Tensor]


class DensifyHook(Hook):
    """Adaptive density control as a training-loop hook: after each backward pass (reads ``out.render``)."""

    def __init__(self, model: GaussianModel, optimizer: torch.optim.Optimizer, state: DensifyState,
                 cfg: DensifyConfig, scene_scale: float, generator: torch.Generator,
                 local: LocalFrames | None = None):
        self.model, self.optimizer, self.state, self.cfg = model, optimizer, state, cfg
        self.scene_scale, self.generator, self.local = scene_scale, generator, local

    def step_post_backward(self, step: int, out) -> None:
        densify_step(self.model, self.optimizer, self.state, self.cfg, step, out.render, self.scene_scale,
                     self.generator, self.local)
