"""Texture completion of a one-photo fit: every texel filled, the photo's colours kept where seen, no step at the
seen / unseen seam (against a naive paste of the same sources), Reinhard re-colouring in Lab, the Poisson solver
against a dense twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from photo_synthetic import synthetic_photo

from headforge.errors import InputError
from headforge.stages.photo_types import AlignedPhoto
from headforge.stages.rig_texture import RigTextureConfig
from headforge.stages.texture_complete import (
    ColourStats,
    TextureCompleteConfig,
    _neighbour_pairs,
    colour_stats,
    complete_texture,
    lab_to_srgb,
    naive_paste,
    poisson_fill,
    recolour_lab,
    srgb_to_lab,
)

CONFIG = TextureCompleteConfig(bake=RigTextureConfig(size=256, full_weight=0.15))


@pytest.fixture(scope="module")
def scene():
    return synthetic_photo(shading=True)  # shaded: the grazing skin is darker than the fill, a seam to hide


@pytest.fixture(scope="module")
def completed(scene):
    return complete_texture(scene.photo, scene.rig, scene.truth, CONFIG, scene.template_texture)


def test_every_texel_is_filled_and_seen_texels_keep_the_photo(completed):
    L, tex = completed.layers, completed.texture
    colours = tex.texture.double().reshape(-1, 3)[L.texel]
    assert bool(torch.isfinite(colours).all()) and len(L.texel) == int(tex.covered.sum())
    assert bool(torch.isfinite(completed.fill).all())
    # nothing left at the atlas's empty value: only the re-coloured template's darkest tails (painted brows, far
    # below the skin's mean lightness) reach black (measured 0.26 %)
    assert float((colours.sum(-1) == 0).double().mean()) < 0.01
    seen = L.confidence >= 1
    assert 0.02 < float(seen.double().mean()) < 0.5  # one view sees part of the head
    assert float((colours[seen] - L.seen[seen]).abs().max()) < 1e-6  # float32 rounding only
    # unseen texels took a fill: the mirror side or the re-coloured template
    assert 0 < tex.mirror_fraction and 0 < tex.template_fraction
    assert abs(tex.seen_fraction + tex.mirror_fraction + tex.template_fraction - 1) < 1e-9


def test_the_seam_has_no_step(completed):
    """Mean colour difference of 4-neighbour texel pairs across the fully-seen boundary: below the naive paste's
    (measured 0.147 vs 0.176 at 256 px) and within twice the seen region's own texture gradient (0.080)."""
    L = completed.layers
    ours = completed.texture.texture.double().reshape(-1, 3)[L.texel]
    naive = naive_paste(completed).reshape(-1, 3)[L.texel]
    a, b = (torch.from_numpy(x) for x in _neighbour_pairs(L.size, L.texel))
    fixed = L.confidence >= 1
    seam, inner = fixed[a] != fixed[b], fixed[a] & fixed[b]
    step = lambda t, m: float((t[a[m]] - t[b[m]]).abs().sum(-1).mean())  # noqa: E731
    assert int(seam.sum()) > 100
    assert step(ours, seam) < 0.9 * step(naive, seam)
    assert step(ours, seam) < 2 * step(ours, inner)


