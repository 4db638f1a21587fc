"""Stage: the completed texture of a one-photo fit: the photo where it sees the head, the mirrored side, then the
rig's template albedo re-coloured to the subject's skin, blended without seams.

Sources (per texel of the rig's atlas, ``rig_texture.bake_rig_layers``, one bake, no second baker): *seen*, the
photo projected with visibility, view-angle weights and the person-minus-hair mask (hair pixels belong to the hair
layer, not the skin under it); *mirror*, the seen colour at the texel mirrored x -> -x on the rig's surface, used
where its confidence reaches ``mirror_confidence``; *template*, the rig's template albedo at its own UVs
re-coloured to the subject's skin on the skin regions (face skin, scalp, ears, neck). Eyes, mouth interior and
teeth keep the template (the rig's parts). A rig without a template albedo (ICT-FaceKit) gets a flat fill of the
skin's mean colour on the skin regions.

Re-colouring (Reinhard's colour transfer in CIELAB, D65): per channel, l -> (l - mu_t) / sd_t * sd_s + mu_s, with
(mu_t, sd_t) the template's texels of one skin region (each region from its own statistics: a template whose scalp
is painted with hair gets a skin-coloured scalp, not a black one) and (mu_s, sd_s) the photo's face-skin pixels
(``face_mask`` inside the person). Lab separates lightness from the two opponent colour axes, so one affine map
per channel moves the skin tone without the channel cross-talk an RGB transfer has.

Blend (gradient domain, screened Poisson): the unknown texels f (confidence < 1) solve, over 4-neighbour pairs
(p, q) of covered texels, sum_q (f_p - f_q) + lam f_p = sum_q g_pq + lam s_p, where texels seen with full
confidence are fixed (Dirichlet), g_pq is the difference of the fill source (the mirror's where both texels take
the mirror, else the template's: a switch of source is no edge) and s_p the texel's fill colour; the small
``screen_weight`` lam anchors charts no seen texel touches to their source colours. So the fill keeps its own
detail (its gradients) and meets the photo's colours at the boundary with no step; partly seen texels blend seen
and solved colours by confidence. Why not ``cv2.seamlessClone``: it clones one rectangle into one image, while
here the domain is the atlas's charts (no coupling across chart borders, the gutter outside), with two sources
and a seen region of any shape; the sparse system (scipy's direct solver) is exact for that domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from headforge.errors import InputError
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.photo_types import AlignedPhoto
from headforge.stages.rig_params import RigParams, world_vertices
from headforge.stages.rig_texture import BakeLayers, RigTexture, RigTextureConfig, bake_rig_layers, layers_texture
from headforge.validation import Checked, Count, Fraction, Positive

__all__ = ["ColourStats", "CompletedTexture", "TextureCompleteConfig", "colour_stats", "complete_texture",
           "lab_to_srgb", "naive_paste", "poisson_fill", "recolour_lab", "srgb_to_lab"]

STAGE = "texture completion"
SKIN = (Region.FACE_SKIN, Region.SCALP, Region.EARS, Region.NECK)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)  # D65
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)


@dataclass(frozen=True)
class TextureCompleteConfig(Checked):
    # one view: a texel is fully seen within ~50 degrees of the camera (cos^4 >= 0.15), not 33 (the multi-view 0.5)
    bake: RigTextureConfig = field(default_factory=lambda: RigTextureConfig(size=512, full_weight=0.15))
    mirror_confidence: Fraction = 0.5  # a mirror texel is a fill source when its confidence reaches this
    screen_weight: Positive = 1e-3  # lam of the screened Poisson equation (per unit of the 4-neighbour Laplacian)
    min_skin_pixels: Count = 50  # fewer visible face-skin pixels: the photo cannot tell the skin colour


@dataclass(frozen=True)
class ColourStats:
    mean: tuple[float, float, float]  # CIELAB L*, a*, b*
    std: tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class CompletedTexture:
    texture: RigTexture
    skin: ColourStats  # the photo's face skin (the re-colouring target)
    template_skin: ColourStats | None  # the template's face-skin texels before re-colouring (None: flat fill)
    layers: BakeLayers  # the bake's sources
    fill: Tensor  # [M, 3] float64 the per-texel fill source (mirror or re-coloured template), before blending
    mirror_used: Tensor  # [M] bool


# ------------------------------------------------------------------------------------------ colour
def srgb_to_lab(rgb: Tensor) -> Tensor:  # [..., 3] sRGB in [0, 1] -> [..., 3] CIELAB (D65), float64
    c = rgb.double().clamp(0, 1)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE
    d = 6 / 29
    f = torch.where(xyz > d ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: Tensor) -> Tensor:  # [..., 3] CIELAB -> [..., 3] sRGB clamped to [0, 1], float64
    lab = lab.double()
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    d = 6 / 29
    xyz = torch.where(f > d, f ** 3, 3 * d * d * (f - 4 / 29)) * _WHITE
    lin = (xyz @ torch.linalg.inv(_RGB_TO_XYZ).T).clamp(0, 1)
    return torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055).clamp(0, 1)


def colour_stats(rgb: Tensor) -> ColourStats:  # [P, 3] sRGB -> per-channel Lab mean and std
    lab = srgb_to_lab(rgb)
    m, s = lab.mean(0), lab.std(0, correction=0)
    return ColourStats(tuple(m.tolist()), tuple(s.tolist()))


def recolour_lab(lab: Tensor, source: ColourStats, target: ColourStats) -> Tensor:
    """Reinhard's transfer: [..., 3] Lab whose statistics are ``source`` -> ones whose statistics are ``target``."""
    ms, ss = torch.tensor(source.mean, dtype=torch.float64), torch.tensor(source.std, dtype=torch.float64)
    mt, st = torch.tensor(target.mean, dtype=torch.float64), torch.tensor(target.std, dtype=torch.float64)
    return (lab.double() - ms) / ss.clamp_min(1e-6) * st + mt


