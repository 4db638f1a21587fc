"""Dense stages of a rig fit: silhouette + photometric refinement, then optional per-vertex offsets.

``refine_rig`` starts from the landmark stage's ``RigParams`` (one frame) and optimises, by Adam through the
differentiable rasterizer (antialiased alpha carries silhouette gradients):

Stage a: the similarity (log scale, a rotation increment, translation), identity, the rig's present ARKit rows
(projected onto [0, 1]) and the non-root joint rotations on
- silhouette: rendered alpha A vs the capture's mask M. The mask holds hair, neck and shoulders the rig does not
  have, so the term is one-sided where the rig cannot explain the mask: ``A (1 - M)`` everywhere (the skin lies
  inside the person, hair included) plus ``fill_weight (1 - A) M`` only inside the *face band*: the rendered face
  region (face skin, ears, eyes, mouth, teeth; not scalp, not neck) dilated by ``fill_band_px``. Hair over the
  scalp and the body below the neck never pull the rig outward. Normalised by the mask area.
- photometric: the render with per-vertex colours vs the image on the face region inside the mask (premultiplied,
  Charbonnier L1). The colours are re-estimated in closed form every step: each rendered pixel's image colour is
  scattered onto its triangle's corners with the barycentric weights (a running, decaying average over the
  views seen; initialised by one pass over every view).
- landmarks (when given): Huber on the reprojection error (working-resolution pixels), so the fit cannot drift.
- priors: weight * |x|^2 on identity, expression and joint rotations.
Stage b (``offset_steps`` > 0): adds per-vertex offsets [V, 3] in the rig frame on ``offset_regions`` (eyes,
teeth and the mouth interior get none) with a uniform-Laplacian smoothness prior and a magnitude prior (weaker on
the scalp by ``scalp_prior_scale``); scalp offsets are also capped at ``scalp_max_offset`` (head heights) after
every step, and the scalp is never in the fill band, so hair volume cannot inflate it.

Each step renders ``views_per_step`` views (a seeded permutation, cycled) at ``resolution`` px (long side).
Conventions: cameras ``Cameras`` (OpenCV world-to-camera, pinhole; distortion is refused), images [N, H, W, 3]
sRGB in [0, 1], masks [N, H, W] in [0, 1]; world = s R x_rig + t (``Similarity``).
"""

from __future__ import annotations

import math
import time
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
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.deform import RigPose, axis_angle_to_matrix, deform, landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.rig_params import RigParams, Similarity
from headforge.validation import Checked, Count, Fraction, NonNegative, Positive

STAGE_A = "rig refine (silhouette + photometric stage)"
STAGE_B = "rig refine (offset stage)"
SKIN = (Region.FACE_SKIN, Region.SCALP, Region.EARS, Region.NECK)
FACE = (Region.FACE_SKIN, Region.EARS, Region.EYES, Region.MOUTH_INTERIOR, Region.TEETH)


@dataclass(frozen=True)
class RefineConfig(Checked):
    resolution: Annotated[int, at.Ge(32), at.Le(1024)] = 128  # working long side in pixels
    steps: Annotated[int, at.Ge(0), at.Le(10000)] = 40  # stage a Adam steps
    offset_steps: Annotated[int, at.Ge(0), at.Le(10000)] = 0  # stage b Adam steps (0: no offsets)
    views_per_step: Count = 8
    seed: int = 0
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
    laplacian_weight: NonNegative = 100.0  # mean |L o|^2 of offsets in head heights
    offset_weight: NonNegative = 0.1  # mean |o|^2 in head heights
    scalp_prior_scale: Fraction = 0.2  # the scalp's magnitude prior relative to offset_weight
    scalp_max_offset: Annotated[float, at.Ge(0), at.Le(0.2)] = 0.01  # head heights (~2.5 mm)
    # Adam step sizes (per step, cosine-decayed to 10 %)
    lr_scale: Positive = 2e-3  # log scale
    lr_rotation: Positive = 4e-3  # radians (similarity and joints)
    lr_translation: Positive = 4e-3  # head heights
    lr_identity: Positive = 0.1
    lr_expression: Positive = 0.04
    lr_offsets: Positive = 5e-4  # head heights
    rendered_regions: tuple[Region, ...] = (*SKIN, Region.EYES, Region.MOUTH_INTERIOR, Region.TEETH)
    face_regions: tuple[Region, ...] = FACE
    offset_regions: tuple[Region, ...] = SKIN


@dataclass(frozen=True)
class RefineStep:
    stage: str  # "a" or "b"
    step: int
    total: float
    silhouette: float
    photometric: float
    landmark: float
    prior: float


@dataclass(frozen=True)
class RefineSeconds:
    setup: float
    silhouette_photometric: float
    offsets: float
    evaluation: float


