"""The terms of the dense rig fit (``rig_refine``): the capture at working resolution, the render of the rig
with per-vertex colours, the silhouette / photometric / landmark terms, the closed-form colour estimate, the
uniform Laplacian and the per-view scores. See ``rig_refine`` for what each term means and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.errors import CaptureError, HeadforgeError, InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points, world_to_clip
from headforge.metrics import psnr
from headforge.renderers.mesh_raster import Rasterization, rasterize
from headforge.renderers.mesh_shading import antialias, interpolate
from headforge.representations.rig.deform import RigPose, deform, landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.rig_params import RigParams
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, Positive

STAGE_A = "rig refine (silhouette + photometric stage)"
STAGE_B = "rig refine (offset stage)"
SKIN = (Region.FACE_SKIN, Region.SCALP, Region.EARS, Region.NECK)
FACE = (Region.FACE_SKIN, Region.EARS, Region.EYES, Region.MOUTH_INTERIOR, Region.TEETH)


@dataclass(frozen=True)
class RefineConfig(Checked):
    resolution: Annotated[int, at.Ge(32), at.Le(1024)] = 128  # working long side in pixels
    steps: Annotated[int, at.Ge(0), at.Le(10000)] = 40  # stage a Adam steps
    offset_steps: Annotated[int, at.Ge(0), at.Le(10000)] = 0  # stage b Adam steps (0: no offsets)
    fix_identity: bool = False  # keep the start's identity (a sequence's frames after the first)
    views_per_step: Count = 8
    seed: NonNegativeInt = 0  # order in which views are drawn per step
    # loss weights
    silhouette_weight: NonNegative = 1.0
    fill_weight: NonNegative = 0.5  # (1 - A) M inside the face band
    fill_band_px: Annotated[int, at.Ge(0), at.Le(64)] = 4
    photometric_weight: NonNegative = 1.0
    landmark_weight: NonNegative = 0.1  # per mean Huber px^2 (working resolution)
    huber_px: Positive = 2.0
    identity_weight: NonNegative = 1e-4
    expression_weight: NonNegative = 1e-4
    pose_weight: NonNegative = 1e-3
    laplacian_weight: NonNegative = 100.0  # mean |L o|^2 of offsets in head sizes
    offset_weight: NonNegative = 0.1  # mean |o|^2 in head sizes
    scalp_prior_scale: Fraction = 0.2  # the scalp's magnitude prior relative to offset_weight
    scalp_max_offset: Annotated[float, at.Ge(0), at.Le(0.2)] = 0.01  # head sizes (~2.5 mm)
    # Adam step sizes (per step, cosine-decayed to 10 %)
    lr_scale: Positive = 2e-3  # log scale
    lr_rotation: Positive = 4e-3  # radians (similarity and joints)
    lr_translation: Positive = 4e-3  # head sizes
    lr_identity: Positive = 0.1
    lr_expression: Positive = 0.04
    lr_offsets: Positive = 5e-4  # head sizes
    rendered_regions: tuple[Region, ...] = (*SKIN, Region.EYES, Region.MOUTH_INTERIOR, Region.TEETH)
    face_regions: tuple[Region, ...] = FACE
    offset_regions: tuple[Region, ...] = SKIN


@dataclass(frozen=True, eq=False)
class Scene:
    """The capture at working resolution and what the loss needs of the rig."""

    cameras: Cameras  # float32, resized
    images: Tensor  # [N, h, w, 3]
    masks: Tensor  # [N, h, w]
    faces: Tensor  # [Fr, 3] rendered triangles
    face_vertex: Tensor  # [V] float 1 on face regions
    near: float
    far: float
    height: float  # head height in the world (units of the capture)
    lm_cameras: Cameras | None  # full-resolution cameras for landmarks
    lm_points: Tensor | None  # [N, L, 2]
    lm_valid: Tensor | None  # [N, L] bool
    lm_set: LandmarkSet | None
    px_scale: float  # working px per original px


@dataclass
class Colors:  # running per-vertex colour estimate
    acc: Tensor  # [V, 3]
    weight: Tensor  # [V]

    def values(self) -> Tensor:
        return torch.where(self.weight[:, None] > 1e-8, self.acc / self.weight[:, None].clamp_min(1e-8),
                           torch.full_like(self.acc, 0.5))


def region_mask(rig: HeadRig, regions: tuple[Region, ...]) -> Tensor:  # [V] bool
    m = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for r in regions:
        if r in rig.region_names:
            m |= rig.region_mask(r)
    return m


def prepare_scene(rig: HeadRig, cameras: Cameras, images: Tensor, masks: Tensor, params: RigParams,
                  config: RefineConfig, landmark_obs=None) -> Scene:
    N = len(cameras)
    if images.ndim != 4 or images.shape[0] != N or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise CaptureError(f"{STAGE_A}: images {list(images.shape)} and masks {list(masks.shape)} must be "
                           f"[N, H, W, 3] and [N, H, W] for the {N} cameras", fix="pass one image and mask per view")
    for name, t in (("images", images), ("masks", masks)):
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{STAGE_A}: {name} hold non-finite values", fix=f"check the capture's {name}")
    if cameras.has_distortion():
        raise CaptureError(f"{STAGE_A}: the cameras have lens distortion; the rasterizer is pinhole",
                           fix="undistort the images first (headforge's capture readers can)")
    W, H = cameras.same_size()
    if (W, H) != (images.shape[2], images.shape[1]):
        raise CaptureError(f"{STAGE_A}: images are {images.shape[2]}x{images.shape[1]} but the cameras "
                           f"{W}x{H}", fix="resize the cameras with the images")
    if params.num_frames != 1:
        raise ValueError(f"refine_rig fits one frame (got {params.num_frames}); refine frames one by one")
    if not params.is_finite():
        raise HeadforgeError(f"{STAGE_A}: the starting parameters are not finite",
                             fix="rerun the landmark stage; check the landmarks and cameras")
    f = min(1.0, config.resolution / max(W, H))
    w, h = max(8, round(W * f)), max(8, round(H * f))
    cams = cameras.resize(w, h).to(dtype=torch.float32)
    img = F.interpolate(images.float().permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
    msk = F.interpolate(masks.float()[:, None], size=(h, w), mode="area")[:, 0]
    rendered = region_mask(rig, config.rendered_regions)
    faces = rig.faces[rendered[rig.faces].all(1)]
    if len(faces) == 0:
        raise HeadforgeError(f"{STAGE_A}: the rig has none of the rendered regions {config.rendered_regions}",
                             fix=f"choose rendered_regions among {[str(r) for r in rig.region_names]}")
    verts = params.similarity.apply(rig.template.double())
    centre = verts.mean(0)
    height = float((verts.max(0).values - verts.min(0).values).max())  # the head's largest extent
    dist = (cameras.centers().double() - centre).norm(dim=-1)
    near, far = max(1e-4, float(dist.min()) - 2 * height), float(dist.max()) + 2 * height
    lm = (None,) * 4
    if landmark_obs is not None:
        pts, valid, kind = landmark_obs
        kind = LandmarkSet(kind)
        if kind not in rig.landmarks:
            raise HeadforgeError(f"{STAGE_A}: the rig has no {kind} landmark embedding",
                                 fix=f"pass landmarks of a set it embeds: {[str(k) for k in rig.landmarks]}")
        ok = valid.bool() & torch.isfinite(pts).all(-1)
        lm = (cameras.to(dtype=torch.float64), torch.where(ok[..., None], pts.double(), 0.0), ok, kind)
    return Scene(cams, img, msk, faces, region_mask(rig, config.face_regions).float(), near, far, height,
                 *lm, w / W)


# ------------------------------------------------------------------------------------------ rendering
@dataclass(frozen=True, eq=False)
class Render:
    alpha: Tensor  # [B, h, w] antialiased coverage
    color: Tensor  # [B, h, w, 3] premultiplied
    face: Tensor  # [B, h, w] face-region coverage
    rast: Rasterization


def render(scene: Scene, world: Tensor, colors: Tensor, views: list[int]) -> Render:
    """world [V, 3], colors [V, 3] -> the views' antialiased colour, alpha and face-region coverage."""
    cams = scene.cameras[views]
    h, w = scene.images.shape[1:3]
    clip = world_to_clip(cams, world.to(cams.fx), scene.near, scene.far)  # [B, V, 4] in the cameras' dtype
    rast = rasterize(clip, scene.faces, (h, w))
    cover = rast.mask.to(clip)[..., None]
    attrs = interpolate(torch.cat([colors.to(clip), scene.face_vertex.to(clip)[:, None]], -1), rast, scene.faces)
    rgba = antialias(torch.cat([attrs * cover, cover], -1), rast, clip, scene.faces)
    return Render(rgba[..., 4].clamp(0, 1), rgba[..., :3], rgba[..., 3].clamp(0, 1), rast)


