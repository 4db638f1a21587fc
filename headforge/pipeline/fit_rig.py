"""Job: fit a head rig to a capture, staged as trackers do it (VHAP, eos), for one frame or a sequence.

    landmarks   MediaPipe-478 per view (``stages/face_landmarks``, cached per capture)
    landmarks   similarity (Umeyama on triangulated points) -> identity, expression, jaw/neck/eye pose by
                robust Levenberg-Marquardt on the reprojection error (``stages/rig_fit``)
    refine      silhouette + photometric through the differentiable rasterizer, then per-vertex offsets with
                a Laplacian prior (``stages/rig_refine``)
    texture     baked from the views onto the rig's UVs, unseen texels from the mirror and the template
                (``stages/rig_texture``)
    evaluate    landmark px, silhouette IoU, masked PSNR of the textured fit on the held-out views

Sequences (several timesteps in the capture, e.g. NeRSemble): the first selected frame fits everything; the
next ones keep its identity and offsets, start from the previous frame (warm start) and are pulled toward it
(``LandmarkFitConfig.temporal_weight``). Only the capture's train views are fitted; its test views score the
textured fit (held out). Everything is in memory: :mod:`headforge.pipeline.rig_fit_file` writes the files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

import torch
from torch import Tensor

from headforge.captures.capture import Capture
from headforge.errors import CaptureError, HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet
from headforge.stages.face_landmarks import CaptureLandmarks, FaceDetectorConfig, detect_capture, to_srgb
from headforge.stages.rig_fit import LandmarkFit, LandmarkFitConfig, fit_landmarks
from headforge.stages.rig_params import RigParams, world_vertices
from headforge.stages.rig_refine import RefineConfig, refine_rig
from headforge.stages.rig_texture import RigTexture, RigTextureConfig, bake_rig_texture
from headforge.validation import Checked, ImageSide, NonNegative

LANDMARK_SET = LandmarkSet.MEDIAPIPE_478  # what the detector gives


class FitStage(StrEnum):
    """The stages a fit reports seconds for, in order."""

    LANDMARKS = "landmarks"  # detection (or the cache)
    LANDMARK_FIT = "landmark_fit"
    REFINE = "refine"
    TEXTURE = "texture"
    EVALUATE = "evaluate"


@dataclass(frozen=True)
class FitRigConfig(Checked):
    landmarks: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    texture: RigTextureConfig = field(default_factory=RigTextureConfig)
    detector: FaceDetectorConfig = field(default_factory=FaceDetectorConfig)
    resolution: ImageSide = 512  # longest image side the views are read at (detection, texture, scores)
    sequence_temporal_weight: NonNegative = 10.0  # LandmarkFitConfig.temporal_weight for the later frames


# Offsets when asked for: 30 steps at 3x RefineConfig's offset learning rate. On the LPS scan (ICT-FaceKit,
# 256 px) the face Chamfer goes 2.23 -> 1.86 mm with 20 steps at 1x, 1.54 mm with 30 at 3x (+22 s), 1.52 mm
# with 40 at 3x (+27 s): bench/RESULTS.md.
OFFSET_STEPS = 30
OFFSET_LR = 1.5e-3


def default_config(resolution: int = 512, offsets: bool = True) -> FitRigConfig:
    """The fit for views read at ``resolution``: a texture of twice that side within 512..2048 (the views cannot
    fill more texels, and the mirror search grows with their square), offsets on (``OFFSET_STEPS`` at
    ``OFFSET_LR``) or off."""
    cfg = FitRigConfig(resolution=resolution)
    size = min(2048, max(512, 2 ** round(math.log2(2 * resolution))))
    return replace(cfg, refine=replace(cfg.refine, offset_steps=OFFSET_STEPS if offsets else 0, lr_offsets=OFFSET_LR),
                   texture=replace(cfg.texture, size=size))


@dataclass(frozen=True, eq=False)
class FrameFit:
    frame: int  # the capture's timestep
    views: tuple[int, ...]  # capture indices of the train views of this frame
    test_views: tuple[int, ...]  # capture indices of its held-out views
    landmarks: LandmarkFit
    silhouette_iou: Tensor  # [len(views)]
    heldout_psnr: Tensor  # [len(test_views)] masked PSNR (face region) of the textured fit, dB


@dataclass(frozen=True, eq=False)
class RigFit:
    """A rig fitted to a capture: parameters for each selected frame, the texture, the scores."""

    rig: HeadRig
    rig_spec: str  # how the rig was named (``builtin``, ``ict-facekit:PATH``, ``flame:PATH``)
    params: RigParams  # B frames, shared identity and offsets
    frames: tuple[FrameFit, ...]  # B, in order
    texture: RigTexture  # baked from the first frame's train views (atlas UVs, confidence, fill fractions)
    detections: CaptureLandmarks
    seconds: dict[FitStage, float]

    @property
    def landmark_set(self) -> LandmarkSet:
        return self.frames[0].landmarks.landmark_set

    def world_vertices(self, b: int = 0) -> Tensor:  # [V, 3] float64, frame b
        return world_vertices(self.rig, self.params.frame(b))[0]

    def summary(self) -> dict:
        """The headline scores (all frames pooled)."""
        errs = torch.cat([f.landmarks.errors_px[torch.isfinite(f.landmarks.errors_px)] for f in self.frames])
        iou = torch.cat([f.silhouette_iou for f in self.frames])
        psnr = torch.cat([f.heldout_psnr for f in self.frames])
        return {"landmark_median_px": float(errs.median()), "landmark_p90_px": float(errs.quantile(0.9)),
                "silhouette_iou": float(iou.mean()) if len(iou) else None,
                "heldout_psnr_face_db": float(psnr.mean()) if len(psnr) else None,
                "texture_seen_fraction": self.texture.seen_fraction,
                "texture_mirror_fraction": self.texture.mirror_fraction,
                "texture_template_fraction": self.texture.template_fraction,
                "seconds": {str(k): round(v, 3) for k, v in self.seconds.items()},
                "total_seconds": round(sum(self.seconds.values()), 3)}


def parse_frames(spec: str, available: list[int]) -> list[int]:
    """``first``, ``all`` or a comma list of timesteps, checked against the capture's."""
    text = spec.strip().lower()
    if text == "first":
        return available[:1]
    if text == "all":
        return available
    try:
        wanted = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise HeadforgeError(f"--frames {spec!r} is not 'first', 'all' or a comma list of timesteps",
                             fix="e.g. --frames all, --frames first or --frames 0,5,10") from None
    missing = [t for t in wanted if t not in available]
    if not wanted or missing:
        raise HeadforgeError(f"--frames {spec!r}: timesteps {missing or wanted} are not in the capture",
                             fix=f"choose among {available[:20]}{' ...' if len(available) > 20 else ''}")
    return wanted


