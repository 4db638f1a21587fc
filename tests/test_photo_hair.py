"""The hair layer of a one-photo fit: its front covers the photo's hair mask (projected with the rig occluding),
its thickness at the rim is the one the photo shows, its colours come from the photo, a bald photo gives none."""

from __future__ import annotations

import pytest
import torch
from photo_synthetic import HAIR_RGB, synthetic_photo

from headforge.renderers.mesh_render import render_mesh
from headforge.representations.bound_gaussians import LayerCode, pose_bound
from headforge.representations.gaussians import Splats
from headforge.representations.rig.head_rig import Region
from headforge.stages.avatar_layers import DEFAULT_TOLERANCE, occluded_centres
from headforge.stages.gaussian_train import render_splats
from headforge.stages.photo_hair import PhotoHairConfig, hair_observations, photo_hair
from headforge.stages.rig_evaluate import rig_mesh
from headforge.stages.rig_params import world_vertices

THICKNESS = 0.015


@pytest.fixture(scope="module")
def scene():
    return synthetic_photo(hair_thickness=THICKNESS)


@pytest.fixture(scope="module")
def hair(scene):
    return photo_hair(scene.photo, scene.rig, scene.truth, PhotoHairConfig(), torch.Generator().manual_seed(0))


def _coverage(scene, hair):
    """[H, W] bool: pixels the hair Gaussians cover (alpha > 0.5) in the photo camera, those whose centre lies
    behind the rig's surface left out (as ``composite_render`` does)."""
    verts = world_vertices(scene.rig, scene.truth)[0].float()
    s = pose_bound(hair.local, hair.binding, verts, scene.rig.faces)
    mesh = render_mesh(rig_mesh(scene.rig, verts), scene.photo.camera)
    hidden = occluded_centres(s.means, scene.photo.camera, mesh.depth, mesh.alpha, DEFAULT_TOLERANCE)[0]
    keep = ~hidden
    kept = Splats(s.means[keep], s.quats[keep], s.scales[keep], s.opacities[keep], s.sh[keep])
    return render_splats(kept, scene.photo.camera, 0, torch.zeros(3)).alpha[0, ..., 0] > 0.5


def test_hair_is_bound_to_the_scalp(scene, hair):
    assert len(hair) > 1000
    assert bool((hair.layer == int(LayerCode.HAIR)).all())
    scalp = scene.rig.region_mask(Region.SCALP)[scene.rig.faces[hair.binding]].all(1)
    assert bool(scalp.all())


def test_front_matches_the_hair_silhouette(scene, hair):
    """Measured at 512 px: IoU 0.73, 99.8 % of the mask covered, 26 % of the coverage outside it (hair seen
    through the gaps of the shell's silhouette and the back volume's spill past the crown)."""
    cov, mask = _coverage(scene, hair), scene.photo.hair_mask
    iou = float((cov & mask).sum() / (cov | mask).sum())
    assert iou > 0.65
    assert float((cov & mask).sum() / mask.sum()) > 0.95
    assert float((cov & ~mask).sum() / cov.sum()) < 0.35


def test_rim_thickness_is_the_photos(scene):
    verts = world_vertices(scene.rig, scene.truth)[0]
    obs = hair_observations(scene.photo, scene.rig, verts, PhotoHairConfig())
    rim = obs.thickness[obs.observed_thickness]
    assert len(rim) > 100
    assert abs(float(rim.median()) - THICKNESS) < 0.004  # the march's step is 2 mm
    # unobserved vertices facing away are thinner than the rim, never thicker than the thickest observation
    assert float(obs.thickness.max()) <= float(rim.max()) + 1e-9


def test_colours_come_from_the_photo(hair):
    colours = (hair.local.sh[:, 0] * 0.28209479177387814 + 0.5).double()  # SH DC -> rgb
    target = torch.tensor(HAIR_RGB, dtype=torch.float64)
    assert torch.allclose(colours.median(0).values, target, atol=0.02)
    # every Gaussian is the hair colour within the jitter of the unseen ones (3 sigma of 0.03)
    assert float((colours - target).abs().max()) < 0.2


def test_a_bald_photo_gives_no_hair():
    bald = synthetic_photo(hair_thickness=0.0)
    assert int(bald.photo.hair_mask.sum()) == 0
    out = photo_hair(bald.photo, bald.rig, bald.truth, PhotoHairConfig(), torch.Generator().manual_seed(0))
    assert len(out) == 0


def test_a_few_stray_hair_pixels_give_almost_no_hair(scene):
    """A hair mask of a few pixels on the forehead (a segmentation speck on a bald head): almost no hair."""
    from dataclasses import replace

    bald = synthetic_photo(hair_thickness=0.0)
    speck = torch.zeros_like(bald.photo.hair_mask)
    speck[150:153, 250:253] = True
    photo = replace(bald.photo, hair_mask=speck)
    out = photo_hair(photo, bald.rig, bald.truth, PhotoHairConfig(), torch.Generator().manual_seed(0))
    assert len(out) < 0.01 * PhotoHairConfig().points
