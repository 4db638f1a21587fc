"""Fitting a `HeadRig` to multi-view 2D landmarks: the landmark stages of a tracker (VHAP, eos).

Stage 1, ``align_similarity``: Umeyama similarity from the rig's neutral landmarks to triangulated 3D landmarks.
Stage 2, ``fit_landmarks``: identity, expression (ARKit rows the rig has, in [0, 1]), non-root joint rotations and
the similarity by regularised least squares on the landmark reprojection error in pixels.

Conventions: world = s R x_rig + t (``Similarity``, world from rig; the rig's root stays at rest, the similarity
is its global pose); cameras are ``Cameras`` (OpenCV world-to-camera); ``points2d`` [V, L, 2] pixels (x right,
y down, pixel centres at +0.5), ``valid`` [V, L] bool. Maths run in float64.

Fast path and its slow twin: the fit evaluates landmarks on a ``LandmarkModel``, the rig reduced to the corner
vertices of its landmark triangles, with the joint regressor folded into [J, 3] + [K, J, 3] (rest joints are
linear in the identity). ``landmark_points`` reproduces ``deform`` + ``landmarks`` on the full rig (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor
from torch.func import jacfwd

from headforge.errors import HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.geometry.rotations import umeyama
from headforge.geometry.triangulate import triangulate_landmarks
from headforge.representations.rig.arkit import NUM_ARKIT
from headforge.representations.rig.deform import (
    RigPose,
    axis_angle_to_matrix,
    blend_shapes,
    corrective_offsets,
    deform,
    joint_transforms,
    landmarks,
    linear_blend_skinning,
)
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, LandmarkSet
from headforge.stages.rig_evaluate import visible_points
from headforge.stages.rig_params import Similarity
from headforge.validation import Checked, Count, NonNegative, Positive

D = torch.float64
STAGE = "rig fit (landmark stage)"
MIN_LANDMARKS = 3  # a similarity needs three non-collinear points


@dataclass(frozen=True)
class LandmarkFitConfig(Checked):
    max_iterations: Annotated[int, at.Ge(1), at.Le(1000)] = 150  # Levenberg-Marquardt iterations
    # Tikhonov priors, in px^2 per unit^2 (the data term is the sum of squared pixel errors):
    identity_weight: NonNegative = 1.0  # identity coefficients ~ N(0, 1): weight * |identity|^2
    expression_weight: NonNegative = 1.0  # ARKit weights: weight * |expression|^2
    pose_weight: NonNegative = 10.0  # neck and head rotations (radians): weight * |rotations|^2
    # The jaw joint and jawOpen, the eye joints and eyeLook* describe the same motions on rigs whose shapes
    # carry them (ICT-FaceKit's do): the strong default priors let the ARKit shapes explain them.
    jaw_weight: NonNegative = 1e4
    eye_weight: NonNegative = 1e4
    robust_px: NonNegative = 3.0  # Huber threshold on each landmark's pixel error (0: plain least squares)
    fix_identity: bool = False  # keep the initial identity (a sequence's later frames share the first's)
    temporal_weight: NonNegative = 0.0  # pull expression and rotations toward the warm start (sequences)
    damping: Positive = 1e-3  # initial LM damping (relative to the Gauss-Newton diagonal)
    tolerance: Annotated[float, at.Gt(0), at.Lt(1)] = 1e-8  # converged when the cost drops by less (relative)
    # MediaPipe returns all 478 points in every view, guessing the ones the head hides: after a first fit,
    # observations whose landmark lies more than ``occlusion_mm`` behind the fitted surface in that view (a coarse
    # z-buffer of its vertices, ``rig_evaluate.visible_points``) are
    # dropped and the fit repeated (up to ``visibility_rounds`` times, until the set stops changing)
    occlusion_mm: Positive = 5.0
    # ... and views that see the face from farther than this off its forward axis (MediaPipe's points spread
    # out on strongly turned or top-down faces) are dropped as a whole
    max_view_angle_deg: Annotated[float, at.Gt(0), at.Le(180)] = 55.0
    visibility_rounds: Annotated[int, at.Ge(0), at.Le(5)] = 2
    triangulation_threshold_px: Positive = 8.0  # RANSAC threshold of the initial triangulation
    min_views: Annotated[Count, at.Ge(2)] = 2  # a landmark counts when seen in at least this many views


@dataclass(frozen=True, eq=False)
class LandmarkFit:
    similarity: Similarity  # world from rig
    identity: Tensor  # [K] (K = 0 for a rig without identity basis)
    expression: Tensor  # [52] ARKit weights in [0, 1]; rows the rig lacks are 0
    pose: RigPose  # [1, J, 3] rotations (root zero), translation zero
    landmark_set: LandmarkSet
    errors_px: Tensor  # [V, L] reprojection error; NaN where not observed
    view_median_px: Tensor  # [V] NaN for a view with no observation
    view_p90_px: Tensor  # [V]
    median_px: float
    p90_px: float
    iterations: int
    converged: bool
    cost: float  # final objective: Huber of the pixel errors + priors
    dropped: int = 0  # observations left out because their landmark faced the camera too obliquely


@dataclass(frozen=True, eq=False)
class LandmarkModel:
    """The rig reduced to the U corner vertices of its landmark triangles (float64)."""

    template: Tensor  # [U, 3]
    identity_basis: Tensor  # [K, U, 3]
    expression_basis: Tensor  # [P, U, 3] the rig's present ARKit rows
    expression_rows: Tensor  # [P] int64 rows of ARKIT_NAMES
    skin_weights: Tensor  # [U, J]
    correctives: Tensor | None  # [J - 1, 9, U, 3]
    joints: Tensor  # [J, 3] rest joints of the template
    joints_identity: Tensor  # [K, J, 3] rest-joint motion per identity coefficient
    corners: Tensor  # [L, 3] int64 into U
    barycentrics: Tensor  # [L, 3]
    parents: tuple[int, ...]


def landmark_model(rig: HeadRig, landmark_set: LandmarkSet | str) -> LandmarkModel:
    kind = LandmarkSet(landmark_set)
    if kind not in rig.landmarks:
        raise HeadforgeError(f"{STAGE}: the rig ({rig.source}) has no {kind} landmark embedding",
                             fix=f"use a landmark set it embeds: {[str(k) for k in rig.landmarks] or 'none'}")
    emb = rig.landmarks[kind]
    used, corners = torch.unique(rig.faces[emb.triangles], return_inverse=True)  # [U], [L, 3]
    K = rig.num_identity
    ident = rig.identity_basis.double() if K else rig.template.new_zeros(0, rig.num_vertices, 3, dtype=D)
    rows = rig.expression_present.nonzero().squeeze(1)
    reg = rig.joint_regressor.double()
    return LandmarkModel(
        template=rig.template.double()[used], identity_basis=ident[:, used],
        expression_basis=rig.expression_basis.double()[rows][:, used], expression_rows=rows,
        skin_weights=rig.skin_weights.double()[used],
        correctives=None if rig.pose_correctives is None else rig.pose_correctives.double()[:, :, used],
        joints=reg @ rig.template.double(), joints_identity=torch.einsum("jv,kvc->kjc", reg, ident),
        corners=corners, barycentrics=emb.barycentrics.double(), parents=rig.parents)


def landmark_points(model: LandmarkModel, identity: Tensor, expression: Tensor, rotations: Tensor) -> Tensor:
    """Landmarks [L, 3] in the rig frame for identity [K], present-row expression [P], rotations [J, 3]
    (root translation zero): ``deform`` + ``landmarks`` on the reduced vertices."""
    shaped = model.template + torch.einsum("k,kuc->uc", identity, model.identity_basis)  # [U, 3]
    joints = model.joints + torch.einsum("k,kjc->jc", identity, model.joints_identity)  # [J, 3]
    blended = blend_shapes(shaped, model.expression_basis, expression[None])  # [1, U, 3]
    if model.correctives is not None:
        blended = blended + corrective_offsets(model.correctives, rotations[None])
    T = joint_transforms(joints, model.parents, rotations[None], rotations.new_zeros(1, 3))
    posed = linear_blend_skinning(blended, model.skin_weights, T)[0]  # [U, 3]
    return (model.barycentrics[..., None] * posed[model.corners]).sum(1)


def _visible(rig: HeadRig, x: Tensor, lay: _Layout, model: LandmarkModel, R0: Tensor, cams: Cameras,
             points: Tensor, tolerance: float) -> Tensor:
    """[V, L] bool: landmark l (world points [L, 3]) is not hidden behind the rig fitted as ``x`` in view v."""
    sim, ident, expression, pose = _unpack(x, lay, model, R0)
    dt = rig.template.dtype
    verts = sim.apply(deform(rig, ident[None].to(dt) if lay.K else None, expression[None].to(dt),
                             RigPose(pose.rotations.to(dt), pose.translation.to(dt)))[0].double())
    return visible_points(rig, verts, cams, points, tolerance)


def align_similarity(rig: HeadRig, landmark_set: LandmarkSet | str, points3d: Tensor, valid: Tensor) -> Similarity:
    """Umeyama similarity from the rig's neutral landmarks to world points3d [L, 3]; valid [L] bool (non-finite
    points are ignored too). Fewer than three usable points: a ``HeadforgeError``."""
    kind = LandmarkSet(landmark_set)
    src = landmarks(rig, rig.template.double()[None], kind)[0]  # [L, 3]
    if points3d.shape != src.shape or valid.shape != src.shape[:1]:
        raise ValueError(f"align_similarity: points3d {list(points3d.shape)} and valid {list(valid.shape)} must be "
                         f"[{len(src)}, 3] and [{len(src)}] for {kind}")
    ok = valid.bool() & torch.isfinite(points3d).all(-1)
    n = int(ok.sum())
    if n < MIN_LANDMARKS:
        raise HeadforgeError(f"{STAGE}: only {n} usable 3D landmarks of {len(src)} (a similarity needs "
                             f"{MIN_LANDMARKS})", fix="check the landmark detections: the face must be seen in "
                                                      "at least two views with enough landmarks")
    s, R, t = umeyama(src[ok], points3d.double()[ok])
    return Similarity(s, R, t)


# ---------------------------------------------------------------------------------------------- the solver
@dataclass(frozen=True)
class _Layout:  # the flat parameter vector: [log s (1), dR (3), t (3), identity (K), expression (P), rot (3 (J-1))]
    K: int
    P: int
    J: int

    @property
    def size(self) -> int:
        return 7 + self.K + self.P + 3 * (self.J - 1)

    def split(self, x: Tensor) -> tuple[Tensor, ...]:
        K, P = self.K, self.P
        rot = torch.cat([x.new_zeros(1, 3), x[7 + K + P:].reshape(self.J - 1, 3)])  # root stays at rest
        return x[0], x[1:4], x[4:7], x[7:7 + K], x[7 + K:7 + K + P], rot

    @property
    def expression(self) -> slice:
        return slice(7 + self.K, 7 + self.K + self.P)


def _prior_weights(lay: _Layout, config: LandmarkFitConfig) -> Tensor:  # [N - 7] Tikhonov weights
    per_joint = {Joint.NECK: config.pose_weight, Joint.HEAD: config.pose_weight, Joint.JAW: config.jaw_weight,
                 Joint.LEFT_EYE: config.eye_weight, Joint.RIGHT_EYE: config.eye_weight}
    rot = torch.tensor([per_joint[j] for j in JOINTS[1:]], dtype=D).repeat_interleave(3)
    return torch.cat([torch.full((lay.K,), config.identity_weight, dtype=D),
                      torch.full((lay.P,), config.expression_weight, dtype=D), rot])


def _observations(cameras: Cameras, points2d: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    V, L = valid.shape
    if points2d.shape != (V, L, 2) or len(cameras) != V:
        raise ValueError(f"fit_landmarks: points2d {list(points2d.shape)}, valid {list(valid.shape)} and "
                         f"{len(cameras)} cameras disagree (expected [V, L, 2], [V, L], V cameras)")
    ok = valid.bool() & torch.isfinite(points2d).all(-1)
    return torch.where(ok[..., None], points2d.double(), torch.zeros((), dtype=D)), ok


def fit_landmarks(rig: HeadRig, cameras: Cameras, points2d: Tensor, valid: Tensor,
                  landmark_set: LandmarkSet | str, config: LandmarkFitConfig | None = None,
                  init: Similarity | LandmarkFit | None = None) -> LandmarkFit:
    """Fit the rig to landmarks seen by calibrated cameras (see the module doc).

    Solver: projected Levenberg-Marquardt on the stacked residuals (pixel errors of every observation, then
    sqrt(weight) * parameter for each prior), with the Jacobian from ``torch.func.jacfwd``. The problem is a
    small, dense nonlinear least squares (about 100-200 unknowns, a few thousand residuals), which Gauss-Newton
    solves in a handful of iterations where first-order methods (L-BFGS) need hundreds; forward mode costs one
    pass per unknown, fewer than the residuals reverse mode would need. LM's damping makes the first steps
    safe from the Umeyama start. Expression weights are kept in [0, 1] by an active set (a weight at a bound
    whose gradient pushes outward is held) and by projecting each trial step onto the box; a step is accepted
    only if it lowers the cost. Converged: the relative decrease fell below ``tolerance``, or no damped step
    lowers the cost any more (a stationary point of the projected problem).

    ``init``: a similarity (the identity, expression and pose start at zero) or a previous fit (warm start);
    None triangulates the landmarks and aligns the neutral rig to them (``align_similarity``).
    """
    config = config or LandmarkFitConfig()
    kind = LandmarkSet(landmark_set)
    model = landmark_model(rig, kind)
    obs, ok = _observations(cameras, points2d, valid)
    reliable = rig.landmarks[kind].reliable
    if reliable is not None:  # points the embedding could not place well are not fitted
        ok = ok & reliable[None]
    seen = ok.sum(0) >= config.min_views  # [L]
    if int(seen.sum()) < MIN_LANDMARKS:
        raise HeadforgeError(f"{STAGE}: only {int(seen.sum())} landmarks are seen in {config.min_views} or more "
                             f"views (at least {MIN_LANDMARKS} needed)",
                             fix="check the landmark detections and that the views see the face")
    cams = cameras.to(dtype=D)
    lay = _Layout(rig.num_identity, len(model.expression_rows), len(JOINTS))
    x = torch.zeros(lay.size, dtype=D)
    if init is None:
        tri = triangulate_landmarks(cameras, points2d, ok, config.triangulation_threshold_px)
        init = align_similarity(rig, kind, tri.points, tri.reliable)
    if isinstance(init, LandmarkFit):
        x[7:7 + lay.K] = init.identity.double()
        x[lay.expression] = init.expression.double()[model.expression_rows]
        x[7 + lay.K + lay.P:] = init.pose.rotations.double()[0, 1:].reshape(-1)
        init = init.similarity
    finite = bool(torch.isfinite(init.rotation).all() & torch.isfinite(init.translation).all())
    if not (float(init.scale) > 0 and finite):
        raise HeadforgeError(f"{STAGE}: the initial similarity is degenerate (scale {float(init.scale):.3g})",
                             fix="the landmarks must span the face (not collinear); check the detections")
    x[0] = torch.log(init.scale.double())
    x[4:7] = init.translation.double()
    R0 = init.rotation.double()
    prior_sqrt = _prior_weights(lay, config).sqrt()
    x_start = x[7:].clone()  # the warm start, for the temporal prior
    temporal_sqrt = torch.zeros(lay.size - 7, dtype=D)
    temporal_sqrt[lay.K:] = config.temporal_weight ** 0.5

    def world(x: Tensor) -> Tensor:  # [L, 3]
        log_s, dr, t, ident, expr, rot = lay.split(x)
        p = landmark_points(model, ident, expr, rot)
        return torch.exp(log_s) * p @ (axis_angle_to_matrix(dr) @ R0).T + t

    def errors(x: Tensor) -> Tensor:  # [M, 2] pixel errors of the M used observations (view, landmark)
        uv, _ = project_points(obs_cams, world(x)[obs_landmark][:, None])  # [M, 1, 2]
        return uv[:, 0] - obs_px

    def residuals(x: Tensor, sqrt_w: Tensor) -> Tensor:  # sqrt_w [M]: IRLS weights of the Huber loss
        data = (errors(x) * sqrt_w[..., None]).reshape(-1)
        return torch.cat([data, prior_sqrt * x[7:], temporal_sqrt * (x[7:] - x_start)])

    def robust_cost(x: Tensor) -> float:  # Huber: e^2 below the threshold, 2 k e - k^2 above
        e = errors(x).norm(dim=-1)
        k = config.robust_px
        data = e.square() if k == 0 else torch.where(e <= k, e.square(), 2 * k * e - k * k)
        priors = (prior_sqrt * x[7:]).square().sum() + (temporal_sqrt * (x[7:] - x_start)).square().sum()
        return float(data.sum() + priors)

    def irls_weights(x: Tensor) -> Tensor:  # [M]
        if config.robust_px == 0:
            return torch.ones(len(obs_px), dtype=D)
        e = errors(x).norm(dim=-1)
        return torch.where(e <= config.robust_px, torch.ones_like(e), config.robust_px / e.clamp_min(1e-12)).sqrt()

    lo, hi = torch.zeros(lay.P, dtype=D), torch.ones(lay.P, dtype=D)
    detected = previous = ok
    it_total, rounds = 0, 1 + config.visibility_rounds
    for round_ in range(rounds):
        if round_ > 0:  # drop the observations the current fit says are grazing or behind the head
            facing = detected & _visible(rig, x, lay, model, R0, cams, world(x), config.occlusion_mm / 1000)
            facing &= _frontal_views(x, lay, model, R0, cams, config.max_view_angle_deg)[:, None]
            if bool((facing == previous).all()) or int(((facing.sum(0)) >= config.min_views).sum()) < MIN_LANDMARKS:
                break
            ok = previous = facing
        view, obs_landmark = ok.nonzero(as_tuple=True)  # the observations this round uses, flat
        obs_cams, obs_px = cams[view], obs[view, obs_landmark]
        cost = robust_cost(x)
        lam, it, converged = config.damping, 0, False
        for it in range(1, config.max_iterations + 1):  # noqa: B007 (the count is reported after the loop)
            sqrt_w = irls_weights(x)
            r = residuals(x, sqrt_w)
            Jm = jacfwd(residuals)(x, sqrt_w)  # [R, N]
            g, H = Jm.T @ r, Jm.T @ Jm
            free = torch.ones(lay.size, dtype=torch.bool)
            if config.fix_identity:
                free[7:7 + lay.K] = False
            e, ge = x[lay.expression], g[lay.expression]
            free[lay.expression] = ~(((e <= 0) & (ge > 0)) | ((e >= 1) & (ge < 0)))
            Hf, gf = H[free][:, free], g[free]
            diag = torch.diagonal(Hf).clamp_min(1e-12)
            improved = False
            while lam < 1e12:
                step = torch.linalg.solve(Hf + lam * torch.diag(diag), -gf)
                x_new = x.clone()
                x_new[free] += step
                x_new[lay.expression] = x_new[lay.expression].clamp(lo, hi)
                cost_new = robust_cost(x_new)
                if cost_new == cost_new and cost_new < cost:  # finite and lower
                    improved = True
                    break
                lam *= 10
            if not bool(torch.isfinite(x).all()):
                break
            if not improved:
                converged = True  # no damped step lowers the cost: stationary
                break
            decrease = (cost - cost_new) / max(cost, 1e-300)
            x, cost, lam = x_new, cost_new, max(lam / 10, 1e-12)
            if decrease < config.tolerance:
                converged = True
                break
        it_total += it
    if not (bool(torch.isfinite(x).all()) and cost == cost and cost < float("inf")):
        raise HeadforgeError(f"{STAGE}: the fit diverged (non-finite parameters or cost after {it_total} iterations)",
                             fix="check the cameras and landmarks (units, world-to-camera convention); "
                                 "raise the prior weights")
    return _result(x, lay, model, R0, cams, obs, ok, kind, it_total, converged, cost, int((detected & ~ok).sum()))


def _frontal_views(x: Tensor, lay: _Layout, model: LandmarkModel, R0: Tensor, cams: Cameras,
                   max_angle_deg: float) -> Tensor:
    """[V] bool: camera v lies within ``max_angle_deg`` of the fitted head's forward axis (+z of the rig)."""
    return _facing_cameras(_unpack(x, lay, model, R0)[0], cams, max_angle_deg, model.template.mean(0))


