"""Volume rendering of neural fields in torch: ray/box clipping, sampling, packed compositing.

Samples are **packed** like nerfacc's flattened format: ``ray_indices`` [S] (sorted, each ray's samples
contiguous and ordered by t), ``t_starts``/``t_ends`` [S]; rays may have any number of samples (zero included),
so empty-space skipping (occupancy.py) really removes field evaluations. ``pack_info`` gives per-ray
(first sample, count) segments. A dense [R, S] reference (:func:`composite_dense`) is kept for tests.

Compositing: ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j
delta_j)`` (the packed path uses the sum form with a float64 segmented exclusive cumsum), ``w_i = T_i alpha_i``.
Per ray: ``rgb = sum w c (+ (1 - alpha) background)``, ``alpha = sum w`` (opacity), ``depth = sum w t_mid / alpha``
(expected ray distance of the visible surface; 0 where alpha = 0), ``depth_z = depth * z_scale`` (camera z),
``normals = sum w n`` (not renormalised: its length is the opacity of the surface that produced it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import torch
from torch import Tensor

from headforge.geometry.rays import Rays
from headforge.renderers.samples import PackedSamples, ProposalLevel, RaySampler, Sampling
from headforge.validation import Checked, Count, Fraction, NonNegative

Vec3 = tuple[float, float, float]


class VolumeBackend(StrEnum):
    """Compositing backend: torch (any device), nerfacc (CUDA only) or auto (nerfacc when it can run)."""

    TORCH = "torch"
    NERFACC = "nerfacc"
    AUTO = "auto"


class Field(Protocol):  # RadianceField or any analytic stand-in
    @property
    def bounds(self) -> tuple[Tensor, Tensor]: ...
    def density(self, points: Tensor) -> Tensor: ...
    def query(self, points: Tensor, directions: Tensor, normals: bool | None = None): ...


@dataclass(frozen=True)
class VolumeRendererConfig(Checked):
    n_samples: Count = 128  # per ray, uniform sampling (no occupancy grid / proposal sampler)
    stratified: bool = False  # jitter samples (training)
    near_plane: NonNegative = 0.0  # metres along the ray
    background: Vec3 | None = None  # blended where the ray is not opaque; None: no blend
    normals: bool | None = None  # render normals; None: the field's default (SDF fields do, density fields don't).
    # False skips the gradient pass (SDF training then draws its eikonal points separately)
    alpha_thre: Fraction = 0.0  # drop samples with alpha below this (needs an extra density pass)
    early_stop_eps: Fraction = 0.0  # drop samples behind transmittance below this (extra density pass)
    backend: VolumeBackend = VolumeBackend.TORCH  # compositing: torch, nerfacc (CUDA only) or auto



@dataclass(frozen=True)
class VolumeRender:
    rgb: Tensor  # [..., 3]
    alpha: Tensor  # [..., 1] accumulated opacity
    depth: Tensor  # [..., 1] expected ray distance (normalised by alpha)
    depth_z: Tensor  # [..., 1] camera-space z (depth * z_scale)
    normals: Tensor | None  # [..., 3] weighted, not renormalised
    samples: PackedSamples  # what was evaluated (rays flattened)
    weights: Tensor  # [S] per-sample weights (distortion / interlevel losses)
    gradients: Tensor | None = None  # [S, 3] raw SDF/density gradients (eikonal loss)
    proposal_levels: tuple[ProposalLevel, ...] = ()
    final_edges: Tensor | None = None  # [R, n + 1] (proposal sampling)


# ---------------------------------------------------------------------------------------------- geometry
def ray_aabb(origins: Tensor, directions: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test. [R, 3] x2, [3] x2 -> t_near [R], t_far [R] (t_far < t_near where missed), hit [R] bool."""
    d = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0, t1 = (lo - origins) / d, (hi - origins) / d  # [R, 3]
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far, t_far > t_near.clamp_min(0)


def clip_rays(origins: Tensor, directions: Tensor, lo: Tensor, hi: Tensor, near_plane: float):
    """Box clipping with a near plane; misses get t_near = t_far (empty). -> t_near, t_far [R], hit [R]."""
    t_near, t_far, _ = ray_aabb(origins, directions, lo.to(origins), hi.to(origins))
    t_near = t_near.clamp_min(near_plane)
    hit = t_far > t_near
    t_far = torch.where(hit, t_far, t_near)
    return t_near, t_far, hit


