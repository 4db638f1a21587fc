"""Projection, OpenCV distortion and per-pixel rays for :class:`Cameras`.

Pixel centres are at (i + 0.5, j + 0.5) (see cameras.py). Ray directions are unit length, in world
coordinates; ``z_scale`` is each ray's camera-z per unit length, so depth_z = t * z_scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import transform_points


@dataclass(frozen=True)
class Rays:
    origins: Tensor  # [..., 3] world
    directions: Tensor  # [..., 3] world, unit length
    z_scale: Tensor  # [...] camera-space z of the unit direction (converts ray distance to depth)


def distort(xy: Tensor, distortion: Tensor) -> Tensor:  # [..., P, 2] normalised, [..., 6] -> [..., P, 2]
    k1, k2, k3, k4, p1, p2 = (d[..., None] for d in distortion.unbind(-1))
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


def undistort(xy_d: Tensor, distortion: Tensor, iterations: int = 10) -> Tensor:  # as distort, inverted
    """Invert :func:`distort` with Newton steps on the analytic 2x2 Jacobian (as nerfstudio does)."""
    k1, k2, k3, k4, p1, p2 = (d[..., None] for d in distortion.unbind(-1))
    xy = xy_d.clone()
    for _ in range(iterations):
        x, y = xy.unbind(-1)
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        dradial = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))  # d radial / d r2
        res = distort(xy, distortion) - xy_d
        fx_x = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
        fx_y = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
        fy_x = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
        fy_y = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
        det = fx_x * fy_y - fx_y * fy_x
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        dx = (res[..., 0] * fy_y - res[..., 1] * fx_y) / det
        dy = (res[..., 1] * fx_x - res[..., 0] * fy_x) / det
        xy = xy - torch.stack([dx, dy], -1)
    return xy


def project_points(cameras: Cameras, points: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels and depths of world points. points [P, 3] or [N, P, 3] -> uv [N, P, 2], depth [N, P].

    Depth is camera-space z (OpenCV, positive in front). Points behind the camera get uv from the
    same formula; mask them with ``depth > 0``.
    """
    if points.ndim == 2:
        points = points.expand(len(cameras), *points.shape)
    cam = transform_points(cameras.world_to_camera, points)
    z = cam[..., 2]
    safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    xy = cam[..., :2] / safe_z[..., None]
    if cameras.has_distortion():
        xy = distort(xy, cameras.distortion)
    uv = torch.stack([xy[..., 0] * cameras.fx[:, None] + cameras.cx[:, None],
                      xy[..., 1] * cameras.fy[:, None] + cameras.cy[:, None]], -1)
    return uv, z


def pixel_centers(width: int, height: int, device=None, dtype=torch.float32) -> Tensor:  # -> [H, W, 2]
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u, v], -1)


def rays_from_pixels(cameras: Cameras, uv: Tensor) -> Rays:
    """Rays through pixel coordinates uv [N, ..., 2] (one set per camera), undistorting if needed."""
    n = len(cameras)
    flat = uv.reshape(n, -1, 2)
    xy = torch.stack([(flat[..., 0] - cameras.cx[:, None]) / cameras.fx[:, None],
                      (flat[..., 1] - cameras.cy[:, None]) / cameras.fy[:, None]], -1)
    if cameras.has_distortion():
        xy = undistort(xy, cameras.distortion)
    d_cam = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    norm = d_cam.norm(dim=-1, keepdim=True)
    d_cam = d_cam / norm
    c2w = cameras.camera_to_world()
    d_world = d_cam @ c2w[:, :3, :3].transpose(-1, -2)
    origins = c2w[:, None, :3, 3].expand_as(d_world)
    shape = uv.shape[:-1]
    return Rays(origins.reshape(*shape, 3), d_world.reshape(*shape, 3), (1 / norm[..., 0]).reshape(shape))


def generate_rays(cameras: Cameras) -> Rays:
    """One ray per pixel centre: fields [N, H, W, 3] (cameras must share one image size)."""
    width, height = cameras.same_size()
    uv = pixel_centers(width, height, cameras.device, cameras.fx.dtype)
    return rays_from_pixels(cameras, uv.expand(len(cameras), height, width, 2))


def opencv_projection_matrix(cameras: Cameras, near: float, far: float) -> Tensor:  # -> [N, 4, 4]
    """Camera (OpenCV) -> clip space with NDC x = 2u/W - 1, y = 2v/H - 1 and w = z.

    Image row 0 is at NDC y = -1, which is the memory layout nvdiffrast and headforge's mesh
    rasterizer produce. NDC z runs from -1 at ``near`` to 1 at ``far``. Distortion is ignored.
    """
    n = len(cameras)
    W, H = cameras.width.to(cameras.fx), cameras.height.to(cameras.fx)
    P = cameras.fx.new_zeros(n, 4, 4)
    P[:, 0, 0] = 2 * cameras.fx / W
    P[:, 0, 2] = 2 * cameras.cx / W - 1
    P[:, 1, 1] = 2 * cameras.fy / H
    P[:, 1, 2] = 2 * cameras.cy / H - 1
    P[:, 2, 2] = (far + near) / (far - near)
    P[:, 2, 3] = -2 * far * near / (far - near)
    P[:, 3, 2] = 1
    return P


def world_to_clip(cameras: Cameras, points: Tensor, near: float, far: float) -> Tensor:
    """World points [V, 3] or [N, V, 3] -> homogeneous clip coordinates [N, V, 4] (pinhole)."""
    if points.ndim == 2:
        points = points.expand(len(cameras), *points.shape)
    M = opencv_projection_matrix(cameras, near, far) @ cameras.world_to_camera
    homo = torch.cat([points, torch.ones_like(points[..., :1])], -1)
    return homo @ M.transpose(-1, -2)
