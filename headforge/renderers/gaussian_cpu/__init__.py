"""Compiled CPU compositing kernel for Gaussian splats (raster.cpp), built on first use by
:func:`headforge.extensions.load_extension`; its ops are registered as ``torch.ops.headforge_gs.*``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.extensions import load_extension
from headforge.renderers.gaussian_torch import tile_grid
from headforge.renderers.gaussian_types import TILE_SIZE

_SOURCE = Path(__file__).with_name("raster.cpp")


def load_kernels() -> None:
    """Compile (first time) and load the kernel; raises :class:`HeadforgeError` if it cannot be built or its
    compile-time tile size differs from :data:`~headforge.renderers.gaussian_types.TILE_SIZE`."""
    load_extension("headforge_gs", _SOURCE, "the CPU Gaussian rasterizer", "use backend='torch'")
    kernel_tile = int(torch.ops.headforge_gs.tile_size())
    if kernel_tile != TILE_SIZE:
        raise HeadforgeError(f"the CPU Gaussian kernel was compiled with TILE = {kernel_tile} but TILE_SIZE is "
                             f"{TILE_SIZE}", path=_SOURCE, fix="set TILE in raster.cpp to TILE_SIZE")


def bin_gaussians_cpu(rects: Tensor, depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """rects [C, N, 4] int32, depths [C, N] -> offsets [C*T + 1] int64, ids [M] int32 (see gaussian_torch)."""
    load_kernels()
    tiles_x, tiles_y = tile_grid(width, height)
    offsets, ids = torch.ops.headforge_gs.bin_gaussians(rects.contiguous(), depths.float().contiguous(),
                                                        tiles_x, tiles_y)
    return offsets, ids


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, offsets, ids, width, height):
        args = [t.detach().contiguous() for t in (means2d, conics, opacities, colors)]
        acc, alpha, t_final, last = torch.ops.headforge_gs.rasterize_forward(*args, offsets, ids, width, height)
        ctx.save_for_backward(*args, offsets, ids, t_final, last)
        ctx.size = (width, height)
        return acc, alpha

    @staticmethod
    def backward(ctx, v_acc, v_alpha):
        grads = torch.ops.headforge_gs.rasterize_backward(*ctx.saved_tensors, v_acc.contiguous(),
                                                          v_alpha.contiguous(), *ctx.size)
        return (*grads, None, None, None, None)


def composite_cpu(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, rects: Tensor,
                  depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Compiled twin of ``gaussian_torch.composite_torch`` (float32 CPU):
    means2d [C, N, 2], conics [C, N, 3], opacities [C, N], colors [C, N, D], rects [C, N, 4] int32,
    depths [C, N] -> accumulated colour [C, H, W, D] and alpha [C, H, W, 1]."""
    offsets, ids = bin_gaussians_cpu(rects, depths, width, height)
    return _Composite.apply(means2d, conics, opacities, colors, offsets, ids, width, height)
