"""Adapter to nerfacc (>= 0.5) for CUDA: compositing and the occupancy-grid estimator.

nerfacc's compositing launches CUDA kernels even for dense inputs, so everything here refuses CPU tensors with
a clear error; the torch path in volume.py is the reference and the CPU implementation. Inputs and outputs use
headforge's packed format (ray_indices [S] sorted, t_starts/t_ends [S]), which is nerfacc's flattened format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from headforge.renderers.volume import PackedSamples

if TYPE_CHECKING:
    from headforge.renderers.occupancy import OccupancyGrid


def nerfacc_available() -> bool:
    """True when nerfacc imports and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import nerfacc  # noqa: F401
    except ImportError:
        return False
    return True


def _require(*tensors: Tensor) -> None:
    if not nerfacc_available():
        raise RuntimeError("nerfacc compositing needs the nerfacc package and a CUDA device "
                           "(pip install nerfacc); use the torch renderer (backend='torch') on CPU")
    for t in tensors:
        if not t.is_cuda:
            raise RuntimeError("nerfacc calls CUDA kernels: move the samples to the GPU or use backend='torch'")


def render_weights_nerfacc(sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor,
                           n_rays: int) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as volume.render_weights_packed: [S] each -> weights, transmittance, alphas [S]."""
    _require(sigmas, t_starts, t_ends, ray_indices)
    import nerfacc

    weights, trans, alphas = nerfacc.render_weight_from_density(
        t_starts, t_ends, sigmas, ray_indices=ray_indices.long(), n_rays=n_rays)
    return weights, trans, alphas


def accumulate_nerfacc(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Same contract as volume.accumulate: [S], [S, D] -> [n_rays, D]."""
    _require(weights, ray_indices)
    import nerfacc

    return nerfacc.accumulate_along_rays(weights, values=values, ray_indices=ray_indices.long(), n_rays=n_rays)


def to_nerfacc_estimator(grid: OccupancyGrid):
    """A ``nerfacc.OccGridEstimator`` with the grid's box, resolution, occs and binaries (same cell layout)."""
    _require(grid.occs)
    import nerfacc

    aabb = torch.cat([grid.lo, grid.hi]).to(grid.occs.device)
    est = nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=grid.cfg.resolution, levels=1).to(grid.occs.device)
    with torch.no_grad():
        est.occs.copy_(grid.occs)
        est.binaries.copy_(grid.binaries[None])
    return est


def march_nerfacc(grid: OccupancyGrid, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor,
                  stratified: bool = False) -> PackedSamples:
    """nerfacc's CUDA ray marching through the same grid (no visibility pruning)."""
    _require(origins, directions)
    est = to_nerfacc_estimator(grid)
    ray_indices, t_starts, t_ends = est.sampling(
        origins, directions, t_min=t_near, t_max=t_far, render_step_size=grid.step_size,
        stratified=stratified, early_stop_eps=0.0, alpha_thre=0.0)
    return PackedSamples(ray_indices.long(), t_starts, t_ends, origins.shape[0])
