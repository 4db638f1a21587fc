"""Adapter from ``rasterize_gaussians`` to gsplat's CUDA ``gsplat.rasterization`` (gsplat >= 1.4).

Calls gsplat with ``packed=False``, ``tile_size=TILE_SIZE`` (16), ``render_mode="RGB+ED"`` and
``rasterize_mode="classic"`` or ``"antialiased"``, so its outputs line up with the torch and CPU
backends. Differences worth knowing:

- gsplat >= 1.5 returns per-axis radii [C, N, 2] (and sizes them with an opacity-aware 3.33 sigma
  box); they are reduced here to [C, N] with a max, so they are comparable only as "> 0" masks
  and rough sizes, not value for value with the 3-sigma radii of the other backends;
- ``meta["means2d"]`` is gsplat's own tensor in the autograd graph, with ``retain_grad()`` called
  so ``means2d.grad`` is filled by backward exactly as gsplat's densification strategies read it.
"""

from __future__ import annotations

import importlib.util

from torch import Tensor

from headforge.renderers.gaussian_types import TILE_SIZE, GaussianBackend, GaussianRender


def gsplat_importable() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     world_to_camera: Tensor, Ks: Tensor, width: int, height: int, *, sh_degree: int | None,
                     background: Tensor | None, near: float, far: float, eps2d: float,
                     antialiased: bool) -> GaussianRender:
    """Same inputs as ``rasterize_gaussians`` (background already [C, 3] or None)."""
    import gsplat

    renders, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats=world_to_camera, Ks=Ks, width=width, height=height,
        near_plane=near, far_plane=far, eps2d=eps2d, sh_degree=sh_degree, packed=False, tile_size=TILE_SIZE,
        backgrounds=background, render_mode="RGB+ED",
        rasterize_mode="antialiased" if antialiased else "classic")
    means2d = meta["means2d"]  # [C, N, 2]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.ndim == 3:  # gsplat >= 1.5: per-axis radii [C, N, 2]
        radii = radii.amax(-1)
    return GaussianRender(rgb=renders[..., :3], alpha=alphas, depth=renders[..., 3:4], means2d=means2d,
                          radii=radii.int(), depths=meta["depths"], conics=meta["conics"],
                          opacities=meta["opacities"], width=width, height=height, backend=GaussianBackend.GSPLAT)
