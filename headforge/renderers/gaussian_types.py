"""What every Gaussian rasterization backend shares: the backend names, the tile size and the result type.

gaussian_raster.py dispatches to gaussian_torch.py (reference), gaussian_cpu (compiled kernel) and
gaussian_gsplat.py (CUDA); all of them import this module and none imports the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from torch import Tensor

# Pixels per tile side, for every backend: the torch compositor bins with it, gsplat is called with it and
# the C++ kernel's compile-time TILE must equal it (gaussian_cpu.load_kernels checks).
TILE_SIZE = 16


class GaussianBackend(StrEnum):
    AUTO = "auto"  # gsplat on CUDA when importable, else the CPU kernel for float32 CPU tensors, else torch
    GSPLAT = "gsplat"  # gsplat's CUDA rasterizer
    CPU = "cpu"  # the compiled C++ kernel (float32 CPU tensors)
    TORCH = "torch"  # pure torch, any device/dtype: the reference


@dataclass(frozen=True)
class GaussianRender:
    rgb: Tensor  # [C, H, W, 3] composited colour + (1 - alpha) * background
    alpha: Tensor  # [C, H, W, 1] 1 - final transmittance
    depth: Tensor  # [C, H, W, 1] expected depth sum_i w_i z_i / max(alpha, 1e-10) (gsplat "ED"); 0 if empty
    means2d: Tensor  # [C, N, 2] projected centres (pixels); in the graph, retain_grad() already called
    radii: Tensor  # [C, N] int32 3-sigma screen radius (gsplat 1.4 layout), 0 = culled
    depths: Tensor  # [C, N] camera-space z of the centres
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c) incl. the eps2d low-pass
    opacities: Tensor  # [C, N] per-view opacities (times the antialiasing factor if antialiased)
    width: int
    height: int
    backend: GaussianBackend  # the backend that ran: gsplat, cpu or torch (never auto)

    @property
    def visible(self) -> Tensor:  # [C, N] bool, what densification counts as "seen"
        return self.radii > 0
