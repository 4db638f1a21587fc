"""Differentiable Gaussian-splat rasterization with gsplat's maths and three backends.

``rasterize_gaussians`` projects N Gaussians into C cameras and alpha-composites them per 16 x 16
tile (see :mod:`headforge.renderers.gaussian_torch` for the exact formulas). Backends:

- ``"gsplat"``: gsplat's CUDA rasterizer (CUDA tensors, ``pip install gsplat``);
- ``"cpu"``: the compiled C++ kernel in :mod:`headforge.renderers.gaussian_cpu` (float32, CPU tensors;
  projection and SH stay in torch, compositing forward/backward are hand-written, OpenMP over tiles);
- ``"torch"``: pure torch, any device/dtype, slow (the reference the other two are tested against);
- ``"auto"``: gsplat on CUDA when importable, else the CPU kernel for float32 CPU tensors when it
  builds, else torch.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.geometry.sh import eval_sh, num_sh_bases
from headforge.renderers import gaussian_cpu
from headforge.renderers import gaussian_torch as gt
from headforge.renderers.gaussian_gsplat import gsplat_importable, rasterize_gsplat
from headforge.renderers.gaussian_types import GaussianBackend, GaussianRender


def _check_inputs(means, quats, scales, opacities, colors, world_to_camera, Ks, width, height,
                  sh_degree, background) -> None:
    n = means.shape[0] if means.ndim == 2 else -1
    shapes = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
              "opacities": (opacities, (n,))}
    for label, (t, shape) in shapes.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{label} must have shape {shape} (N = len(means)), got {tuple(t.shape)}")
    c = world_to_camera.shape[0] if world_to_camera.ndim == 3 else -1
    if tuple(world_to_camera.shape) != (c, 4, 4) or c < 1:
        raise ValueError(f"world_to_camera must be [C, 4, 4], got {tuple(world_to_camera.shape)}")
    if tuple(Ks.shape) != (c, 3, 3):
        raise ValueError(f"Ks must be [C, 3, 3] with C = {c}, got {tuple(Ks.shape)}")
    if sh_degree is None:
        if tuple(colors.shape) != (n, 3):
            raise ValueError(f"colors must be [N, 3] without sh_degree (or pass sh_degree with [N, K, 3] "
                             f"SH coefficients), got {tuple(colors.shape)}")
    else:
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3:
            raise ValueError(f"with sh_degree={sh_degree} colors must be SH coefficients [N, K, 3], "
                             f"got {tuple(colors.shape)}")
        k = colors.shape[1]
        if sh_degree < 0 or num_sh_bases(sh_degree) > k or k not in (1, 4, 9, 16):
            raise ValueError(f"sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} coefficients "
                             f"and K must be 1, 4, 9 or 16, got K = {k}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if background is not None and tuple(background.shape) not in ((3,), (c, 3)):
        raise ValueError(f"background must be [3] or [C, 3], got {tuple(background.shape)}")
    tensors = [means, quats, scales, opacities, colors, world_to_camera, Ks]
    if background is not None:
        tensors.append(background)
    if len({t.device for t in tensors}) != 1 or len({t.dtype for t in tensors}) != 1:
        raise ValueError("all inputs must share one device and one dtype, got "
                         f"{sorted({str(t.device) for t in tensors})} / {sorted({str(t.dtype) for t in tensors})}")
    if not means.dtype.is_floating_point:
        raise ValueError(f"inputs must be floating point, got {means.dtype}")


def gsplat_available() -> bool:
    return gsplat_importable()


def _pick_backend(backend: GaussianBackend | str, means: Tensor) -> GaussianBackend:
    try:
        backend = GaussianBackend(backend)
    except ValueError:
        raise ValueError(f"backend must be one of {', '.join(GaussianBackend)}, got {backend!r}") from None
    if backend is GaussianBackend.AUTO:
        if means.is_cuda and gsplat_available():
            return GaussianBackend.GSPLAT
        if means.device.type == "cpu" and means.dtype == torch.float32:
            try:
                gaussian_cpu.load_kernels()
                return GaussianBackend.CPU
            except HeadforgeError as err:
                warnings.warn(f"falling back to the slow torch rasterizer: {err}", stacklevel=3)
        return GaussianBackend.TORCH
    if backend is GaussianBackend.GSPLAT and not (means.is_cuda and gsplat_available()):
        raise HeadforgeError("backend='gsplat' needs gsplat installed and CUDA tensors "
                             f"(gsplat importable: {gsplat_available()}, device: {means.device})",
                             fix="pip install gsplat on a CUDA machine, or use backend='auto'")
    if backend is GaussianBackend.CPU:
        if means.device.type != "cpu" or means.dtype != torch.float32:
            raise HeadforgeError(f"backend='cpu' needs float32 CPU tensors, got {means.dtype} on {means.device}",
                                 fix="cast with .float().cpu(), or use backend='torch' for other dtypes")
        gaussian_cpu.load_kernels()  # raises HeadforgeError with the compiler output if the build fails
    return backend


def rasterize_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                        world_to_camera: Tensor, Ks: Tensor, width: int, height: int, *,
                        sh_degree: int | None = None, background: Tensor | None = None,
                        near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
                        antialiased: bool = False,
                        backend: GaussianBackend | str = GaussianBackend.AUTO) -> GaussianRender:
    """Render N Gaussians into C cameras of one size (OpenCV world-to-camera, pixel centres at +0.5).

    means [N, 3]; quats [N, 4] wxyz (normalised here); scales [N, 3] linear; opacities [N] in [0, 1];
    colors [N, 3], or SH coefficients [N, K, 3] with ``sh_degree`` (K >= (sh_degree+1)^2; colour =
    max(SH(dir) + 0.5, 0) with dir from the camera centre to the mean); world_to_camera [C, 4, 4];
    Ks [C, 3, 3]; background [3] or [C, 3] (default black). Returns a :class:`GaussianRender`.
    """
    _check_inputs(means, quats, scales, opacities, colors, world_to_camera, Ks, width, height,
                  sh_degree, background)
    width, height = int(width), int(height)
    chosen = _pick_backend(backend, means)
    C = world_to_camera.shape[0]
    bg = None if background is None else background.expand(C, 3)
    if chosen is GaussianBackend.GSPLAT:
        return rasterize_gsplat(means, quats, scales, opacities, colors, world_to_camera, Ks, width, height,
                                sh_degree=sh_degree, background=bg, near=near, far=far, eps2d=eps2d,
                                antialiased=antialiased)

    proj = gt.project_gaussians(means, quats, scales, world_to_camera, Ks, width, height, near, far, eps2d)
    view_opacities = opacities[None].expand(C, -1)  # [C, N]
    if antialiased:
        view_opacities = view_opacities * proj.compensations
    if sh_degree is None:
        view_colors = colors[None].expand(C, -1, -1)  # [C, N, 3]
    else:
        R, t = world_to_camera[:, :3, :3], world_to_camera[:, :3, 3]
        centres = -torch.einsum("cji,cj->ci", R, t)  # [C, 3] camera positions (rigid inverse)
        dirs = means[None] - centres[:, None]  # [C, N, 3]
        view_colors = torch.clamp_min(eval_sh(sh_degree, colors[None].expand(C, -1, -1, -1), dirs) + 0.5, 0.0)
    features = torch.cat([view_colors, proj.depths[..., None]], -1)  # [C, N, 4] RGB + depth
    rects = gt.tile_rects(proj.means2d.detach(), proj.radii, width, height)  # [C, N, 4]
    if chosen is GaussianBackend.CPU:
        acc, alpha = gaussian_cpu.composite_cpu(proj.means2d, proj.conics, view_opacities, features, rects,
                                   proj.depths.detach(), width, height)
    else:
        offsets, ids = gt.bin_gaussians(rects, proj.depths.detach(), width, height)
        acc, alpha = gt.composite_torch(proj.means2d, proj.conics, view_opacities, features, offsets, ids,
                                        width, height)
    rgb = acc[..., :3]
    if bg is not None:
        rgb = rgb + (1 - alpha) * bg[:, None, None, :]
    depth = acc[..., 3:] / alpha.clamp(min=1e-10)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    return GaussianRender(rgb=rgb, alpha=alpha, depth=depth, means2d=proj.means2d, radii=proj.radii,
                          depths=proj.depths, conics=proj.conics, opacities=view_opacities,
                          width=width, height=height, backend=chosen)