@dataclass(frozen=True, eq=False)
class RefineResult:
    params: RigParams  # refined (offsets set when stage b ran)
    silhouette_iou: Tensor  # [N] rendered vs mask where the loss compares them (render or face band)
    photometric_psnr: Tensor  # [N] dB on the face region inside the mask, per-vertex colours
    vertex_colors: Tensor  # [V, 3] sRGB estimated from every view
    history: tuple[RefineStep, ...]
    seconds: RefineSeconds
    resolution: tuple[int, int]  # working (width, height)


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


# ------------------------------------------------------------------------------------------ the fit
@dataclass
class Unknowns:  # the optimised tensors (float64 leaves) and what stays fixed
    log_scale: Tensor
    d_rotation: Tensor  # [3] axis-angle increment on R0
    translation: Tensor  # [3] head heights relative to t0
    identity: Tensor  # [K]
    expression: Tensor  # [P] the present rows
    joints: Tensor  # [J - 1, 3]
    offsets: Tensor | None  # [V] head heights along ``normals`` (rig frame)
    normals: Tensor | None = None  # [V, 3] unit normals of the shaped rig when stage b started


def _unknowns(rig: HeadRig, params: RigParams) -> Unknowns:
    rows = rig.expression_present.nonzero().squeeze(1)
    leaf = lambda t: t.detach().double().clone().requires_grad_(True)  # noqa: E731
    return Unknowns(leaf(torch.log(params.similarity.scale.double())), leaf(torch.zeros(3)), leaf(torch.zeros(3)),
                    leaf(params.identity), leaf(params.expression[0, rows]), leaf(params.pose.rotations[0, 1:]),
                    None)


def to_params(rig: HeadRig, start: RigParams, u: Unknowns, height: float, rig_height: float) -> RigParams:
    rows = rig.expression_present.nonzero().squeeze(1)
    sim = Similarity(torch.exp(u.log_scale), axis_angle_to_matrix(u.d_rotation) @ start.similarity.rotation.double(),
                     start.similarity.translation.double() + u.translation * height)
    expression = torch.zeros_like(start.expression, dtype=torch.float64).index_copy(1, rows, u.expression[None])
    rot = torch.cat([torch.zeros(1, 3, dtype=torch.float64), u.joints])[None]
    offsets = None if u.offsets is None else u.offsets[:, None] * u.normals * rig_height
    return RigParams(sim, u.identity, expression, RigPose(rot, torch.zeros(1, 3, dtype=torch.float64)), offsets)


def loss_terms(rig: HeadRig, scene: Scene, params: RigParams, colors: Tensor, views: list[int],
               config: RefineConfig) -> tuple[dict[str, Tensor], Render, Tensor]:
    """The data terms for ``views`` -> ({silhouette, photometric, landmark}, render, world vertices [V, 3])."""
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
    return {"silhouette": sil, "photometric": photo, "landmark": lm}, out, world


def _prior(u: Unknowns, config: RefineConfig, lap: tuple[Tensor, Tensor], offset_w: Tensor | None) -> Tensor:
    p = (config.identity_weight * (u.identity ** 2).sum() + config.expression_weight * (u.expression ** 2).sum()
         + config.pose_weight * (u.joints ** 2).sum())
    if u.offsets is not None:
        o = (u.offsets[:, None] * u.normals).float()
        Lo = apply_laplacian(lap, o)
        p = p + config.laplacian_weight * (Lo ** 2).sum(-1).mean()
        p = p + config.offset_weight * (offset_w * (o ** 2).sum(-1)).mean()
    return p


