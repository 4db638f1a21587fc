"""Capture summaries, layout classification and frusta plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from headforge.captures.capture import Capture, Split, View
from headforge.captures.formats import CaptureFormat, read_capture, write_capture
from headforge.captures.images import read_image
from headforge.captures.inspect import Layout, classify_layout, format_summary, plot_frusta, summarize
from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at

Z_UP = torch.tensor([0, 0, 1.0], dtype=torch.float64)


def capture_at(eyes: torch.Tensor, target=(0.2, -0.1, 0.3), sizes=None) -> Capture:
    target = torch.tensor(target, dtype=torch.float64)
    up = torch.where((eyes - target)[:, :2].norm(dim=-1, keepdim=True) < 1e-3, torch.tensor([0, 1.0, 0]).double(),
                     Z_UP)
    w2c = look_at(eyes + target, target, up)
    n = len(eyes)
    w, h = (32, 24) if sizes is None else (torch.tensor([s[0] for s in sizes]), torch.tensor([s[1] for s in sizes]))
    cams = Cameras.create(w2c, 30.0, 30.0, 16.0, 12.0, w, h)
    return Capture(cams, tuple(View(None) for _ in range(n)), Split.every(n),
                   images=torch.zeros(n, 24, 32, 4))


def spherical(azimuth_deg, elevation_deg, radius=3.0) -> torch.Tensor:
    a, e = (torch.as_tensor(x, dtype=torch.float64).deg2rad() for x in (azimuth_deg, elevation_deg))
    return radius * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], -1)


def fibonacci(n: int, z_min: float = -1.0) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - (1 - z_min) * k / n
    phi = k * math.pi * (3 - math.sqrt(5))
    r = (1 - z * z).clamp(min=0).sqrt()
    return 3 * torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


ring = spherical(torch.arange(12) * 30.0, 5 * torch.sin(torch.arange(12.0)))
LAYOUTS = {
    Layout.RING: ring,
    Layout.ARC: spherical(torch.linspace(-80, 80, 9), torch.zeros(9)),
    Layout.FRONTAL: spherical(torch.tensor([-30.0, -15, 0, 15, 30, 0, 0]), torch.tensor([0.0, 0, 0, 0, 0, 20, -20])),
    Layout.SPHERE: fibonacci(40),
    Layout.HEMISPHERE: fibonacci(30, z_min=0.0),
    Layout.OTHER: spherical(torch.cat([torch.linspace(-60, 60, 7), torch.zeros(6)]),  # a cross
                            torch.cat([torch.zeros(7), torch.tensor([-60.0, -40, -20, 20, 40, 60])])),
}


@pytest.mark.parametrize("layout", list(Layout))
def test_layouts(layout):
    summary = summarize(capture_at(LAYOUTS[layout]))
    assert summary.layout is layout
    np.testing.assert_allclose(summary.centre, (0.2, -0.1, 0.3), atol=1e-4)
    assert summary.distance_min == pytest.approx(3.0, abs=1e-4) and summary.distance_max == pytest.approx(3.0, abs=1e-4)


def test_ring_with_a_few_cameras_above_is_still_a_ring():
    eyes = torch.cat([ring, spherical(torch.tensor([20.0, 140, 260]), torch.tensor([45.0, 45, 45]))])
    assert summarize(capture_at(eyes)).layout is Layout.RING
    assert classify_layout(np.array([[1.0, 0, 0]])) is Layout.FRONTAL


def test_summary_json_text_and_bounds():
    sizes = [(32, 24)] * 10 + [(64, 48)] * 2
    summary = summarize(capture_at(ring, sizes=sizes))
    data = json.loads(json.dumps(summary.to_json()))
    for key in ("num_views", "width", "height", "format", "num_train", "num_test"):
        assert key in data
    assert (data["num_views"], data["width"], data["height"], data["format"]) == (12, 32, 24, None)
    assert (data["num_train"], data["num_test"]) == (10, 2) and data["layout"] == "ring"
    assert data["sizes"] == [[32, 24], [64, 48]]
    assert summary.fov_x_deg == pytest.approx(math.degrees(2 * math.atan(16 / 30)), abs=1e-3)
    # the bounds ball is seen whole by the cameras: radius = d sin(half the smaller fov)
    half = (np.array(summary.bounds_max) - np.array(summary.bounds_min)) / 2
    np.testing.assert_allclose(half, 3 * math.sin(math.atan(12 / 30)), atol=1e-3)
    text = format_summary(summary)
    assert "ring" in text and "12 (10 train, 2 test)" in text and "32 x 24 px (also 64 x 48)" in text
    assert "[" not in text  # nothing rich would read as markup


def test_colmap_points_give_centre_and_bounds(tmp_path):
    out = write_capture(capture_at(ring), tmp_path / "colmap", CaptureFormat.COLMAP)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.5, 0.5, (200, 3)) + [1.0, 2.0, 3.0]
    (out.parent / "points3D.txt").write_text("".join(f"{i + 1} {x} {y} {z} 1 2 3 0.5\n"
                                                     for i, (x, y, z) in enumerate(pts)))
    summary = summarize(read_capture(out))
    assert summary.centre_source == "colmap_points" and summary.bounds_source == "colmap_points"
    np.testing.assert_allclose(summary.centre, np.median(pts, 0), atol=1e-6)
    np.testing.assert_allclose(summary.bounds_min, np.percentile(pts, 1, axis=0), atol=1e-6)
    assert summary.format == "colmap"


def test_plot_frusta_writes_png(tmp_path):
    capture = capture_at(torch.cat([ring, spherical(torch.tensor([0.0]), torch.tensor([50.0]))]))
    path = plot_frusta(capture, tmp_path / "plots" / "frusta.png")
    assert path.is_file() and path.stat().st_size > 20_000
    img = read_image(path)
    assert img.shape[1] > img.shape[0] > 300
    assert (img[..., :3] < 0.5).any(-1).mean() > 0.01  # lines were drawn
    blue = (img[..., 2] > 0.6) & (img[..., 0] < 0.3)
    orange = (img[..., 0] > 0.9) & (img[..., 1] > 0.4) & (img[..., 1] < 0.6) & (img[..., 2] < 0.2)
    assert blue.sum() > 100 and orange.sum() > 10
    assert not list((tmp_path / "plots").glob("*partial*"))
