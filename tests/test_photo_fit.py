"""One-view rig fit on a synthetic photo with ground truth (the built-in rig rendered with a known identity,
expression and head pose from a known camera): landmark reprojection, the photo's expression, the fixed scale,
the completed avatar's render against the photo; and MediaPipe's own detections on the render when installed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from photo_synthetic import synthetic_photo

from headforge.geometry.rays import project_points
from headforge.metrics import psnr
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.stages.avatar_layers import composite_render
from headforge.stages.photo_fit import PhotoFitConfig, fit_photo, photo_landmark_fit, rescale_about_camera
from headforge.stages.rig_params import Similarity
from headforge.stages.rig_texture import RigTextureConfig
from headforge.stages.texture_complete import TextureCompleteConfig

D = torch.float64
CONFIG = PhotoFitConfig(texture=TextureCompleteConfig(bake=RigTextureConfig(size=256, full_weight=0.15)))


@pytest.fixture(scope="module")
def scene():
    return synthetic_photo()


@pytest.fixture(scope="module")
def fit(scene):
    return fit_photo(scene.photo, scene.rig, "builtin", CONFIG, template_texture=scene.template_texture)


def test_landmark_reprojection_and_expression(scene, fit):
    """Target of the issue: <= 3 px median at 512 px (measured 0.24 px after the refinement, 0.03 px after the
    landmark stage alone, on exact landmarks)."""
    assert fit.landmark_median_px <= 3.0
    got, want = fit.params.expression[0], scene.truth.expression[0]
    for name in ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp"):
        i = ARKIT_NAMES.index(name)
        assert abs(float(got[i] - want[i])) < 0.15, name
    others = torch.ones(len(ARKIT_NAMES), dtype=torch.bool)
    others[(want > 0).nonzero().squeeze(1)] = False
    assert float(got[others].max()) < 0.15  # no expression the photo does not show
    assert float(fit.params.similarity.scale) == pytest.approx(CONFIG.scale)
    neutral = fit.neutral()
    assert float(neutral.expression.abs().max()) == 0 and float(neutral.pose.rotations.abs().max()) == 0
    assert torch.equal(neutral.identity, fit.params.identity)


def test_the_completed_avatar_resembles_the_photo(scene, fit):
    """Face-region PSNR of ``PhotoFit.avatar()`` from the photo camera (measured 24.1 dB with the tests' 256 px
    atlas, 26.5 dB with the default 512 px), above the same avatar with its texture replaced by its mean colour
    (20.7 dB: the geometry and the mean skin colour alone)."""
    p = scene.photo
    face = p.face_mask.float()[None]
    rgb, _ = composite_render(fit.avatar(), fit.params, p.camera, torch.zeros(3))
    score = float(psnr(rgb, p.image[None], face))
    flat_tex = replace(fit.texture, texture=fit.texture.texture.reshape(-1, 3).mean(0).expand_as(fit.texture.texture))
    flat = replace(fit, texture=flat_tex)
    rgb_flat, _ = composite_render(flat.avatar(), fit.params, p.camera, torch.zeros(3))
    assert score > 23.0
    assert score > float(psnr(rgb_flat, p.image[None], face)) + 2.5
    assert len(fit.hair) > 1000


def test_rescaling_about_the_camera_keeps_projections(scene):
    g = torch.Generator().manual_seed(0)
    sim = Similarity(torch.tensor(1.3, dtype=D), torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=D))[0],
                     torch.randn(3, generator=g, dtype=D) * 0.05)
    if torch.det(sim.rotation) < 0:
        sim = Similarity(sim.scale, -sim.rotation, sim.translation)
    pts = torch.randn(50, 3, generator=g, dtype=D) * 0.1
    cam = scene.photo.camera.to(dtype=D)
    new = rescale_about_camera(sim, scene.photo.camera, 1.0)
    assert float(new.scale) == 1.0
    a, _ = project_points(cam, sim.apply(pts))
    b, _ = project_points(cam, new.apply(pts))
    assert torch.allclose(a, b, atol=1e-9)


def test_shuffled_landmarks_do_not_fit(scene):
    p = scene.photo
    perm = torch.randperm(len(p.landmarks), generator=torch.Generator().manual_seed(0))
    shuffled = replace(p, landmarks=p.landmarks[perm])
    assert photo_landmark_fit(shuffled, scene.rig, CONFIG.landmarks).median_px > 10.0


def test_detected_landmarks_fit_within_target(scene):
    """MediaPipe on the render (the path a real photo takes): the fit reprojects the detections within 3 px
    (measured 2.48 px; the detections lie 4.7 px (median) from the rig embedding's points on this head)."""
    pytest.importorskip("mediapipe", reason="the 'face' extra (mediapipe) is not installed")
    from headforge.stages.face_landmarks import detect_faces

    det = detect_faces(scene.photo.image)
    if not det.found:
        pytest.fail("MediaPipe found no face on the synthetic render")
    photo = replace(scene.photo, landmarks=det.landmarks)
    lm = photo_landmark_fit(photo, scene.rig, CONFIG.landmarks)
    assert lm.median_px <= 3.0
