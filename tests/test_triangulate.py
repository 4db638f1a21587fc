"""Multi-view DLT + RANSAC triangulation against hand-computed cases and a float64 brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.geometry.triangulate import triangulate_landmarks


def _frontal_cameras(n: int = 8, distortion: bool = False) -> Cameras:
    cams = make_rig(RigConfig(kind=RigKind.NERSEMBLE16, resolution=256))[:n].to(dtype=torch.float64)
    if distortion:
        d = torch.tensor([0.05, -0.02, 0.0, 0.0, 0.001, -0.0005], dtype=torch.float64)
        cams = Cameras(cams.world_to_camera, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height,
                       d.expand(len(cams), 6).clone(), cams.names)
    return cams


def _points(L: int = 40, seed: int = 1) -> torch.Tensor:  # [L, 3] inside a head-sized ball
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(L, 3, generator=g, dtype=torch.float64) - 0.5) * 0.2


def test_two_view_hand_computed_case():
    # Two pinhole cameras 1 m apart on x looking down +z (f = 100, c = (50, 50)); point (0.5, 0, 2)
    # appears at u = 50 + 100 * 0.5 / 2 = 75 in camera A (at x = 0) and at 50 + 100 * (-0.5) / 2 = 25 in B.
    w2c = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    w2c[1, 0, 3] = -1.0  # camera B sits at x = 1
    cams = Cameras.create(w2c, 100.0, 100.0, 50.0, 50.0, 100, 100, dtype=torch.float64)
    uv = torch.tensor([[[75.0, 50.0]], [[25.0, 50.0]]], dtype=torch.float64)
    tri = triangulate_landmarks(cams, uv, torch.ones(2, 1, dtype=torch.bool), threshold_px=1.0, min_inliers=2)
    torch.testing.assert_close(tri.points[0], torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert int(tri.num_inliers[0]) == 2 and float(tri.error_px[0]) < 1e-9


@pytest.mark.parametrize("distortion", [False, True])
def test_exact_projections_are_recovered(distortion):
    cams = _frontal_cameras(8, distortion)
    X = _points()
    uv, z = project_points(cams, X)
    assert (z > 0).all()
    valid = torch.ones(8, len(X), dtype=torch.bool)
    valid[:5, 0] = False  # landmark 0 seen in three views only
    valid[1:, 1] = False  # landmark 1 seen once: NaN
    tri = triangulate_landmarks(cams, uv, valid, threshold_px=2.0)
    ok = torch.arange(len(X)) != 1
    torch.testing.assert_close(tri.points[ok], X[ok], atol=1e-6, rtol=0)
    assert torch.isnan(tri.points[1]).all() and torch.isnan(tri.error_px[1]) and int(tri.num_inliers[1]) == 0
    assert int(tri.num_inliers[0]) == 3 and (tri.num_inliers[2:] == 8).all()
    assert float(tri.error_px[ok].max()) < 1e-6
    assert torch.isnan(tri.errors[~valid]).all()


def test_corrupted_view_is_flagged_as_outlier():
    cams = _frontal_cameras(8)
    X = _points()
    uv, _ = project_points(cams, X)
    g = torch.Generator().manual_seed(3)
    uv = uv + torch.randn(uv.shape, generator=g, dtype=torch.float64) * 0.3  # detector-like noise
    uv[5] += torch.tensor([25.0, -18.0], dtype=torch.float64)  # one view shifted by ~30 px
    tri = triangulate_landmarks(cams, uv, torch.ones(8, len(X), dtype=torch.bool), threshold_px=3.0)
    assert not tri.inliers[5].any()
    assert tri.inliers[[0, 1, 2, 3, 4, 6, 7]].all()
    assert float((tri.points - X).norm(dim=-1).max()) < 2e-3  # 2 mm from 0.3 px noise at 256 px
    assert float(tri.error_px.max()) < 1.5
    assert (tri.errors[5] > 20).all()

    # Without RANSAC (threshold so large every view is an inlier) the shifted view drags the points away.
    plain = triangulate_landmarks(cams, uv, torch.ones(8, len(X), dtype=torch.bool), threshold_px=1e6)
    assert float((plain.points - X).norm(dim=-1).median()) > 3 * float((tri.points - X).norm(dim=-1).median())


def test_all_views_corrupted_reports_large_errors():
    cams = _frontal_cameras(8)
    X = _points()
    uv, _ = project_points(cams, X)
    g = torch.Generator().manual_seed(4)
    uv = uv + torch.randn(uv.shape, generator=g, dtype=torch.float64) * 30.0  # every view off by ~30 px
    tri = triangulate_landmarks(cams, uv, torch.ones(8, len(X), dtype=torch.bool), threshold_px=2.0)
    assert float(tri.error_px.median()) > 10.0
    assert int(tri.reliable.sum()) < len(X) // 4
    assert float(tri.error_px[~tri.reliable].min()) > 2.0  # unreliable points report their error over all views
    assert torch.isfinite(tri.error_px).all()


# --------------------------------------------------------------------------- brute-force reference
def _reference(cams: Cameras, uv: np.ndarray, valid: np.ndarray, thr: float, min_inliers: int):
    """Per-landmark python loop in float64: SVD DLT of each view pair in order, count inliers, keep the
    best (most inliers, then lowest summed inlier error, then the earliest pair), refit with SVD."""
    V, L = valid.shape
    K = cams.intrinsics().numpy()
    P = [K[v] @ cams.world_to_camera[v, :3].numpy() for v in range(V)]

    def dlt(views, l):
        rows = []
        for v in views:
            Pn = np.linalg.inv(K[v]) @ P[v]
            x, y, _ = np.linalg.inv(K[v]) @ np.array([uv[v, l, 0], uv[v, l, 1], 1.0])
            for r in (x * Pn[2] - Pn[0], y * Pn[2] - Pn[1]):
                rows.append(r / np.linalg.norm(r))
        h = np.linalg.svd(np.array(rows))[2][-1]
        return h[:3] / h[3]

    def err(X, v, l):
        p = P[v] @ np.append(X, 1.0)
        return np.inf if p[2] <= 0 else float(np.hypot(p[0] / p[2] - uv[v, l, 0], p[1] / p[2] - uv[v, l, 1]))

    points = np.full((L, 3), np.nan)
    inliers = np.zeros((V, L), bool)
    for l in range(L):
        views = [v for v in range(V) if valid[v, l]]
        if len(views) < 2:
            continue
        best = (-1, np.inf, None)
        for a, b in itertools.combinations(range(V), 2):
            if not (valid[a, l] and valid[b, l]):
                continue
            X = dlt([a, b], l)
            e = [(v, err(X, v, l)) for v in views]
            inl = [v for v, ev in e if ev <= thr]
            cost = sum(ev for v, ev in e if ev <= thr)
            if len(inl) > best[0] or (len(inl) == best[0] and cost < best[1]):
                best = (len(inl), cost, inl)
        fit = best[2] if best[0] >= min_inliers else views
        points[l] = dlt(fit, l)
        if best[0] >= min_inliers:
            agree = [v for v in views if err(points[l], v, l) <= thr]
            if len(agree) >= min_inliers:
                inliers[agree, l] = True
    return points, inliers


def test_matches_brute_force_reference():
    cams = _frontal_cameras(6)
    X = _points(25, seed=7)
    uv, _ = project_points(cams, X)
    g = torch.Generator().manual_seed(8)
    uv = uv + torch.randn(uv.shape, generator=g, dtype=torch.float64) * 0.5
    bad = torch.rand(uv.shape[:2], generator=g) < 0.25  # a quarter of the observations are gross outliers
    uv[bad] += torch.randn(int(bad.sum()), 2, generator=g, dtype=torch.float64) * 40
    valid = torch.rand(uv.shape[:2], generator=g) > 0.15
    for min_inliers in (2, 3):
        tri = triangulate_landmarks(cams, uv, valid, threshold_px=2.0, min_inliers=min_inliers)
        ref_points, ref_inliers = _reference(cams, uv.numpy(), valid.numpy(), 2.0, min_inliers)
        np.testing.assert_allclose(tri.points.numpy(), ref_points, atol=1e-9, rtol=0)
        np.testing.assert_array_equal(tri.inliers.numpy(), ref_inliers)
        if min_inliers == 3:
            assert 0 < int(tri.reliable.sum()) < len(X)  # the case exercises both branches


def test_rejects_mismatched_shapes():
    cams = _frontal_cameras(3)
    with pytest.raises(ValueError, match="disagree"):
        triangulate_landmarks(cams, torch.zeros(2, 5, 2), torch.ones(2, 5, dtype=torch.bool))
