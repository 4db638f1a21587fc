"""Adapter to nerfacc (>= 0.5) for CUDA compositing (``VolumeRendererConfig.backend`` nerfacc / auto).

nerfacc's compositing launches CUDA kernels even for dense inputs, so everything here refuses CPU tensors with
a clear error; the torch path in volume.py is the reference and the CPU implementation. Inputs and outputs use
headforge's packed format (ray_indices [S] sorted, t_starts/t_ends [S]), which is nerfacc's flattened format.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
