"""Proposal sampling (mip-NeRF 360; nerfacc's ``PropNetEstimator``): coarse densities -> PDF -> resampled intervals.

Per ray, sampling works in s in [0, 1] between the box entry and exit (t = t_near + s (t_far - t_near),
nerfacc's "uniform" spacing). Level 0 samples ``samples_per_level[0]`` uniform intervals; each proposal density
function is evaluated at the interval midpoints, its rendering weights (+ a small uniform padding) define a
piecewise-constant PDF over the intervals, and the next level's edges are drawn by inverse-CDF sampling
(:func:`sample_pdf`). The last proposal level's PDF gives the ``n_samples`` final intervals.

The proposal functions are trained with the **interlevel loss** (mip-NeRF 360's ``lossfun_outer``): for each final
interval, the proposal weights over the overlapping proposal intervals (its outer measure ``w_outer``) must bound
the (detached) final weight: ``mean(max(0, w - w_outer)^2 / (w + eps))`` summed over levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor

from headforge.renderers.samples import ProposalLevel, Sampling
from headforge.renderers.volume import composite_dense, pack_dense, uniform_edges
from headforge.validation import Checked, Count, Fraction


@dataclass(frozen=True)
class ProposalConfig(Checked):
    # intervals evaluated by each proposal function (at least one level)
    samples_per_level: Annotated[tuple[Count, ...], at.MinLen(1)] = (128, 64)
    n_samples: Count = 32  # final intervals per ray (evaluated by the radiance field)
    padding: Fraction = 0.01  # uniform probability mass mixed into each PDF (keeps every interval reachable)


def sample_pdf(edges: Tensor, weights: Tensor, n: int, stratified: bool, padding: float = 0.01,
               generator: torch.Generator | None = None) -> Tensor:
    """Inverse-CDF resampling. edges [R, M + 1], weights [R, M] >= 0 -> new edges [R, n + 1] (sorted, same ends).

    The new edges are the CDF quantiles u_k = k / n (u_0 = 0, u_n = 1), interior ones jittered by
    U(-1/2, 1/2) / n when stratified; each quantile maps linearly inside its interval.
    """
    R, M = weights.shape
    w = weights.detach().clamp_min(0)
    total = w.sum(-1, keepdim=True)
    pdf = w / total.clamp_min(1e-12) * (1 - padding) + padding / M  # [R, M] sums to 1
    pdf = torch.where(total > 0, pdf, torch.full_like(pdf, 1.0 / M))
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R, M + 1]
    cdf = cdf / cdf[:, -1:]
    u = torch.linspace(0, 1, n + 1, dtype=edges.dtype, device=edges.device).expand(R, n + 1).contiguous()
    if stratified and n > 1:
        jitter = (torch.rand(R, n - 1, generator=generator, dtype=edges.dtype) - 0.5) / n
        u[:, 1:-1] += jitter.to(u.device)
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, M)  # [R, n + 1]
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    e0, e1 = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0, 1)
    out = e0 + frac * (e1 - e0)
    out[:, 0], out[:, -1] = edges[:, 0], edges[:, -1]
    return torch.sort(out.detach(), -1).values


def outer_measure(query_edges: Tensor, key_edges: Tensor, key_weights: Tensor) -> Tensor:
    """Sum of key weights over key intervals overlapping each query interval: [R, n + 1], [R, M + 1], [R, M]
    -> [R, n]."""
    cdf = torch.cat([torch.zeros_like(key_weights[:, :1]), torch.cumsum(key_weights, -1)], -1)  # [R, M + 1]
    M = key_weights.shape[1]
    left = (torch.searchsorted(key_edges.contiguous(), query_edges[:, :-1].contiguous(), right=True) - 1).clamp(0, M)
    right = torch.searchsorted(key_edges.contiguous(), query_edges[:, 1:].contiguous(), right=False).clamp(0, M)
    return cdf.gather(1, right) - cdf.gather(1, left)


def interlevel_loss(final_edges: Tensor, final_weights: Tensor, levels: Sequence[ProposalLevel],
                    eps: float = 1e-7) -> Tensor:
    """mip-NeRF 360 / nerfacc proposal loss: final_edges [R, n + 1], final_weights [R, n] (detached here)."""
    w = final_weights.detach()
    loss = final_weights.new_zeros(())
    for lvl in levels:
        w_outer = outer_measure(final_edges.detach(), lvl.edges.detach(), lvl.weights)
        loss = loss + ((w - w_outer).clamp_min(0) ** 2 / (w + eps)).mean()
    return loss


def proposal_sample(origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor,
                    density_fns: Sequence[Callable[[Tensor], Tensor]], cfg: ProposalConfig, stratified: bool,
                    generator: torch.Generator | None = None) -> tuple[Tensor, list[ProposalLevel]]:
    """Run the proposal levels; -> final edges [R, n_samples + 1] and the per-level (edges, weights).

    Proposal weights carry gradients to their density functions when grad mode is on (for the interlevel loss).
    """
    if len(density_fns) != len(cfg.samples_per_level):
        raise ValueError(f"{len(density_fns)} proposal density functions for {len(cfg.samples_per_level)} levels")
    R = origins.shape[0]
    s_edges = torch.linspace(0, 1, 2, dtype=origins.dtype, device=origins.device).expand(R, 2)
    s_weights = torch.ones(R, 1, dtype=origins.dtype, device=origins.device)
    span = (t_far - t_near)[:, None]
    levels = []
    for fn, n in zip(density_fns, cfg.samples_per_level, strict=True):
        if len(levels) == 0:
            s_edges = uniform_edges(torch.zeros_like(t_near), torch.ones_like(t_near), n, stratified, generator)
        else:
            s_edges = sample_pdf(s_edges, s_weights, n, stratified, cfg.padding, generator)
        t = t_near[:, None] + span * s_edges  # [R, n + 1]
        mids = (t[:, :-1] + t[:, 1:]) / 2
        pts = origins[:, None] + directions[:, None] * mids[..., None]  # [R, n, 3]
        sigma = fn(pts.reshape(-1, 3)).reshape(R, n)
        s_weights, _, _ = composite_dense(sigma, t[:, :-1], t[:, 1:])
        levels.append(ProposalLevel(t, s_weights))
    s_final = sample_pdf(s_edges, s_weights, cfg.n_samples, stratified, cfg.padding, generator)
    return t_near[:, None] + span * s_final, levels


@dataclass(frozen=True)
class ProposalSampler:
    """The :class:`~headforge.renderers.samples.RaySampler` for proposal sampling (rays that miss the box get
    zero-length intervals, so every ray has ``n_samples`` samples and weights reshape to [R, n])."""

    cfg: ProposalConfig
    density_fns: tuple[Callable[[Tensor], Tensor], ...]

    def sample(self, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor, hit: Tensor,
               stratified: bool) -> Sampling:
        edges, levels = proposal_sample(origins, directions, t_near, t_far, self.density_fns, self.cfg, stratified)
        return Sampling(pack_dense(edges), tuple(levels), edges)