@dataclass(frozen=True, eq=False)
class _Views:  # one frame's images at the working resolution
    cameras: Cameras
    images: Tensor  # [N, H, W, 3] sRGB
    masks: Tensor  # [N, H, W]


def _load_views(capture: Capture, indices: list[int]) -> _Views:
    imgs, masks = [], []
    for i in indices:
        view = capture.load(i)
        imgs.append(to_srgb(view.rgb, capture.colour_space))
        if view.alpha is None:
            raise CaptureError(f"view {capture.cameras.name(i)} has no mask: fitting a rig needs the subject's "
                               "silhouette", path=capture.source_path,
                               fix="give the capture masks (RGBA images or a masks/ folder)")
        masks.append(view.alpha)
    return _Views(capture.cameras[indices], torch.stack(imgs), torch.stack(masks))


def fit_rig(capture: Capture, rig: HeadRig, config: FitRigConfig | None = None, *, rig_spec: str = "",
            frames: str = "first", cache_dir=None, template_texture: Tensor | None = None,
            detections: CaptureLandmarks | None = None, progress: Callable[[str], None] | None = None) -> RigFit:
    """Fit ``rig`` to ``capture`` (its train views; its test views score the result). See the module doc.

    ``template_texture`` [H, W, 3]: an albedo in the rig's own UV layout (the built-in rig's is the sample head's
    texture) that fills the texels no view sees; without it they get the region's mean seen colour."""
    config = config or FitRigConfig()
    say = progress or (lambda _msg: None)
    if LANDMARK_SET not in rig.landmarks:
        raise HeadforgeError(f"the rig ({rig.source}) has no {LANDMARK_SET} landmark embedding, which fitting "
                             "to detected landmarks needs", fix="use --rig builtin or ict-facekit:FOLDER (both carry "
                             "one); FLAME gets none yet (headforge does not read FLAME's landmark files, and "
                             "tools/generate_landmark_embedding.py makes them for builtin and ICT-FaceKit only)")
    capture = capture.at_resolution(config.resolution)
    seconds = dict.fromkeys(FitStage, 0.0)
    timesteps = sorted(set(capture.frames.tolist()))
    chosen = parse_frames(frames, timesteps)
    t0 = time.perf_counter()
    if detections is None:
        say(f"landmarks: detecting in {len(capture)} views")
        det = detect_capture(capture, cache_dir, config.detector)
    elif len(detections.detections) != len(capture):
        raise HeadforgeError(f"{len(detections.detections)} landmark detections for {len(capture)} views",
                             fix="give one FaceDetections per view of the capture, in capture order")
    else:
        det = detections
    seconds[FitStage.LANDMARKS] = time.perf_counter() - t0
    say(f"landmarks: a face in {len(det.usable)} of {len(capture)} views ({det.cache_hits} from the cache)")
    points, valid = det.points2d(), det.valid()
    train, test = set(capture.split.train), set(capture.split.test)
    fits: list[FrameFit] = []
    params: RigParams | None = None
    texture: RigTexture | None = None
    for b, t in enumerate(chosen):
        idx = [i for i in range(len(capture)) if int(capture.frames[i]) == t and i in train]
        tidx = [i for i in range(len(capture)) if int(capture.frames[i]) == t and i in test]
        usable = [i for i in idx if det.detections[i].found]
        if len(usable) < 3:
            raise CaptureError(f"timestep {t}: a face was found in {len(usable)} of its {len(idx)} train views "
                               "(at least three needed)", path=capture.source_path,
                               fix="use views that see the front of the face, or leave this timestep out "
                                   "(--frames)")
        t1 = time.perf_counter()
        lm_cfg = config.landmarks if b == 0 else replace(config.landmarks, fix_identity=True,
                                                         temporal_weight=config.sequence_temporal_weight)
        lm = fit_landmarks(rig, capture.cameras[idx], points[idx], valid[idx], LANDMARK_SET, lm_cfg,
                           init=None if b == 0 else fits[-1].landmarks)
        seconds[FitStage.LANDMARK_FIT] += time.perf_counter() - t1
        say(f"frame {t}: landmarks fitted, median {lm.median_px:.2f} px ({lm.iterations} iterations)")
        t1 = time.perf_counter()
        views = _load_views(capture, idx)
        start = RigParams(lm.similarity, lm.identity, lm.expression[None], lm.pose,
                          None if params is None else params.offsets)
        refined = refine_rig(rig, views.cameras, views.images, views.masks, start,
                             config.refine if b == 0 else replace(config.refine, fix_identity=True, offset_steps=0),
                             landmarks=(points[idx], valid[idx], LANDMARK_SET))
        p = refined.params
        if not p.is_finite():
            raise HeadforgeError(f"timestep {t}: the fit diverged (non-finite parameters)",
                                 fix="check the capture's cameras and masks; raise the refine priors")
        seconds[FitStage.REFINE] += time.perf_counter() - t1
        say(f"frame {t}: refined, silhouette IoU {float(refined.silhouette_iou.mean()):.3f}")
        if b == 0:
            t1 = time.perf_counter()
            texture = bake_rig_texture(rig, world_vertices(rig, p)[0], views.cameras, views.images, views.masks,
                                       config.texture, template_texture)
            seconds[FitStage.TEXTURE] += time.perf_counter() - t1
            say(f"texture: {100 * texture.seen_fraction:.0f}% of the texels seen, "
                f"{100 * texture.mirror_fraction:.0f}% from the mirror side, "
                f"{100 * texture.template_fraction:.0f}% from the template")
        t1 = time.perf_counter()
        psnr = _heldout_psnr(rig, p, texture, capture, tidx)
        seconds[FitStage.EVALUATE] += time.perf_counter() - t1
        fits.append(FrameFit(t, tuple(idx), tuple(tidx), lm, refined.silhouette_iou, psnr))
        params = p if params is None else _append(params, p)
    assert params is not None and texture is not None
    return RigFit(rig, rig_spec, params, tuple(fits), texture, det, seconds)


def _append(a: RigParams, b: RigParams) -> RigParams:
    from headforge.representations.rig.deform import RigPose

    pose = RigPose(torch.cat([a.pose.rotations, b.pose.rotations]), torch.cat([a.pose.translation,
                                                                                b.pose.translation]))
    return replace(a, expression=torch.cat([a.expression, b.expression]), pose=pose)


def _heldout_psnr(rig: HeadRig, params: RigParams, texture: RigTexture | None, capture: Capture,
                  test: list[int]) -> Tensor:
    """Masked PSNR (dB) of the textured fit on the held-out views, over the pixels where the fitted face
    skin is in front and the capture's mask is set."""
    from headforge.stages.rig_evaluate import face_psnr

    if not test or texture is None:
        return torch.zeros(0, dtype=torch.float64)
    views = _load_views(capture, test)
    return face_psnr(rig, world_vertices(rig, params)[0], texture, views.cameras, views.images, views.masks)
