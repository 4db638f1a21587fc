"""Compiled CPU compositing kernel for Gaussian splats (raster.cpp), built on first use.

The C++ source is compiled with ``torch.utils.cpp_extension.load`` (needs ninja and a C++ compiler)
into ``$TORCH_EXTENSIONS_DIR`` when set, else ``~/.cache/headforge/torch_extensions``; torch's
extension machinery rebuilds when the source or flags change and locks the build directory, so
concurrent processes share one build. The ops are registered as ``torch.ops.headforge_gs.*``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import Tensor

from headforge.errors import HeadforgeError

_SOURCE = Path(__file__).with_name("raster.cpp")
_LOCK = threading.Lock()
_loaded = False
_build_error: HeadforgeError | None = None  # remembered so a failed build is not retried per call


def build_directory() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "headforge" / "torch_extensions"
    return base / f"headforge_gs_torch{torch.__version__.split('+')[0]}"


def load_kernels() -> None:
    """Compile (first time) and load the kernel; raises :class:`HeadforgeError` if it cannot be built."""
    global _loaded, _build_error
    with _LOCK:
        if _loaded:
            return
        if _build_error is not None:
            raise _build_error
        try:
            from torch.utils import cpp_extension
            build = build_directory()
            build.mkdir(parents=True, exist_ok=True)
            cpp_extension.load(name="headforge_gs", sources=[str(_SOURCE)], build_directory=str(build),
                               extra_cflags=["-O3", "-std=c++17"], is_python_module=False, verbose=False)
        except (OSError, RuntimeError, ImportError, SystemError) as err:
            _build_error = HeadforgeError(
                f"could not build the CPU Gaussian rasterizer ({type(err).__name__}: {err})",
                path=_SOURCE, fix="install a C++ compiler and ninja (pip install ninja), or use backend='torch'")
            raise _build_error from err
        _loaded = True


def bin_gaussians_cpu(rects: Tensor, depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """rects [C, N, 4] int32, depths [C, N] -> offsets [C*T + 1] int64, ids [M] int32 (see gaussian_torch)."""
    load_kernels()
    tiles_x, tiles_y = (width + 15) // 16, (height + 15) // 16
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