def _facing_cameras(similarity: Similarity, cams: Cameras, max_angle_deg: float,
                    centre: Tensor | None = None) -> Tensor:
    """[V] bool: camera v lies within ``max_angle_deg`` of the head's forward axis (+z of the rig, placed by
    ``similarity`` at ``centre``, rig frame; default the rig origin)."""
    c = similarity.apply(torch.zeros(3, dtype=D) if centre is None else centre.double())
    forward = similarity.rotation.double() @ torch.tensor([0.0, 0.0, 1.0], dtype=D)
    to_cam = cams.centers().to(D) - c
    cos = (to_cam @ forward) / to_cam.norm(dim=-1).clamp_min(1e-20)
    return cos >= torch.cos(torch.deg2rad(torch.tensor(max_angle_deg, dtype=D)))


def _unpack(x: Tensor, lay: _Layout, model: LandmarkModel, R0: Tensor
            ) -> tuple[Similarity, Tensor, Tensor, RigPose]:  # similarity, identity [K], expression [52], pose
    log_s, dr, t, ident, expr, rot = (v.detach() for v in lay.split(x))
    expression = torch.zeros(NUM_ARKIT, dtype=D)
    expression[model.expression_rows] = expr
    return (Similarity(torch.exp(log_s), axis_angle_to_matrix(dr) @ R0, t), ident.clone(), expression,
            RigPose(rot[None].clone(), torch.zeros(1, 3, dtype=D)))


