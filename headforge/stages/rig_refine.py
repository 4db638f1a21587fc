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
Stage b (``offset_steps`` > 0): per-vertex offsets along the normals of the fitted identity shape (a scalar per
vertex: tangential sliding is invisible to silhouettes and colours and only drifts), on ``offset_regions`` (eyes,
teeth and the mouth interior get none), with a uniform-Laplacian smoothness prior and a magnitude prior (weaker on
the scalp by ``scalp_prior_scale``); scalp offsets are clamped to +-``scalp_max_offset`` (head sizes) after
every step, and the scalp is never in the fill band, so hair volume cannot inflate it. Stage b optimises the
offsets alone: the global parameters were settled by stage a (optimising both let Adam's first steps disturb a
converged similarity, measured 0.1 -> 3.5 mm on the synthetic test). ``RigParams.offsets`` holds them as [V, 3]
rig-frame metres.

Units: translation and offsets are optimised in head sizes (the rig's largest extent), learning rates are Adam
step sizes per step, cosine-decayed to 10 %.
Each step renders ``views_per_step`` views (a seeded permutation, cycled) at ``resolution`` px (long side).
Conventions: cameras ``Cameras`` (OpenCV world-to-camera, pinhole; distortion is refused), images [N, H, W, 3]
sRGB in [0, 1], masks [N, H, W] in [0, 1]; world = s R x_rig + t (``Similarity``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.deform import RigPose, axis_angle_to_matrix
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.rig_params import RigParams, Similarity
from headforge.stages.rig_refine_terms import (
    STAGE_A,
    STAGE_B,
    Colors,
    RefineConfig,
    apply_laplacian,
    evaluate,
    loss_terms,
    prepare_scene,
    region_mask,
    scatter_colors,
    uniform_laplacian,
)


class RefineStage(StrEnum):
    SILHOUETTE_PHOTOMETRIC = "silhouette_photometric"  # stage a
    OFFSETS = "offsets"  # stage b


@dataclass(frozen=True)
class RefineStep:
    stage: RefineStage
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


# ------------------------------------------------------------------------------------------ the fit
@dataclass
class Unknowns:  # the optimised tensors (float64 leaves) and what stays fixed
    log_scale: Tensor
    d_rotation: Tensor  # [3] axis-angle increment on R0
    translation: Tensor  # [3] head sizes relative to t0
    identity: Tensor  # [K]
    expression: Tensor  # [P] the present rows
    joints: Tensor  # [J - 1, 3]
    offsets: Tensor | None  # [V] head sizes along ``normals`` (rig frame)
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
    # offsets a previous frame fitted stay as they are (a sequence shares them); stage b fits new ones
    offsets = start.offsets if u.offsets is None else u.offsets[:, None] * u.normals * rig_height
    return RigParams(sim, u.identity, expression, RigPose(rot, torch.zeros(1, 3, dtype=torch.float64)), offsets)


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
    scalp = region_mask(rig, (Region.SCALP,))
    allowed = region_mask(rig, config.offset_regions).float()[:, None]
    lap = uniform_laplacian(rig.faces, V)
    offset_w = torch.where(scalp, config.scalp_prior_scale, 1.0).float()
    cap = config.scalp_max_offset

    def run(stage: RefineStage, steps: int, label: str) -> None:
        groups = [([u.log_scale], config.lr_scale), ([u.d_rotation, u.joints], config.lr_rotation),
                  ([u.translation], config.lr_translation), ([u.identity], config.lr_identity),
                  ([u.expression], config.lr_expression)]
        if stage is RefineStage.OFFSETS:  # the offsets alone: the global parameters were settled by stage a
            groups = [([u.offsets], config.lr_offsets)]
        if config.fix_identity:  # a sequence's later frames keep the first frame's identity
            groups = [(p, lr) for p, lr in groups if p[0] is not u.identity]
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
            total = (config.silhouette_weight * terms.silhouette + config.photometric_weight * terms.photometric
                     + config.landmark_weight * terms.landmark + prior)
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
                    u.offsets[scalp] = u.offsets[scalp].clamp(-cap, cap)
                a, w = scatter_colors(scene, out, views, V)
                colors.acc.mul_(decay).add_(a)
                colors.weight.mul_(decay).add_(w)
            history.append(RefineStep(stage, i, float(total.detach()), float(terms.silhouette.detach()),
                                      float(terms.photometric.detach()), float(terms.landmark.detach()),
                                      float(prior.detach())))

    run(RefineStage.SILHOUETTE_PHOTOMETRIC, config.steps, STAGE_A)
    t_a = time.perf_counter()
    if config.offset_steps > 0:
        shaped = rig_shape(rig, to_params(rig, params, u, scene.height, rig_height))
        u.normals = TexturedMesh(shaped, rig.faces).vertex_normals()
        u.offsets = torch.zeros(V, dtype=torch.float64, requires_grad=True)
        run(RefineStage.OFFSETS, config.offset_steps, STAGE_B)
    t_b = time.perf_counter()
    with torch.no_grad():
        if u.offsets is not None:
            u.offsets *= allowed[:, 0]
        final = to_params(rig, params, u, scene.height, rig_height)
        final = RigParams(*(_detach(x) for x in (final.similarity, final.identity, final.expression, final.pose,
                                                 final.offsets)))
        scale = float(final.similarity.scale)
        if not final.is_finite() or not 1e-6 < scale / float(params.similarity.scale) < 1e6:
            raise HeadforgeError(f"{STAGE_B if config.offset_steps else STAGE_A}: the fit diverged (non-finite "
                                 f"parameters or a degenerate scale {scale:.3g})",
                                 fix="lower the learning rates (lr_*) or raise the prior weights")
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

