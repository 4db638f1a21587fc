"""Stage: fit the rig to one aligned photo, then complete what the photo does not show (texture and hair).

One view, the multi-view fitter's pieces with stronger priors:

1. Landmarks (``rig_fit.fit_landmarks``): similarity, identity, the photo's expression (ARKit weights) and the
   non-root joint rotations against the photo's 478 MediaPipe points, started from the identity similarity (the
   photo's camera was solved by PnP against the rig's landmarks, so its world is the rig's head frame at the
   rig's own size). ``fit_landmarks`` counts a landmark when seen in two views: the one view is passed twice and
   every prior weight is doubled, which is the same objective as one view with the configured priors.
2. Silhouette + photometric refinement (``rig_refine.refine_rig``) on the one view, without per-vertex offsets
   (one view cannot tell them from the bases), with the refine priors raised.
3. Depth and scale: one perspective view hardly separates the head's size from its distance. After each stage
   the fit is scaled about the camera centre back to ``scale`` (default 1: the rig's own size, which PnP used):
   x -> C + (x - C) / s keeps every projection exactly, so the reprojection error is unchanged.

Then ``texture_complete.complete_texture`` (photo + mirror + re-coloured template, Poisson-blended) and
``photo_hair.photo_hair`` (the hair layer bound to the scalp). ``PhotoFit.neutral()`` is the head without the
photo's expression and pose.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet
from headforge.stages.photo_hair import PhotoHairConfig, photo_hair
from headforge.stages.photo_types import AlignedPhoto, PhotoFit
from headforge.stages.rig_fit import LandmarkFit, LandmarkFitConfig, fit_landmarks
from headforge.stages.rig_params import RigParams, Similarity
from headforge.stages.rig_refine import refine_rig
from headforge.stages.rig_refine_terms import RefineConfig
from headforge.stages.texture_complete import TextureCompleteConfig, complete_texture
from headforge.validation import Checked, NonNegativeInt, Positive

__all__ = ["PhotoFitConfig", "fit_photo", "photo_landmark_fit", "rescale_about_camera"]

D = torch.float64
STAGE = "photo fit"
LANDMARK_SET = LandmarkSet.MEDIAPIPE_478


def _one_view_landmarks() -> LandmarkFitConfig:
    # priors per view (doubled when the view is passed twice, see the module doc); identity and expression are
    # ten (identity) and two (expression) times the multi-view defaults (one view constrains them less); one
    # occlusion round (landmarks the fitted head hides from the camera are dropped once); views up to 70 degrees
    return LandmarkFitConfig(identity_weight=10.0, expression_weight=2.0, pose_weight=10.0, visibility_rounds=1,
                             max_view_angle_deg=70.0)


def _one_view_refine() -> RefineConfig:
    return RefineConfig(resolution=128, steps=30, offset_steps=0, views_per_step=1, identity_weight=1e-3,
                        expression_weight=1e-3, pose_weight=1e-2, landmark_weight=1.0)


@dataclass(frozen=True)
class PhotoFitConfig(Checked):
    landmarks: LandmarkFitConfig = field(default_factory=_one_view_landmarks)
    refine: RefineConfig = field(default_factory=_one_view_refine)  # steps=0: the landmark fit alone
    scale: Positive = 1.0  # the rig's size in the photo's world (1: the rig's own, as PnP solved it)
    texture: TextureCompleteConfig = field(default_factory=TextureCompleteConfig)
    hair: PhotoHairConfig = field(default_factory=PhotoHairConfig)
    seed: NonNegativeInt = 0


def rescale_about_camera(similarity: Similarity, camera: Cameras, scale: float) -> Similarity:
    """The similarity scaled about the camera centre C to ``scale``: x -> C + (x - C) * scale / s. Every point's
    projection in that camera is unchanged (the ray through C is the same line)."""
    C = camera.centers()[0].double()
    f = scale / float(similarity.scale)
    return Similarity(torch.tensor(scale, dtype=D), similarity.rotation.double(),
                      C + (similarity.translation.double() - C) * f)


def photo_landmark_fit(photo: AlignedPhoto, rig: HeadRig, config: LandmarkFitConfig) -> LandmarkFit:
    """The landmark stage on the photo's one camera (passed twice with doubled priors, see the module doc)."""
    doubled = replace(config, identity_weight=2 * config.identity_weight,
                      expression_weight=2 * config.expression_weight, pose_weight=2 * config.pose_weight,
                      jaw_weight=2 * config.jaw_weight, eye_weight=2 * config.eye_weight,
                      temporal_weight=2 * config.temporal_weight, min_views=2)
    cams = Cameras.cat([photo.camera, photo.camera])
    points = photo.landmarks.double()[None].expand(2, -1, -1)
    valid = torch.isfinite(points).all(-1)
    start = Similarity(torch.tensor(1.0, dtype=D), torch.eye(3, dtype=D), torch.zeros(3, dtype=D))
    return fit_landmarks(rig, cams, points, valid, LANDMARK_SET, doubled, init=start)


