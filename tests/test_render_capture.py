"""render-capture: masks, depth and cameras agree with the mesh, through every capture format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headforge.captures.capture import Split
from headforge.captures.formats import CaptureFormat, read_capture, write_capture
from headforge.captures.images import read_image, read_mask
from headforge.geometry.camera_rigs import RigConfig, RigKind
from headforge.geometry.head_frame import HeadFrameSpec
from headforge.geometry.rays import generate_rays, project_points
from headforge.representations.mesh_io import load_mesh
from headforge.stages.render_capture import RenderCaptureConfig, render_capture


def mask_hits(capture, points: torch.Tensor, mirror: bool = False) -> tuple[int, int]:
    """(vertices projecting inside the image, of those the ones within one pixel of mask pixels > 0.5).

    Vertices on the silhouette project onto partly covered rim pixels, hence the one-pixel tolerance.
    ``mirror`` flips the projections upside down: a wrong convention must fail this check.
    """
    inside_total, on_mask = 0, 0
    cams = capture.native_cameras
    uv, z = project_points(cams, points.to(cams.fx.dtype))
    for i in range(len(capture)):
        alpha = capture.load(i).alpha.numpy()
        alpha = np.maximum.reduce([np.roll(alpha, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        h, w = alpha.shape
        if mirror:
            uv[i, :, 1] = h - uv[i, :, 1]
        col, row = uv[i, :, 0].floor().long(), uv[i, :, 1].floor().long()
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (z[i] > 0)
        inside_total += int(ok.sum())
        on_mask += int((alpha[row[ok].numpy(), col[ok].numpy()] > 0.5).sum())
    return inside_total, on_mask


def roundtrip_all_formats(capture, tmp_path):
    """Write the capture in every format and read each back."""
    out = {}
    for fmt in CaptureFormat:
        path = write_capture(capture, tmp_path / fmt.value, fmt, lossy=True)
        out[fmt] = read_capture(path)
    return out


def check_capture_against_mesh(capture, vertices, tmp_path, min_fraction=0.999):
    for fmt, cap in roundtrip_all_formats(capture, tmp_path).items():
        assert len(cap) == len(capture), fmt
        assert torch.allclose(cap.native_cameras.world_to_camera.double(),
                              capture.native_cameras.world_to_camera.double(), atol=1e-5), fmt
        total, hits = mask_hits(cap, vertices)
        assert total > 1000, fmt
        assert hits / total >= min_fraction, f"{fmt}: only {hits}/{total} projected vertices fall on the mask"
    total, hits = mask_hits(capture, vertices, mirror=True)
    assert hits / total < 0.95, "an upside-down projection must not match the masks"


def test_sample_head_capture_projects_into_masks(tiny_capture_dir, sample_head, tmp_path):
    capture = read_capture(tiny_capture_dir, test_every=5)
    assert capture.source_format == "nerfstudio" and len(capture) == 20
    assert capture.split == Split.spread(capture.native_cameras, 5) and len(capture.split.test) == 4
    check_capture_against_mesh(capture, sample_head.mesh.vertices, tmp_path)


def test_capture_files_and_metadata(tiny_capture_dir):
    meta = json.loads((tiny_capture_dir / "transforms.json").read_text())
    assert meta["camera_model"] == "PINHOLE" and len(meta["frames"]) == 20
    opencv = json.loads((tiny_capture_dir / "opencv_cameras.json").read_text())
    assert len(opencv["frames"]) == 20 and set(opencv["frames"][0]) >= {"w", "h", "fx", "fy", "cx", "cy", "w2c"}
    both = read_capture(tiny_capture_dir / "opencv_cameras.json")
    ns = read_capture(tiny_capture_dir / "transforms.json")
    assert torch.allclose(both.native_cameras.world_to_camera, ns.native_cameras.world_to_camera, atol=1e-6)
    rgba = read_image(ns.views[3].image_path)
    assert rgba.shape == (64, 64, 4)
    # mask file equals the alpha channel, and the background is transparent
    np.testing.assert_allclose(read_mask(ns.views[3].mask_path), rgba[..., 3], atol=1 / 255)
    assert rgba[0, 0, 3] == 0 and rgba[..., 3].max() == 1.0
    assert not list(tiny_capture_dir.parent.glob("*.partial*"))


def test_depth_maps_lie_on_the_mesh(tiny_capture_dir, sample_head):
    """Unprojected depth pixels land within 2 mm of the mesh surface (nearest vertex, mean)."""
    from scipy.spatial import cKDTree

    capture = read_capture(tiny_capture_dir)
    tree = cKDTree(sample_head.mesh.vertices.numpy())
    rays = generate_rays(capture.native_cameras[[2]])
    depth = capture.load_depth(2).numpy()
    alpha = capture.load(2).alpha.numpy()
    full = (alpha > 0.999) & (depth > 0)  # interior pixels (edges average depths)
    t = torch.from_numpy(depth)[None] / rays.z_scale
    pts = (rays.origins + rays.directions * t[..., None])[0][torch.from_numpy(full)]
    dist, _ = tree.query(pts.numpy())
    assert full.sum() > 500
    assert float(np.mean(dist)) < 0.002, f"mean distance {np.mean(dist) * 1000:.2f} mm"


def test_lps_head_capture_round_trips_every_format(lps_head_dir, tmp_path):
    mesh = load_mesh(lps_head_dir / "head.obj")
    cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.SPHERE32, resolution=96),
                              head_frame=HeadFrameSpec(head_width_m=0.155), supersample=1)
    result = render_capture(mesh, cfg, tmp_path / "lps", progress=False)
    assert len(result.capture) == 32
    # the returned capture carries the split a reader of the files chooses for the same --test-every
    assert result.capture.split == read_capture(tmp_path / "lps", test_every=cfg.test_every).split
    # the vertices, brought into the head frame the same way, project inside the masks in every format
    check_capture_against_mesh(result.capture, result.mesh.vertices, tmp_path / "formats")


def test_render_capture_refuses_existing_output(tiny_capture_dir, sample_head):
    from headforge.errors import InputError

    cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.RING, num_views=2, resolution=16), head_frame=None)
    with pytest.raises(InputError, match="already exists"):
        render_capture(sample_head.mesh, cfg, tiny_capture_dir, progress=False)