def face_band(face: Tensor, px: int) -> Tensor:  # [B, h, w] -> [B, h, w] float {0, 1}
    band = (face.detach() > 0.5).float()[:, None]
    if px > 0:
        band = F.max_pool2d(band, 2 * px + 1, stride=1, padding=px)
    return band[:, 0]


def scatter_colors(scene: Scene, out: Render, views: list[int], num_vertices: int) -> tuple[Tensor, Tensor]:
    """Closed-form colour evidence: each covered pixel's image colour onto its corners by barycentrics.
    -> sum [V, 3], weight [V] (pixels inside the mask only)."""
    rast = out.rast
    ok = rast.mask & (scene.masks[views] > 0.5)
    corners = scene.faces[rast.triangle_id[ok]]  # [P, 3]
    bary = rast.bary.detach()[ok].float()  # [P, 3]
    rgb = scene.images[views][ok].float()  # [P, 3]
    acc = torch.zeros(num_vertices, 3).index_add_(0, corners.reshape(-1), (bary[..., None] * rgb[:, None]).reshape(
        -1, 3))
    wgt = torch.zeros(num_vertices).index_add_(0, corners.reshape(-1), bary.reshape(-1))
    return acc, wgt


def huber(x: Tensor, delta: float) -> Tensor:
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x * x, delta * (a - 0.5 * delta))