def _median_px(rig: HeadRig, params: RigParams, photo: AlignedPhoto) -> float:
    from headforge.geometry.rays import project_points
    from headforge.representations.rig.deform import landmarks
    from headforge.stages.rig_params import rig_vertices

    pts = params.similarity.apply(landmarks(rig, rig_vertices(rig, params), LANDMARK_SET)[0])
    uv, _ = project_points(photo.camera.to(dtype=D), pts)
    ok = torch.isfinite(photo.landmarks).all(-1)
    reliable = rig.landmarks[LANDMARK_SET].reliable
    if reliable is not None:
        ok &= reliable
    return float((uv[0] - photo.landmarks.double()).norm(dim=-1)[ok].median())


def fit_photo(photo: AlignedPhoto, rig: HeadRig, rig_spec: str, config: PhotoFitConfig | None = None, *,
              template_texture: Tensor | None = None) -> PhotoFit:
    """Fit ``rig`` to one aligned photo and complete it (see the module doc). ``template_texture`` [H, W, 3]: the
    rig's albedo in its own UVs (the built-in rig's is the sample head's texture; ICT-FaceKit has none: a flat
    skin colour then)."""
    config = config or PhotoFitConfig()
    if LANDMARK_SET not in rig.landmarks:
        raise HeadforgeError(f"{STAGE}: the rig ({rig.source}) has no {LANDMARK_SET} landmark embedding",
                             fix="use --rig builtin or ict-facekit:FOLDER (both carry one)")
    if len(photo.camera) != 1:
        raise ValueError(f"fit_photo: the aligned photo must hold one camera (got {len(photo.camera)})")
    lm = photo_landmark_fit(photo, rig, config.landmarks)
    params = RigParams(rescale_about_camera(lm.similarity, photo.camera, config.scale), lm.identity,
                       lm.expression[None], lm.pose)
    if config.refine.steps > 0:
        mask = photo.person_mask.float()
        refined = refine_rig(rig, photo.camera, photo.image[None], mask[None], params,
                             replace(config.refine, offset_steps=0),
                             landmarks=(photo.landmarks[None], torch.isfinite(photo.landmarks).all(-1)[None],
                                        LANDMARK_SET))
        params = replace(refined.params, similarity=rescale_about_camera(refined.params.similarity, photo.camera,
                                                                         config.scale))
    if not params.is_finite():
        raise HeadforgeError(f"{STAGE}: the fit diverged (non-finite parameters)",
                             fix="check the photo's camera and landmarks; raise the priors")
    generator = torch.Generator().manual_seed(config.seed)
    texture = complete_texture(photo, rig, params, config.texture, template_texture)
    hair = photo_hair(photo, rig, params, config.hair, generator)
    return PhotoFit(rig, rig_spec, params, texture.texture, hair, _median_px(rig, params, photo))