def test_recolouring_moves_the_template_to_the_skin(completed):
    assert completed.template_skin is not None
    L = completed.layers
    face = L.region == completed.layers.region.new_tensor(0)  # FACE_SKIN is the built-in rig's first region
    moved = recolour_lab(srgb_to_lab(L.template[face]), completed.template_skin, completed.skin)
    m, s = moved.mean(0), moved.std(0, correction=0)
    assert torch.allclose(m, torch.tensor(completed.skin.mean, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(s, torch.tensor(completed.skin.std, dtype=torch.float64), atol=1e-6)
    # after the round trip to sRGB (clamped) the texture's statistics are still the skin's, within a Lab unit
    after = colour_stats(lab_to_srgb(moved))
    assert np.allclose(after.mean, completed.skin.mean, atol=1.0)
    before = completed.template_skin
    assert max(abs(x - y) for x, y in zip(before.mean, completed.skin.mean, strict=True)) > 0.5  # it did move


def test_recolour_twin_on_random_colours():
    g = torch.Generator().manual_seed(0)
    lab = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([9.0, 4.0, 3.0]) + 40
    src = ColourStats(tuple(lab.mean(0).tolist()), tuple(lab.std(0, correction=0).tolist()))
    dst = ColourStats((70.0, 12.0, 18.0), (5.0, 2.0, 1.5))
    out = recolour_lab(lab, src, dst)
    assert torch.allclose(out.mean(0), torch.tensor(dst.mean, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out.std(0, correction=0), torch.tensor(dst.std, dtype=torch.float64), atol=1e-9)


def test_lab_round_trip_and_reference_values():
    rgb = torch.rand(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)
    white = srgb_to_lab(torch.ones(3, dtype=torch.float64))
    assert torch.allclose(white, torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-3)
    red = srgb_to_lab(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # CIELAB of sRGB red (D65)
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20], dtype=torch.float64), atol=0.05)


def _dense_twin(size, texel, fixed, known, guidance, use_first, second, anchor, screen):
    """The same equations, one texel at a time into a dense matrix, solved by numpy."""
    index = {int(t): i for i, t in enumerate(texel)}
    free = [i for i in range(len(texel)) if not bool(fixed[i])]
    col = {i: k for k, i in enumerate(free)}
    A, rhs = np.zeros((len(free), len(free))), np.zeros((len(free), 3))
    for i in free:
        r, c = divmod(int(texel[i]), size)
        A[col[i], col[i]] += screen
        rhs[col[i]] += screen * anchor[i].numpy()
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            j = index.get(rr * size + cc) if 0 <= rr < size and 0 <= cc < size else None
            if j is None:
                continue
            src = guidance if bool(use_first[i] and use_first[j]) else second
            A[col[i], col[i]] += 1
            rhs[col[i]] += (src[i] - src[j]).numpy()
            if bool(fixed[j]):
                rhs[col[i]] += known[j].numpy()
            else:
                A[col[i], col[j]] -= 1
    out = known.clone()
    out[free] = torch.from_numpy(np.linalg.solve(A, rhs))
    return out


def test_poisson_fill_matches_its_dense_twin_and_reproduces_shifted_guidance():
    g = torch.Generator().manual_seed(2)
    S = 12
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    chart = ((yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 30).reshape(-1)  # a round chart; the corners are outside it
    texel = chart.nonzero().squeeze(1)
    M = len(texel)
    truth = torch.rand(M, 3, generator=g, dtype=torch.float64)
    fixed = (xx.reshape(-1)[texel] < 4)
    use_first = torch.rand(M, generator=g) < 0.5
    other = torch.rand(M, 3, generator=g, dtype=torch.float64)
    args = (S, texel, fixed, torch.where(fixed[:, None], truth, 0.0), truth + 0.3, use_first, other, other, 1e-2)
    fast = poisson_fill(*args)
    assert torch.allclose(fast, _dense_twin(*args), atol=1e-10)
    # guidance = the truth shifted by a constant, one source: the solution is the truth (gradient domain), up to
    # the screening pull toward the anchor (here the truth itself)
    same = poisson_fill(S, texel, fixed, torch.where(fixed[:, None], truth, 0.0), truth + 0.3,
                        torch.ones(M, dtype=torch.bool), truth + 0.3, truth, 1e-3)
    assert torch.allclose(same, truth, atol=1e-9)


def test_a_photo_without_visible_skin_is_refused(scene):
    p = scene.photo
    bare = AlignedPhoto(p.image, p.person_mask, torch.zeros_like(p.face_mask), p.hair_mask, p.landmarks, p.camera,
                        p.crop, p.convention, p.focal_source)
    with pytest.raises(InputError, match="face-skin pixels"):
        complete_texture(bare, scene.rig, scene.truth, CONFIG, scene.template_texture)


def test_a_rig_without_template_gets_the_skin_colour_flat(scene):
    out = complete_texture(scene.photo, scene.rig, scene.truth, CONFIG, None)
    L = out.layers
    unseen = (L.confidence == 0) & ~out.mirror_used & (L.region == 1)  # scalp texels nobody saw
    assert int(unseen.sum()) > 100 and out.template_skin is None
    lab = srgb_to_lab(out.fill[unseen])
    assert torch.allclose(lab, torch.tensor(out.skin.mean, dtype=torch.float64).expand_as(lab), atol=0.5)