def _result(x: Tensor, lay: _Layout, model: LandmarkModel, R0: Tensor, cams: Cameras, obs: Tensor, ok: Tensor,
            kind: LandmarkSet, iterations: int, converged: bool, cost: float, dropped: int) -> LandmarkFit:
    sim, ident, expression, pose = _unpack(x, lay, model, R0)
    expr = expression[model.expression_rows]
    uv, _ = project_points(cams, sim.apply(landmark_points(model, ident, expr, pose.rotations[0])))
    err = torch.where(ok, (uv - obs).norm(dim=-1), torch.full((), float("nan"), dtype=D))  # [V, L]
    return LandmarkFit(sim, ident, expression, pose, kind, err, err.nanquantile(0.5, dim=1),
                       err.nanquantile(0.9, dim=1), float(err[ok].median()), float(err[ok].quantile(0.9)),
                       iterations, converged, cost, dropped)


def fitted_vertices(rig: HeadRig, fit: LandmarkFit) -> Tensor:
    """The fitted rig's vertices [V, 3] in the world (float64)."""
    dt = rig.template.dtype
    ident = fit.identity[None].to(dt) if rig.num_identity else None
    pose = RigPose(fit.pose.rotations.to(dt), fit.pose.translation.to(dt))
    return fit.similarity.apply(deform(rig, ident, fit.expression[None].to(dt), pose)[0].double())