# ------------------------------------------------------------------------------------------ blend
def _neighbour_pairs(size: int, texel: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour pairs (each once) of covered texels -> positions (a [E], b [E]) into ``texel``."""
    index = np.full(size * size, -1, np.int64)
    index[texel.numpy()] = np.arange(len(texel))
    grid = index.reshape(size, size)
    a = np.concatenate([grid[:, :-1].ravel(), grid[:-1, :].ravel()])
    b = np.concatenate([grid[:, 1:].ravel(), grid[1:, :].ravel()])
    keep = (a >= 0) & (b >= 0)
    return a[keep], b[keep]


def screened_poisson(a: np.ndarray, b: np.ndarray, fixed: np.ndarray, known: np.ndarray, diff: np.ndarray | None,
                     anchor: np.ndarray, screen: float) -> np.ndarray:
    """Screened Poisson on a graph -> f [N, C] float64. Edges (a [E], b [E]) each once; nodes with ``fixed`` [N]
    keep ``known`` [N, C]; the others solve sum over their edges of (f_p - f_q - g_pq) + screen (f_p - anchor_p) = 0,
    where g_ab = ``diff`` [E, C] (f_a - f_b should equal it; None: 0, the screened harmonic case) and g_ba = -g_ab."""
    out = known.astype(np.float64, copy=True)
    free = np.flatnonzero(~fixed)
    if len(free) == 0:
        return out
    pos = np.full(len(fixed), -1, np.int64)
    pos[free] = np.arange(len(free))
    n = len(free)
    diag = np.full(n, screen)
    rhs = screen * anchor[free].astype(np.float64)
    rows, cols = [], []
    for p, q, sign in ((a, b, 1.0), (b, a, -1.0)):  # the equation of p gets (f_p - f_q) = sign * g
        fp = pos[p] >= 0
        np.add.at(diag, pos[p[fp]], 1.0)
        if diff is not None:
            np.add.at(rhs, pos[p[fp]], sign * diff[fp])
        coupled = fp & (pos[q] >= 0)
        rows.append(pos[p[coupled]])
        cols.append(pos[q[coupled]])
        known_q = fp & (pos[q] < 0)
        np.add.at(rhs, pos[p[known_q]], out[q[known_q]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    A = sp.csc_matrix((np.concatenate([diag, -np.ones(len(r))]), (np.concatenate([np.arange(n), r]),
                                                                   np.concatenate([np.arange(n), c]))), (n, n))
    out[free] = spla.splu(A).solve(rhs)
    return out


def poisson_fill(size: int, texel: Tensor, fixed: Tensor, known: Tensor, guidance: Tensor, use_first: Tensor,
                 second: Tensor, anchor: Tensor, screen: float) -> Tensor:
    """Screened Poisson on the covered texels (``texel`` [M] row-major in [size, size]) -> f [M, 3] float64.
    fixed [M] bool with values known [M, 3] (Dirichlet); the guidance difference of a pair is that of
    ``guidance`` [M, 3] where both texels have ``use_first`` [M], else that of ``second`` [M, 3]; anchor [M, 3]
    is what the screening term pulls free texels toward. See the module doc."""
    a, b = _neighbour_pairs(size, texel)
    first, g1, g2 = use_first.numpy(), guidance.double().numpy(), second.double().numpy()
    both = (first[a] & first[b])[:, None]
    g = np.where(both, g1[a] - g1[b], g2[a] - g2[b])  # [E, 3]: f_a - f_b should equal this
    return torch.from_numpy(screened_poisson(a, b, fixed.numpy(), known.double().numpy(), g,
                                             anchor.double().numpy(), screen))


# ------------------------------------------------------------------------------------------ the stage
def _skin_texels(rig: HeadRig, layers: BakeLayers, regions: tuple[Region, ...]) -> Tensor:  # [M] bool
    codes = [i for i, r in enumerate(rig.region_names) if r in regions]
    return torch.isin(layers.region, torch.tensor(codes, dtype=torch.long))


def complete_texture(photo: AlignedPhoto, rig: HeadRig, params: RigParams, config: TextureCompleteConfig | None = None,
                     template_texture: Tensor | None = None) -> CompletedTexture:
    """The completed texture of ``rig`` fitted as ``params`` (one frame, world = the photo camera's world) from the
    aligned photo (see the module doc). ``template_texture`` [H, W, 3] in the rig's own UVs, or None."""
    config = config or TextureCompleteConfig()
    if params.num_frames != 1:
        raise ValueError(f"complete_texture takes one frame (got {params.num_frames})")
    skin_px = photo.face_mask & (photo.person_mask > 0.5)
    if int(skin_px.sum()) < config.min_skin_pixels:
        raise InputError(f"{STAGE}: only {int(skin_px.sum())} face-skin pixels are visible in the photo (at least "
                         f"{config.min_skin_pixels} needed to tell the skin colour)", path=photo.source,
                         fix="use a photo where the face is visible and not covered")
    skin = colour_stats(photo.image[skin_px])
    mask = photo.person_mask.float() * (~photo.hair_mask).float()
    verts = world_vertices(rig, params)[0]
    layers = bake_rig_layers(rig, verts, photo.camera, photo.image[None].float(), mask[None], config.bake,
                             template_texture)
    is_skin = _skin_texels(rig, layers, SKIN)
    face = _skin_texels(rig, layers, (Region.FACE_SKIN,))
    template = layers.template.clone()
    template_skin = None
    if template_texture is not None and bool(face.any()):
        template_skin = colour_stats(layers.template[face])
        for region in SKIN:  # each skin region from its own statistics (a scalp painted with hair becomes skin)
            texels = _skin_texels(rig, layers, (region,))
            if int(texels.sum()) > 1:
                own = colour_stats(layers.template[texels])
                template[texels] = lab_to_srgb(recolour_lab(srgb_to_lab(layers.template[texels]), own, skin))
    else:  # no albedo: the skin's mean colour, flat
        template[is_skin] = lab_to_srgb(torch.tensor(skin.mean, dtype=torch.float64))
    mirror_used = layers.mirror_confidence >= config.mirror_confidence
    fill = torch.where(mirror_used[:, None], layers.mirror, template)
    conf = layers.confidence
    fixed = conf >= 1
    f = poisson_fill(layers.size, layers.texel, fixed, torch.where(fixed[:, None], layers.seen, fill), layers.mirror,
                     mirror_used, template, fill, config.screen_weight)
    out = conf[:, None] * layers.seen + (1 - conf[:, None]) * f
    texture = layers_texture(layers, out.clamp(0, 1), config.bake.gutter_px, mirror_used)
    return CompletedTexture(texture, skin, template_skin, layers, fill, mirror_used)


def naive_paste(completed: CompletedTexture) -> Tensor:
    """The same sources pasted without the gradient-domain blend: conf * seen + (1 - conf) * fill -> [S, S, 3]
    (0 outside the charts); the reference the seam test compares against."""
    L = completed.layers
    out = L.confidence[:, None] * L.seen + (1 - L.confidence[:, None]) * completed.fill
    S = L.size
    return torch.zeros(S * S, 3, dtype=torch.float64).index_copy(0, L.texel, out.clamp(0, 1)).reshape(S, S, 3)
