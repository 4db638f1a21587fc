"""Pure-torch Gaussian splatting: EWA projection (shared by every CPU backend) and a tile compositor.

The maths follows gsplat's ``rasterization`` (v1.4 "classic"/"antialiased" modes) line by line:

- covariance Sigma = R S S^T R^T from a wxyz quaternion (normalised here) and linear scales;
- camera-space mean/covariance with an OpenCV world-to-camera, perspective Jacobian evaluated at
  x/z, y/z clamped to [-(cx/fx + 0.3 tan_fovx), (W - cx)/fx + 0.3 tan_fovx] (1.3 tan(fov/2) for a
  centred principal point), cov2d = J Sigma_c J^T + eps2d I (the low-pass filter);
- "antialiased" opacity factor sqrt(det(cov2d) / det(cov2d + eps2d I));
- radius = ceil(3 sqrt(lambda_max)), lambda_max = b + sqrt(max(0.01, b^2 - det)), b = trace / 2;
- culling: depth outside (near, far), det <= 0, or the radius box entirely off-screen -> radius 0;
- TILE_SIZE (16) square tiles; a Gaussian touches tiles [floor(m/16 - r/16), ceil(m/16 + r/16)) per axis;
- per tile, front-to-back by camera depth (ties by index), alpha = min(0.999, o exp(-sigma)),
  sigma = 0.5 d^T conic d with d = mean2d - pixel centre (x + 0.5, y + 0.5); contributions with
  sigma < 0 or alpha < 1/255 are skipped, and a pixel stops before the Gaussian that would bring its
  transmittance to <= 1e-4 (that Gaussian is not composited).

The compositor here is differentiable through autograd and vectorised over padded tile batches; it
is the slow reference the compiled CPU kernel is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor

from headforge.geometry.rotations import quat_to_rotmat
from headforge.renderers.gaussian_types import TILE_SIZE

ALPHA_MAX = 0.999  # gsplat's clamp (graphdeco's CUDA rasterizer uses 0.99)
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4


@dataclass(frozen=True)
class Projection:
    means2d: Tensor  # [C, N, 2] pixels
    conics: Tensor  # [C, N, 3] upper triangle (a, b, c) of inverse(cov2d + eps2d I)
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N] int32, 0 = culled
    compensations: Tensor  # [C, N] sqrt(det(cov2d) / det(cov2d + eps2d I))


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:  # [N, 4] wxyz, [N, 3] -> [N, 3, 3]
    M = quat_to_rotmat(quats) * scales[..., None, :]  # R S
    return M @ M.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, world_to_camera: Tensor, Ks: Tensor,
                      width: int, height: int, near: float, far: float, eps2d: float) -> Projection:
    """EWA projection of N Gaussians into C pinhole cameras (differentiable except radii)."""
    covars = quat_scale_to_covariance(quats, scales)  # [N, 3, 3]
    R, t = world_to_camera[:, :3, :3], world_to_camera[:, :3, 3]  # [C, 3, 3], [C, 3]
    means_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # [C, N, 3, 3]
    x, y, z = means_c.unbind(-1)  # [C, N]
    in_range = (z > near) & (z < far)
    zs = torch.where(in_range, z, torch.ones_like(z))  # keeps culled Gaussians finite
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.clamp(x / zs, min=-(cx / fx + 0.3 * tan_fovx), max=(width - cx) / fx + 0.3 * tan_fovx)
    ty = zs * torch.clamp(y / zs, min=-(cy / fy + 0.3 * tan_fovy), max=(height - cy) / fy + 0.3 * tan_fovy)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / (zs * zs),
                     zero, fy / zs, -fy * ty / (zs * zs)], -1).reshape(*zs.shape, 2, 3)  # [C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)  # [C, N, 2]

    c00, c01, c11 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = c00 * c11 - c01 * c01
    c00, c11 = c00 + eps2d, c11 + eps2d
    det = c00 * c11 - c01 * c01
    valid = in_range & (det > 0)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_s, -c01 / det_s, c00 / det_s], -1)  # [C, N, 3]
    # gsplat: sqrt(max(0, ratio)); the 1e-12 floor only avoids an infinite sqrt' (alpha < 1/255 there).
    compensations = torch.sqrt(torch.clamp(det_orig / det_s, min=1e-12))
    with torch.no_grad():
        b = 0.5 * (c00 + c11)
        v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radii = torch.where(valid & inside, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projection(means2d, conics, z, radii, compensations)


def tile_grid(width: int, height: int) -> tuple[int, int]:
    return (width + TILE_SIZE - 1) // TILE_SIZE, (height + TILE_SIZE - 1) // TILE_SIZE


@torch.no_grad()
def tile_rects(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    """[C, N, 2], [C, N] -> [C, N, 4] int32 (x0, y0, x1, y1): half-open tile ranges, empty if culled."""
    tiles_x, tiles_y = tile_grid(width, height)
    centre = means2d / TILE_SIZE  # [C, N, 2]
    r = (radii.to(means2d.dtype) / TILE_SIZE)[..., None]  # [C, N, 1]
    lo, hi = torch.floor(centre - r), torch.ceil(centre + r)
    limit = means2d.new_tensor([tiles_x, tiles_y])
    lo = torch.minimum(lo.clamp(min=0), limit)
    hi = torch.minimum(hi.clamp(min=0), limit)
    rects = torch.cat([lo, hi], -1).to(torch.int32)
    return torch.where((radii > 0)[..., None], rects, torch.zeros_like(rects))


@torch.no_grad()
def bin_gaussians(rects: Tensor, depths: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Per-tile depth-sorted lists. rects [C, N, 4], depths [C, N] ->
    offsets [C * T + 1] int64 (list of tile c*T + ty*tiles_x + tx is ids[offsets[i]:offsets[i+1]]),
    ids [M] int64 flat Gaussian indices c * N + n, ordered by (tile, depth, index)."""
    C, N = depths.shape
    tiles_x, tiles_y = tile_grid(width, height)
    n_tiles = tiles_x * tiles_y
    r = rects.reshape(-1, 4).long()
    w = (r[:, 2] - r[:, 0]).clamp(min=0)
    counts = w * (r[:, 3] - r[:, 1]).clamp(min=0)  # [C * N]
    flat = torch.repeat_interleave(torch.arange(C * N, device=rects.device), counts)  # [M]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(flat), device=rects.device) - first[flat]
    tx = r[flat, 0] + local % w[flat]
    ty = r[flat, 1] + local // w[flat]
    tile = (flat // N) * n_tiles + ty * tiles_x + tx
    order = torch.sort(depths.reshape(-1)[flat], stable=True).indices
    order = order[torch.sort(tile[order], stable=True).indices]
    per_tile = torch.bincount(tile, minlength=C * n_tiles)
    offsets = torch.cat([per_tile.new_zeros(1), torch.cumsum(per_tile, 0)])
    return offsets, flat[order]


def _composite_tiles(flat_xy: Tensor, flat_con: Tensor, flat_op: Tensor, flat_col: Tensor, idx: Tensor,
                     pix: Tensor) -> tuple[Tensor, Tensor]:
    """B tiles at once. Flattened [C*N, ...] Gaussian tensors, idx [B, M] depth-sorted ids padded with -1,
    pix [B, P, 2] pixel centres -> accumulated colour [B, P, D] and final transmittance [B, P]."""
    real = idx >= 0
    g = idx.clamp(min=0)
    d = flat_xy[g][:, None, :, :] - pix[:, :, None, :]  # [B, P, M, 2] mean - pixel
    con = flat_con[g][:, None]  # [B, 1, M, 3]
    sigma = (0.5 * (con[..., 0] * d[..., 0] ** 2 + con[..., 2] * d[..., 1] ** 2)
             + con[..., 1] * d[..., 0] * d[..., 1])  # [B, P, M]
    alpha = torch.clamp_max(flat_op[g][:, None] * torch.exp(-sigma), ALPHA_MAX)
    keep = real[:, None] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        included = torch.cumprod(1 - alpha, -1) > TRANSMITTANCE_MIN  # a prefix of each pixel's list
    one_minus = torch.where(included, 1 - alpha, torch.ones_like(alpha))
    T = torch.cumprod(one_minus, -1)  # [B, P, M] transmittance after each Gaussian
    T_before = torch.cat([torch.ones_like(T[..., :1]), T[..., :-1]], -1)
    weights = torch.where(included, alpha * T_before, torch.zeros_like(alpha))
    return torch.einsum("bpm,bmd->bpd", weights, flat_col[g]), T[..., -1]


def composite_torch(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, offsets: Tensor,
                    ids: Tensor, width: int, height: int, max_elements: int = 1 << 22) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of binned Gaussians, differentiable through autograd.

    means2d [C, N, 2], conics [C, N, 3], opacities [C, N], colors [C, N, D] ->
    accumulated colour sum_i w_i c_i [C, H, W, D] (no background) and alpha 1 - T_final [C, H, W, 1].
    Tiles are batched by similar list length into chunks of about ``max_elements`` pixel-Gaussian
    pairs, each checkpointed (recomputed in backward) so memory stays at one chunk's intermediates.
    """
    C, N, D = colors.shape
    tiles_x, tiles_y = tile_grid(width, height)
    n_tiles, P = tiles_x * tiles_y, TILE_SIZE * TILE_SIZE
    counts = offsets[1:] - offsets[:-1]  # [C * T]
    busy = torch.nonzero(counts).squeeze(-1)  # tiles with Gaussians
    busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]  # longest lists first
    m_max = int(counts.max()) if len(ids) else 1
    table = torch.full((len(busy), m_max), -1, dtype=torch.long, device=ids.device)  # [B, M] padded lists
    if len(ids):
        tile_of = torch.repeat_interleave(torch.arange(C * n_tiles, device=ids.device), counts)
        slot = torch.empty_like(counts).index_copy_(0, busy, torch.arange(len(busy), device=ids.device))
        table[slot[tile_of], torch.arange(len(ids), device=ids.device) - offsets[tile_of]] = ids
    ys, xs = torch.meshgrid(torch.arange(TILE_SIZE), torch.arange(TILE_SIZE), indexing="ij")
    local_xy = torch.stack([xs, ys], -1).reshape(P, 2).to(means2d) + 0.5  # [P, 2] pixel centres in a tile
    flat = (means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1), colors.reshape(-1, D))
    flat_xy, flat_con, flat_op, flat_col = flat
    accs, Ts = [], []
    s = 0
    while s < len(busy):
        m = int(counts[busy[s]])  # the longest list in this chunk
        step = max(1, max_elements // (P * m))
        tiles, idx = busy[s:s + step], table[s:s + step, :m]  # [B], [B, M]
        t_local = tiles % n_tiles
        origin = torch.stack([t_local % tiles_x, t_local // tiles_x], -1).to(means2d) * TILE_SIZE  # [B, 2]
        pix = origin[:, None, :] + local_xy  # [B, P, 2]
        if torch.is_grad_enabled() and step < len(busy):  # several chunks: trade compute for memory
            acc, T = torch.utils.checkpoint.checkpoint(_composite_tiles, *flat, idx, pix, use_reentrant=False)
        else:
            acc, T = _composite_tiles(*flat, idx, pix)
        accs.append(acc)
        Ts.append(T)
        s += step
    if not accs:  # nothing visible: keep the outputs attached to the graph (zero gradients, no None)
        zero = flat_xy[:0].sum() + flat_con[:0].sum() + flat_op[:0].sum()  # an exact 0 that needs grad
        accs, Ts = [flat_col[:0].reshape(0, 1, D).expand(0, P, D) + zero], [flat_op[:0].reshape(0, 1).expand(0, P)]
    acc_tiles = colors.new_zeros(C * n_tiles, P, D).index_copy(0, busy, torch.cat(accs))
    T_tiles = opacities.new_ones(C * n_tiles, P).index_copy(0, busy, torch.cat(Ts))

    def untile(x: Tensor) -> Tensor:  # [C * T, P, K] -> [C, H, W, K]
        x = x.reshape(C, tiles_y, tiles_x, TILE_SIZE, TILE_SIZE, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * TILE_SIZE, tiles_x * TILE_SIZE, -1)[:, :height, :width]

    return untile(acc_tiles), 1 - untile(T_tiles[..., None])
