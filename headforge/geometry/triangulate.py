"""Multi-view triangulation of 2D points (landmarks) seen by calibrated cameras.

Conventions: ``Cameras`` (OpenCV world-to-camera, pixel centres at +0.5); observations ``points2d``
[V, L, 2] are pixels (x right, y down) in each camera's image, ``valid`` [V, L] says which exist.

Method, per landmark:
1. Linear DLT (homogeneous, smallest eigenvector of the 4x4 normal matrix) on *undistorted normalised*
   coordinates, so camera distortion is handled exactly and the system is well scaled (metres, not pixels).
2. RANSAC over view pairs: every pair of views (or ``max_pairs`` of them drawn with a seeded generator)
   proposes a point from its two observations; the proposal that the most views see within
   ``threshold_px`` (in front of the camera) wins, ties broken by the lower summed inlier error. Two
   views alone nearly always agree (two rays miss each other only across the epipolar line), so a
   point needs ``min_inliers`` (default 3) agreeing views to count as reliable.
3. Refit: DLT on the winner's inlier views, then the inliers are re-scored against the refitted point.

Reported: the point, the inlier mask [V, L], the per-view reprojection error [V, L] (pixels, NaN where
not observed), the inlier count and the median error over the inlier views. A landmark whose best
proposal has fewer than ``min_inliers`` inliers keeps the DLT of *all* its views, no inliers, and reports
the median error over all of them (large for inconsistent observations: never a silently good number);
a landmark seen in fewer than two views is NaN.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points, undistort


@dataclass(frozen=True)
class Triangulation:
    points: Tensor  # [L, 3] float64 world points; NaN where seen in fewer than 2 views
    inliers: Tensor  # [V, L] bool: views that agree with the point within the threshold
    errors: Tensor  # [V, L] float64 reprojection error in pixels; NaN where not observed
    num_inliers: Tensor  # [L] int64
    error_px: Tensor  # [L] float64 median error over inlier views (all views when unreliable); NaN if unseen
    threshold_px: float
    min_inliers: int

    @property
    def reliable(self) -> Tensor:  # [L] bool: at least ``min_inliers`` views agree on the point
        return self.num_inliers >= self.min_inliers


def normalised_observations(cameras: Cameras, points2d: Tensor) -> Tensor:  # [V, L, 2] px -> [V, L, 2]
    """Pixels to undistorted normalised image coordinates (x / z, y / z in the camera frame), float64."""
    cams = cameras.to(dtype=torch.float64)
    uv = points2d.to(torch.float64)
    xy = torch.stack([(uv[..., 0] - cams.cx[:, None]) / cams.fx[:, None],
                      (uv[..., 1] - cams.cy[:, None]) / cams.fy[:, None]], -1)
    if cams.has_distortion():
        xy = undistort(xy, cams.distortion)
    return xy


def dlt_rows(world_to_camera: Tensor, xy: Tensor) -> Tensor:  # [V, 4, 4], [V, L, 2] -> [V, L, 2, 4]
    """The two DLT rows per observation: x * P3 - P1 and y * P3 - P2 with P = [R | t] (normalised camera)."""
    P = world_to_camera[:, :3, :].to(xy.dtype)  # [V, 3, 4]
    r0 = xy[..., 0:1] * P[:, None, 2] - P[:, None, 0]  # [V, L, 4]
    r1 = xy[..., 1:2] * P[:, None, 2] - P[:, None, 1]
    rows = torch.stack([r0, r1], -2)
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-300)  # equal weight per observation


def solve_dlt(rows: Tensor, weights: Tensor) -> Tensor:  # [..., V, 2, 4], [..., V] -> [..., 3]
    """Weighted homogeneous least squares: the eigenvector of sum_v w_v A_v^T A_v with the smallest
    eigenvalue, dehomogenised (NaN when it lies at infinity)."""
    per_view = torch.einsum("...vri,...vrj->...vij", rows, rows)  # [..., V, 4, 4]
    normal = torch.einsum("...v,...vij->...ij", weights * weights, per_view)  # [..., 4, 4]
    _, vecs = torch.linalg.eigh(normal)
    h = vecs[..., :, 0]  # [..., 4]
    w = h[..., 3:4]
    ok = w.abs() > 1e-12 * h.norm(dim=-1, keepdim=True)
    return torch.where(ok, h[..., :3] / torch.where(ok, w, torch.ones_like(w)), torch.full_like(w, float("nan")))


def reprojection_errors(cameras: Cameras, points: Tensor, points2d: Tensor, valid: Tensor) -> Tensor:
    """Pixel distance [..., V, L] between each camera's projection of points [..., L, 3] and the
    observations [V, L, 2]; inf where the point is behind the camera or not finite, NaN where not observed."""
    cams = cameras.to(dtype=torch.float64)
    lead = points.shape[:-2]
    flat = points.reshape(-1, *points.shape[-2:])  # [B, L, 3]
    B, L = flat.shape[0], flat.shape[1]
    V = len(cams)
    pts = flat.permute(1, 0, 2).reshape(1, L * B, 3).expand(V, L * B, 3)  # order: landmark-major
    uv, z = project_points(cams, torch.nan_to_num(pts, nan=0.0))  # [V, L*B, 2], [V, L*B]
    uv, z = uv.reshape(V, L, B, 2), z.reshape(V, L, B)
    err = (uv - points2d.to(torch.float64)[:, :, None]).norm(dim=-1)  # [V, L, B]
    finite = torch.isfinite(flat).all(-1).T[None]  # [1, L, B]
    err = torch.where((z > 0) & finite, err, torch.full_like(err, float("inf")))
    err = torch.where(valid[:, :, None], err, torch.full_like(err, float("nan")))
    return err.permute(2, 0, 1).reshape(*lead, V, L)


def view_pairs(num_views: int, max_pairs: int, seed: int) -> Tensor:  # -> [P, 2] int64
    """All view pairs, or ``max_pairs`` of them drawn without replacement by a seeded generator."""
    pairs = torch.tensor(list(itertools.combinations(range(num_views), 2)), dtype=torch.int64).reshape(-1, 2)
    if len(pairs) > max_pairs:
        g = torch.Generator().manual_seed(seed)
        pairs = pairs[torch.randperm(len(pairs), generator=g)[:max_pairs].sort().values]
    return pairs


def _median_over_views(err: Tensor, mask: Tensor) -> Tensor:  # [V, L], [V, L] -> [L] (NaN when empty)
    x = torch.where(mask, err, torch.full_like(err, float("nan")))
    return torch.nanmedian(x, dim=0).values


def triangulate_landmarks(cameras: Cameras, points2d: Tensor, valid: Tensor, threshold_px: float = 4.0, *,
                          min_inliers: int = 3, max_pairs: int = 256, seed: int = 0, chunk: int = 64) -> Triangulation:
    """Triangulate L points from V views: points2d [V, L, 2] pixels, valid [V, L] bool (see module doc).

    ``max_pairs`` bounds the RANSAC proposals (all pairs when there are fewer); ``chunk`` pairs are scored
    at a time to bound memory. Deterministic for a given ``seed``."""
    V, L = valid.shape
    if points2d.shape != (V, L, 2) or len(cameras) != V:
        raise ValueError(f"points2d {tuple(points2d.shape)}, valid {tuple(valid.shape)} and {len(cameras)} "
                         "cameras disagree (expected [V, L, 2], [V, L], V cameras)")
    if threshold_px <= 0:
        raise ValueError(f"threshold_px must be > 0, got {threshold_px}")
    if min_inliers < 2:
        raise ValueError(f"min_inliers must be >= 2, got {min_inliers}")
    valid = valid.bool() & torch.isfinite(points2d).all(-1)
    obs = torch.where(valid[..., None], points2d.to(torch.float64), torch.zeros((), dtype=torch.float64))
    w2c = cameras.world_to_camera.to(torch.float64)
    rows = dlt_rows(w2c, normalised_observations(cameras, obs))  # [V, L, 2, 4]
    rows_lv = rows.permute(1, 0, 2, 3)  # [L, V, 2, 4]

    best_count = torch.full((L,), -1, dtype=torch.int64)
    best_cost = torch.full((L,), float("inf"), dtype=torch.float64)
    best_inliers = torch.zeros(V, L, dtype=torch.bool)
    pairs = view_pairs(V, max_pairs, seed)
    for start in range(0, len(pairs), chunk):
        pc = pairs[start:start + chunk]  # [P, 2]
        weights = torch.zeros(len(pc), L, V, dtype=torch.float64)
        both = valid[pc[:, 0]] & valid[pc[:, 1]]  # [P, L]
        for k in range(2):
            weights[torch.arange(len(pc))[:, None], torch.arange(L)[None], pc[:, k:k + 1]] = both.double()
        proposals = solve_dlt(rows_lv[None], weights)  # [P, L, 3]
        err = reprojection_errors(cameras, proposals, obs, valid)  # [P, V, L]
        inl = (err <= threshold_px) & both[:, None, :]  # NaN / inf compare False
        count = inl.sum(1)  # [P, L]
        cost = torch.where(inl, err, torch.zeros_like(err)).sum(1)
        for p in range(len(pc)):  # sequential so ties go to the earliest pair, as in the reference
            better = (count[p] > best_count) | ((count[p] == best_count) & (cost[p] < best_cost))
            best_count = torch.where(better, count[p], best_count)
            best_cost = torch.where(better, cost[p], best_cost)
            best_inliers = torch.where(better[None], inl[p], best_inliers)

    seen = valid.sum(0)  # [L]
    enough = best_count >= min_inliers
    fit_views = torch.where(enough[None], best_inliers, valid)  # [V, L]
    points = solve_dlt(rows_lv, fit_views.T.double())  # [L, 3]
    errors = reprojection_errors(cameras, points, obs, valid)  # [V, L]
    inliers = valid & (errors <= threshold_px) & enough[None]
    inliers &= (inliers.sum(0) >= min_inliers)[None]  # the refit may lose views; then it is unreliable too
    num_inliers = inliers.sum(0)
    error_px = torch.where(num_inliers >= min_inliers, _median_over_views(errors, inliers),
                           _median_over_views(errors, valid))
    unseen = seen < 2
    points = torch.where(unseen[:, None], torch.full_like(points, float("nan")), points)
    error_px = torch.where(unseen, torch.full_like(error_px, float("nan")), error_px)
    inliers &= ~unseen[None]
    return Triangulation(points, inliers, errors, inliers.sum(0), error_px, float(threshold_px), min_inliers)