def uniform_edges(t_near: Tensor, t_far: Tensor, n: int, stratified: bool, generator=None) -> Tensor:
    """n intervals per ray between t_near and t_far [R] -> edges [R, n + 1]; stratified jitters interior edges."""
    u = torch.linspace(0, 1, n + 1, dtype=t_near.dtype, device=t_near.device).expand(len(t_near), n + 1)
    if stratified and n > 1:
        jitter = (torch.rand(len(t_near), n - 1, generator=generator, dtype=t_near.dtype) - 0.5) / n
        u = torch.cat([u[:, :1], u[:, 1:-1] + jitter.to(u.device), u[:, -1:]], 1)
    return t_near[:, None] + (t_far - t_near)[:, None] * u


def pack_dense(edges: Tensor, keep: Tensor | None = None) -> PackedSamples:
    """Dense edges [R, n + 1] (+ keep [R, n] bool) -> packed samples (row-major, so sorted by ray and t)."""
    R, n = edges.shape[0], edges.shape[1] - 1
    starts, ends = edges[:, :-1], edges[:, 1:]
    rays = torch.arange(R, device=edges.device)[:, None].expand(R, n)
    if keep is None:
        return PackedSamples(rays.reshape(-1), starts.reshape(-1), ends.reshape(-1), R)
    return PackedSamples(rays[keep], starts[keep], ends[keep], R)


def pack_info(ray_indices: Tensor, n_rays: int) -> Tensor:  # [S] sorted -> [n_rays, 2] (first, count)
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, 0) - counts
    return torch.stack([first, counts], -1)


# ---------------------------------------------------------------------------------------------- compositing
def render_weights_packed(sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                          n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """[S] each -> weights, transmittance, alphas [S] (segmented exclusive sum in float64)."""
    sd = sigmas * (t_ends - t_starts)  # [S]
    alphas = 1 - torch.exp(-sd)
    if len(sd) == 0:  # every ray of the batch is in empty space
        return alphas, torch.ones_like(alphas), alphas
    excl = torch.cumsum(sd.double(), 0) - sd.double()  # [S] global exclusive sum
    first = pack_info(ray_indices, n_rays)[:, 0]  # [R]
    excl = excl - excl[first.clamp_max(max(len(sd) - 1, 0))][ray_indices]  # restart at each ray
    trans = torch.exp(-excl).to(sigmas.dtype)
    return trans * alphas, trans, alphas


def accumulate(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Sum of w (values None) or of w * v over each ray: [S], [S, D] -> [n_rays, D]."""
    src = weights[:, None] if values is None else weights[:, None] * values
    return src.new_zeros(n_rays, src.shape[1]).index_add(0, ray_indices, src)


def composite_dense(sigmas: Tensor, t_starts: Tensor, t_ends: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: [R, S] each -> weights, transmittance, alphas [R, S] (product form)."""
    alphas = 1 - torch.exp(-sigmas * (t_ends - t_starts))
    trans = torch.cumprod(torch.cat([torch.ones_like(alphas[:, :1]), 1 - alphas[:, :-1]], 1), 1)
    return trans * alphas, trans, alphas


def expected_depth(weights: Tensor, t_mids: Tensor, ray_indices: Tensor, n_rays: int,
                   opacity: Tensor) -> Tensor:  # -> [n_rays, 1]
    d = accumulate(weights, t_mids[:, None], ray_indices, n_rays)
    return torch.where(opacity > 0, d / opacity.clamp_min(1e-10), torch.zeros_like(d))


# ---------------------------------------------------------------------------------------------- rendering
def _flat_rays(rays: Rays) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...]]:
    shape = tuple(rays.origins.shape[:-1])
    return rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3), rays.z_scale.reshape(-1), shape


def prune_invisible_reference(samples: PackedSamples, origins: Tensor, directions: Tensor,
                              sigma_fn: Callable[[Tensor], Tensor], alpha_thre: float,
                              early_stop_eps: float) -> PackedSamples:
    """Reference for :func:`prune_invisible`: one no-grad density pass over every sample."""
    if len(samples) == 0:
        return samples
    with torch.no_grad():
        sig = sigma_fn(samples.positions(origins, directions))[:, 0]
        _, trans, alphas = render_weights_packed(sig, samples.t_starts, samples.t_ends, samples.ray_indices,
                                                 samples.n_rays)
        keep = (alphas >= alpha_thre) & (trans >= early_stop_eps)
    return samples.select(keep)


