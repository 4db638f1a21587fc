"""Rotations and rigid transforms as plain tensor functions.

Conventions: quaternions are wxyz and unit length; rotation matrices act on column vectors;
rigid transforms are [..., 4, 4] with last row (0, 0, 0, 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Flips camera y and z: OpenCV (x right, y down, z forward) <-> OpenGL (x right, y up, z backward).
OPENCV_TO_OPENGL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def quat_to_rotmat(q: Tensor) -> Tensor:  # [..., 4] wxyz -> [..., 3, 3]
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def rotmat_to_quat(R: Tensor) -> Tensor:  # [..., 3, 3] -> [..., 4] wxyz with w >= 0
    """Shepperd's method, choosing the best-conditioned branch per matrix."""
    m = R.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                     m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0],
                     1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], dim=1)  # [M, 4 branches, 4]
    diag = torch.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    best = diag.argmax(-1)
    q = cands[torch.arange(m.shape[0]), best]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


def make_rigid(R: Tensor, t: Tensor) -> Tensor:  # [..., 3, 3], [..., 3] -> [..., 4, 4]
    T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def invert_rigid(T: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4], exact for rotation + translation
    R = T[..., :3, :3].transpose(-1, -2)
    return make_rigid(R, -(R @ T[..., :3, 3:4]).squeeze(-1))


def transform_points(T: Tensor, points: Tensor) -> Tensor:  # [..., 4, 4], [..., P, 3] -> [..., P, 3]
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def opencv_w2c_to_opengl_c2w(w2c: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    """OpenCV world-to-camera -> OpenGL camera-to-world (nerfstudio, Blender, three.js)."""
    return invert_rigid(w2c) @ OPENCV_TO_OPENGL.to(w2c)


def opengl_c2w_to_opencv_w2c(c2w: Tensor) -> Tensor:  # [..., 4, 4] -> [..., 4, 4]
    return invert_rigid(c2w @ OPENCV_TO_OPENGL.to(c2w))


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:  # [..., 3] x3 -> [..., 4, 4] OpenCV w2c
    """World-to-camera (OpenCV) for cameras at ``eye`` looking at ``target`` with world ``up``."""
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up)
    norm = x.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x = x / norm
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-2)  # rows are the camera axes in world coordinates
    return make_rigid(R, -(R @ eye.unsqueeze(-1)).squeeze(-1))


def rotation_error_deg(R1: Tensor, R2: Tensor) -> Tensor:  # [..., 3, 3] x2 -> [...]
    cos = ((R1.transpose(-1, -2) @ R2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def umeyama(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity dst ~ s R src + t (Umeyama 1991): src, dst [N, 3] -> s [], R [3, 3], t [3].

    R is a proper rotation (det +1: a reflection is never returned); s > 0 for non-degenerate point sets.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)  # [3, 3]
    U, S, Vh = torch.linalg.svd(cov)
    sign = torch.ones(3, dtype=src.dtype)
    if float(torch.linalg.det(U @ Vh)) < 0:
        sign[2] = -1  # no mirror
    R = U @ torch.diag(sign) @ Vh
    s = (S * sign).sum() / xs.pow(2).sum(1).mean()
    return s, R, mu_d - s * R @ mu_s