def uniform_laplacian(faces: Tensor, num_vertices: int) -> tuple[Tensor, Tensor]:
    """Directed edges [E, 2] (both directions) and degrees [V] of the mesh: L o = o - mean of the neighbours."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.unique(torch.sort(e, dim=1).values, dim=0)
    e = torch.cat([e, e.flip(1)])
    return e, torch.zeros(num_vertices).index_add_(0, e[:, 0], torch.ones(len(e)))


def apply_laplacian(lap: tuple[Tensor, Tensor], o: Tensor) -> Tensor:  # o [V, 3] -> [V, 3]
    e, deg = lap
    mean = torch.zeros_like(o).index_add_(0, e[:, 0], o[e[:, 1]]) / deg.to(o).clamp_min(1)[:, None]
    return torch.where(deg[:, None] > 0, o - mean, torch.zeros_like(o))


@dataclass(frozen=True, eq=False)
class LossTerms:  # scalar tensors (differentiable)
    silhouette: Tensor
    photometric: Tensor
    landmark: Tensor  # 0 without landmarks


def loss_terms(rig: HeadRig, scene: Scene, params: RigParams, colors: Tensor, views: list[int],
               config: RefineConfig) -> tuple[LossTerms, Render, Tensor]:
    """The data terms for ``views`` -> (terms, render, world vertices [V, 3])."""
    dtype = rig.template.dtype
    ident = params.identity.to(dtype)[None] if rig.num_identity else None
    pose = RigPose(params.pose.rotations.to(dtype), params.pose.translation.to(dtype))
    offsets = None if params.offsets is None else params.offsets.to(dtype)
    local = deform(rig, ident, params.expression.to(dtype), pose, offsets=offsets)  # [1, V, 3]
    world = params.similarity.apply(local.double())[0]
    out = render(scene, world, colors, views)
    M = scene.masks[views]
    band = face_band(out.face, config.fill_band_px)
    area = M.sum().clamp_min(1.0)  # a constant of the data (a detached render area would bias the gradient)
    sil = ((out.alpha * (1 - M)).sum() + config.fill_weight * ((1 - out.alpha) * M * band).sum()) / area
    w = (out.face.detach() > 0.5).float() * (M > 0.5).float()
    diff = out.color - scene.images[views] * out.alpha[..., None]
    photo = (w[..., None] * torch.sqrt(diff * diff + 1e-6)).sum() / (3 * w.sum().clamp_min(1.0))
    lm = world.new_zeros(())
    if scene.lm_set is not None:
        pts = params.similarity.apply(landmarks(rig, local.double(), scene.lm_set)[0])  # [L, 3]
        uv, _ = project_points(scene.lm_cameras, pts)
        err = (uv - scene.lm_points).norm(dim=-1) * scene.px_scale  # [N, L] working px
        lm = (huber(err, config.huber_px) * scene.lm_valid).sum() / scene.lm_valid.sum().clamp_min(1)
    return LossTerms(sil, photo, lm), out, world




def evaluate(rig: HeadRig, scene: Scene, params: RigParams, config: RefineConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Per-view silhouette IoU (where the loss compares: rendered or face band) and face-region PSNR of the
    render with per-vertex colours estimated from every view -> (iou [N], psnr [N], colours [V, 3])."""
    N, V = len(scene.cameras), rig.num_vertices
    chunks = [list(range(s, min(N, s + config.views_per_step))) for s in range(0, N, config.views_per_step)]
    colors = Colors(torch.zeros(V, 3), torch.zeros(V))
    grey = torch.full((V, 3), 0.5)
    for views in chunks:
        _, out, _ = loss_terms(rig, scene, params, grey, views, config)
        a, w = scatter_colors(scene, out, views, V)
        colors.acc += a
        colors.weight += w
    vc = colors.values()
    ious, scores = [], []
    for views in chunks:
        _, out, _ = loss_terms(rig, scene, params, vc, views, config)
        M = scene.masks[views] > 0.5
        A = out.alpha > 0.5
        region = A | (face_band(out.face, config.fill_band_px) > 0)
        inter = (A & M & region).flatten(1).sum(1).double()
        union = ((A | M) & region).flatten(1).sum(1).double()
        ious.append(inter / union.clamp_min(1))
        rgb = out.color / out.alpha[..., None].clamp_min(1e-6)
        scores.append(psnr(rgb, scene.images[views], ((out.face > 0.5) & M).float()))
    return torch.cat(ious), torch.cat(scores).double(), vc