def refine_rig(rig: HeadRig, cameras: Cameras, images: Tensor, masks: Tensor, params: RigParams,
               config: RefineConfig | None = None,
               landmarks: tuple[Tensor, Tensor, LandmarkSet] | None = None) -> RefineResult:
    """Refine a landmark fit on silhouettes and colours (stage a), then offsets (stage b). See the module doc.
    ``landmarks``: (points2d [N, L, 2] original pixels, valid [N, L], set) or None."""
    config = config or RefineConfig()
    t0 = time.perf_counter()
    scene = prepare_scene(rig, cameras, images, masks, params, config, landmarks)
    N, V = len(cameras), rig.num_vertices
    rig_height = float((rig.template.max(0).values - rig.template.min(0).values).max())
    u = _unknowns(rig, params)
    gen = torch.Generator().manual_seed(config.seed)
    order: list[int] = []

    def next_views() -> list[int]:
        nonlocal order
        if len(order) < min(config.views_per_step, N):
            order += torch.randperm(N, generator=gen).tolist()
        take, order = order[:config.views_per_step], order[config.views_per_step:]
        return sorted(set(take))

    colors = Colors(torch.zeros(V, 3), torch.zeros(V))
    with torch.no_grad():  # first colour estimate from every view
        world = to_params(rig, params, u, scene.height, rig_height)
        for s in range(0, N, config.views_per_step):
            views = list(range(s, min(N, s + config.views_per_step)))
            _, out, _ = loss_terms(rig, scene, world, colors.values(), views, config)
            a, w = scatter_colors(scene, out, views, V)
            colors.acc += a
            colors.weight += w
    decay = 0.5 ** (config.views_per_step / N)
    t_setup = time.perf_counter()
    history: list[RefineStep] = []
    skin = region_mask(rig, (Region.SCALP,))
    allowed = region_mask(rig, config.offset_regions).float()[:, None]
    lap = uniform_laplacian(rig.faces, V)
    offset_w = torch.where(skin, config.scalp_prior_scale, 1.0).float()
    cap = config.scalp_max_offset

    def run(stage: str, steps: int, label: str) -> None:
        groups = [([u.log_scale], config.lr_scale), ([u.d_rotation, u.joints], config.lr_rotation),
                  ([u.translation], config.lr_translation), ([u.identity], config.lr_identity),
                  ([u.expression], config.lr_expression)]
        if stage == "b":  # the offsets alone: the global parameters were settled by stage a
            groups = [([u.offsets], config.lr_offsets)]
        groups = [(p, lr) for p, lr in groups if all(t.numel() for t in p)]
        opt = torch.optim.Adam([{"params": p, "lr": lr, "base": lr} for p, lr in groups])
        for i in range(steps):
            for g in opt.param_groups:
                g["lr"] = g["base"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / max(1, steps))))
            views = next_views()
            if u.offsets is not None:
                u_eff = Unknowns(u.log_scale, u.d_rotation, u.translation, u.identity, u.expression, u.joints,
                                 u.offsets * allowed[:, 0], u.normals)
            else:
                u_eff = u
            p = to_params(rig, params, u_eff, scene.height, rig_height)
            terms, out, _ = loss_terms(rig, scene, p, colors.values(), views, config)
            prior = _prior(u_eff, config, lap, offset_w)
            total = (config.silhouette_weight * terms["silhouette"] + config.photometric_weight * terms["photometric"]
                     + config.landmark_weight * terms["landmark"] + prior)
            if not bool(torch.isfinite(total)):
                raise HeadforgeError(f"{label}: the loss became non-finite at step {i}",
                                     fix="lower the learning rates (lr_*) or raise the prior weights; check the "
                                         "cameras and masks")
            opt.zero_grad()
            total.backward()
            opt.step()
            with torch.no_grad():
                u.expression.clamp_(0, 1)
                if u.offsets is not None:
                    u.offsets[skin] = u.offsets[skin].clamp(-cap, cap)
                a, w = scatter_colors(scene, out, views, V)
                colors.acc.mul_(decay).add_(a)
                colors.weight.mul_(decay).add_(w)
            history.append(RefineStep(stage, i, float(total.detach()), float(terms["silhouette"].detach()),
                                      float(terms["photometric"].detach()), float(terms["landmark"].detach()),
                                      float(prior.detach())))

    run("a", config.steps, STAGE_A)
    t_a = time.perf_counter()
    if config.offset_steps > 0:
        shaped = rig_shape(rig, to_params(rig, params, u, scene.height, rig_height))
        u.normals = TexturedMesh(shaped, rig.faces).vertex_normals()
        u.offsets = torch.zeros(V, dtype=torch.float64, requires_grad=True)
        run("b", config.offset_steps, STAGE_B)
    t_b = time.perf_counter()
    with torch.no_grad():
        if u.offsets is not None:
            u.offsets *= allowed[:, 0]
        final = to_params(rig, params, u, scene.height, rig_height)
        final = RigParams(*(_detach(x) for x in (final.similarity, final.identity, final.expression, final.pose,
                                                 final.offsets)))
        if not final.is_finite():
            raise HeadforgeError(f"{STAGE_B if config.offset_steps else STAGE_A}: the fit diverged (non-finite "
                                 "parameters)", fix="lower the learning rates (lr_*) or raise the prior weights")
        iou, score, vc = evaluate(rig, scene, final, config)
    t_e = time.perf_counter()
    return RefineResult(final, iou, score, vc, tuple(history),
                        RefineSeconds(t_setup - t0, t_a - t_setup, t_b - t_a, t_e - t_b),
                        (scene.images.shape[2], scene.images.shape[1]))


def rig_shape(rig: HeadRig, params: RigParams) -> Tensor:  # -> [V, 3] float64 identity shape (rig frame)
    shaped = rig.template.double()
    if rig.num_identity:
        shaped = shaped + torch.einsum("k,kvc->vc", params.identity.double(), rig.identity_basis.double())
    return shaped.detach()


def _detach(x):
    if x is None:
        return None
    if isinstance(x, Similarity):
        return Similarity(x.scale.detach(), x.rotation.detach(), x.translation.detach())
    if isinstance(x, RigPose):
        return RigPose(x.rotations.detach(), x.translation.detach())
    return x.detach()


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