def prune_invisible(samples: PackedSamples, origins: Tensor, directions: Tensor,
                    sigma_fn: Callable[[Tensor], Tensor], alpha_thre: float, early_stop_eps: float,
                    window: int = 32) -> PackedSamples:
    """nerfacc's visibility pruning (drop samples with alpha < alpha_thre or transmittance < early_stop_eps),
    marched front to back ``window`` samples per ray at a time: a ray whose transmittance has fallen below
    ``early_stop_eps`` gets no further density queries. Keeps exactly what the single-pass reference keeps
    (up to float rounding at the thresholds) while evaluating the density only up to each ray's termination."""
    if len(samples) == 0:
        return samples
    ri, n_rays = samples.ray_indices, samples.n_rays
    rank = torch.arange(len(samples), device=ri.device) - pack_info(ri, n_rays)[:, 0][ri]  # index along the ray
    keep = torch.zeros(len(samples), dtype=torch.bool, device=ri.device)
    tau = torch.zeros(n_rays, dtype=torch.float64, device=ri.device)  # optical depth marched so far
    tau_stop = -math.log(early_stop_eps) if early_stop_eps > 0 else math.inf
    with torch.no_grad():
        for start in range(0, int(rank.max()) + 1, window):
            alive = tau <= tau_stop
            if not bool(alive.any()):
                break
            idx = ((rank >= start) & (rank < start + window) & alive[ri]).nonzero()[:, 0]
            if len(idx) == 0:
                continue
            sub = PackedSamples(ri[idx], samples.t_starts[idx], samples.t_ends[idx], n_rays)
            sig = sigma_fn(sub.positions(origins, directions))[:, 0]
            _, trans, alphas = render_weights_packed(sig, sub.t_starts, sub.t_ends, sub.ray_indices, n_rays)
            keep[idx] = (alphas >= alpha_thre) & (trans * torch.exp(-tau[sub.ray_indices]) >= early_stop_eps)
            tau.index_add_(0, sub.ray_indices, (sig * (sub.t_ends - sub.t_starts)).double())
    return samples.select(keep)


def _use_nerfacc(cfg: VolumeRendererConfig, device: torch.device) -> bool:
    if cfg.backend is VolumeBackend.TORCH:
        return False
    from headforge.renderers.volume_nerfacc import nerfacc_available

    ok = nerfacc_available() and device.type == "cuda"
    if cfg.backend is VolumeBackend.NERFACC and not ok:
        raise RuntimeError("VolumeRendererConfig.backend='nerfacc' needs nerfacc, CUDA and CUDA tensors; "
                           "use backend='torch' on CPU")
    return ok


def render_samples(field: Field, origins: Tensor, directions: Tensor, z_scale: Tensor, sampling: Sampling,
                   cfg: VolumeRendererConfig, background: Tensor | None = None) -> VolumeRender:
    """Evaluate the field on packed samples and composite. origins/directions [R, 3], z_scale [R]."""
    s = sampling.samples
    R = s.n_rays
    out = field.query(s.positions(origins, directions), directions[s.ray_indices], normals=cfg.normals)
    sig = out.density[:, 0]
    if _use_nerfacc(cfg, sig.device):
        from headforge.renderers.volume_nerfacc import render_weights_nerfacc

        weights, _, _ = render_weights_nerfacc(sig, s.t_starts, s.t_ends, s.ray_indices, R)
    else:
        weights, _, _ = render_weights_packed(sig, s.t_starts, s.t_ends, s.ray_indices, R)
    opacity = accumulate(weights, None, s.ray_indices, R)  # [R, 1]
    rgb = accumulate(weights, out.rgb, s.ray_indices, R)  # [R, 3]
    if background is None and cfg.background is not None:
        background = torch.tensor(cfg.background, dtype=rgb.dtype, device=rgb.device)
    if background is not None:
        rgb = rgb + (1 - opacity) * background.to(rgb)
    depth = expected_depth(weights, s.t_mids, s.ray_indices, R, opacity)
    normals = None if out.normals is None else accumulate(weights, out.normals, s.ray_indices, R)
    return VolumeRender(rgb, opacity, depth, depth * z_scale[:, None], normals, s, weights, out.gradients,
                        sampling.proposal_levels, sampling.final_edges)


def render_rays(field: Field, rays: Rays, cfg: VolumeRendererConfig, sampler: RaySampler | None = None,
                background: Tensor | None = None, generator: torch.Generator | None = None) -> VolumeRender:
    """Render rays of any batch shape [..., 3]; outputs have the same batch shape ([..., 3] / [..., 1]).

    Without a sampler: ``cfg.n_samples`` uniform (optionally stratified) samples between the box entry and
    exit; rays that miss the box get no samples. ``background`` [3] overrides ``cfg.background``.
    """
    o, d, z, shape = _flat_rays(rays)
    lo, hi = field.bounds
    t_near, t_far, hit = clip_rays(o, d, lo, hi, cfg.near_plane)
    if sampler is None:
        edges = uniform_edges(t_near, t_far, cfg.n_samples, cfg.stratified, generator)
        sampling = Sampling(pack_dense(edges, hit[:, None].expand(-1, cfg.n_samples)))
    else:
        sampling = sampler.sample(o, d, t_near, t_far, hit, cfg.stratified)
    if cfg.alpha_thre > 0 or cfg.early_stop_eps > 0:
        samples = prune_invisible(sampling.samples, o, d, field.density, cfg.alpha_thre, cfg.early_stop_eps)
        sampling = Sampling(samples, sampling.proposal_levels, sampling.final_edges)
    r = render_samples(field, o, d, z, sampling, cfg, background)
    return _reshape(r, shape)


def render_dense(field: Field, rays: Rays, edges: Tensor, background: Tensor | None = None) -> VolumeRender:
    """Reference path: every ray gets the given edges [R, n + 1] (rays flattened), dense product compositing."""
    o, d, z, shape = _flat_rays(rays)
    R, n = edges.shape[0], edges.shape[1] - 1
    t0, t1 = edges[:, :-1], edges[:, 1:]
    pts = o[:, None] + d[:, None] * ((t0 + t1) / 2)[..., None]  # [R, n, 3]
    out = field.query(pts.reshape(-1, 3), d[:, None].expand(R, n, 3).reshape(-1, 3))
    w, _, _ = composite_dense(out.density.reshape(R, n), t0, t1)
    opacity = w.sum(1, keepdim=True)
    rgb = (w[..., None] * out.rgb.reshape(R, n, 3)).sum(1)
    if background is not None:
        rgb = rgb + (1 - opacity) * background.to(rgb)
    dsum = (w * (t0 + t1) / 2).sum(1, keepdim=True)
    depth = torch.where(opacity > 0, dsum / opacity.clamp_min(1e-10), torch.zeros_like(dsum))
    normals = None if out.normals is None else (w[..., None] * out.normals.reshape(R, n, 3)).sum(1)
    r = VolumeRender(rgb, opacity, depth, depth * z[:, None], normals, pack_dense(edges), w.reshape(-1))
    return _reshape(r, shape)


def _reshape(r: VolumeRender, shape: Sequence[int]) -> VolumeRender:
    f = lambda t: None if t is None else t.reshape(*shape, t.shape[-1])  # noqa: E731
    return VolumeRender(f(r.rgb), f(r.alpha), f(r.depth), f(r.depth_z), f(r.normals), r.samples, r.weights,
                        r.gradients, r.proposal_levels, r.final_edges)


def distortion_loss(weights: Tensor, samples: PackedSamples) -> Tensor:
    """mip-NeRF 360 distortion loss on packed samples (mean over rays), O(S) with segmented prefix sums."""
    w, m, ri = weights, samples.t_mids, samples.ray_indices
    interval = samples.t_ends - samples.t_starts
    first = pack_info(ri, samples.n_rays)[:, 0].clamp_max(max(len(w) - 1, 0))

    def excl(x: Tensor) -> Tensor:  # segmented exclusive cumsum
        c = torch.cumsum(x.double(), 0) - x.double()
        return (c - c[first][ri]).to(x.dtype)

    cross = 2 * w * (m * excl(w) - excl(w * m))
    self_term = w * w * interval / 3
    return accumulate(cross + self_term, None, ri, samples.n_rays).mean()
