"""The job behind ``headforge photo [PHOTO] --out DIR``: one portrait -> an animatable head, its GLB and report.

Stages (typed hand-offs in ``stages/photo_types.py``): read the photo (EXIF turned, any mode) and align it
(``stages/photo_align``: the largest face, its 478 landmarks, the person / face / hair masks, one camera by PnP on the
rig's landmarks, the generator's crop convention) -> fit the rig to the one view and complete what the photo does not
show (``stages/photo_fit``: landmarks + silhouette; the texture from the photo, its mirror and the re-coloured
template, blended; the hair layer from the hair mask) -> generate views around the head (``stages/multiview``: the
completed head rendered from FaceLift's six views by default, a user's command, or a local learned model) ->
Gaussians bound to the fitted rig, trained on those views (the avatar's training) -> the rigged GLB (52 ARKit
targets, the built-in clips) and the report page. Output folder::

    input.png            the photo as read (EXIF orientation applied)
    aligned.png          the aligned crop the generator takes
    fit_overlay.png      detected (green) and fitted (red) landmarks over the photo | the fitted head over the photo
    views/               the generated capture (images with masks, opencv_cameras.json)
    renders/, contact_sheet.png   generated view | the avatar's render | error, for every generated view
    avatar/              the avatar folder (headforge animate / export read it)
    head.glb             the rigged head (headforge export --format glb writes the same)
    turntable.gif, expressions_sheet.png, photo_sheet.png (input | fit | generated views | renders | turning strip)
    metrics.json         stage times, landmark reprojection, view PSNR; then report.html

The whole folder is built in a staging folder beside ``DIR`` and moved in at the end (``atomic_directory``): a
failed run leaves nothing that looks complete, and ``--overwrite`` replaces a previous output only once the new one is
whole. Every input (the photo, the rig, the generator spec and view set, the clips) is read and checked first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from headforge.atomic import atomic_directory, check_output_path
from headforge.captures.images import write_image
from headforge.errors import InputError, Interrupted
from headforge.locks import output_lock
from headforge.stages.photo_align import PhotoAlignConfig
from headforge.stages.photo_types import AlignConvention
from headforge.validation import Checked, Count, ImageSide

__all__ = ["BUILTIN_PHOTO", "PhotoJobConfig", "PhotoRun", "load_photo", "run_photo_job"]

BUILTIN_PHOTO = "builtin:astronaut"  # scikit-image's portrait (skimage.data.astronaut(), public domain, NASA)


@dataclass(frozen=True)
class PhotoJobConfig(Checked):
    photo: str = BUILTIN_PHOTO
    out: Path = Path("outputs/astronaut")
    rig: str = "builtin"
    generator: str = "prior"  # prior | external:CMD | model:PATH
    views: str = "facelift6"  # facelift6 | sphere32 | a camera file
    convention: AlignConvention = AlignConvention.FACELIFT
    resolution: ImageSide = 256  # generated views and training
    steps: Count = 500
    face_points: Count = 8000
    turntable_frames: Count = 24
    clips: tuple[str, ...] = ("builtin:blink", "builtin:smile", "builtin:talk", "builtin:head_turn")
    overwrite: bool = False
    progress: bool = True
    align: PhotoAlignConfig = field(default_factory=PhotoAlignConfig)


@dataclass(frozen=True)
class PhotoRun:
    out: Path
    metrics: dict


def load_photo(spec: str):
    """``builtin:astronaut`` or a photo file -> ``captures.photo.PhotoImage`` (read and checked)."""
    from headforge.captures.photo import photo_from_array, read_photo

    if spec == BUILTIN_PHOTO:
        from skimage import data

        return photo_from_array(data.astronaut().astype(np.float32) / 255.0, source=None)
    if spec.startswith("builtin:"):
        raise InputError(f"no built-in photo {spec!r}", fix=f"use {BUILTIN_PHOTO} or a photo file")
    return read_photo(Path(spec))


class _Clock:
    def __init__(self, progress: bool):
        self.seconds: dict[str, float] = {}
        self.progress = progress

    def run(self, name: str, what: str, fn, *args, **kwargs):
        if self.progress:
            print(f"[photo] {name}: {what}", flush=True)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        return out


def run_photo_job(cfg: PhotoJobConfig) -> PhotoRun:
    """Check every input, then build the whole output folder in a staging folder that becomes ``cfg.out``."""
    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.pipeline.fit_rig_job import template_texture
    from headforge.representations.rig.clips import check_clip_for_rig, read_clip
    from headforge.stages.multiview_base import parse_generator_spec, parse_view_spec

    start = time.perf_counter()
    out = check_output_path(cfg.out, directory=True)
    with output_lock(out):
        if out.exists() and not cfg.overwrite:
            raise InputError("output directory already exists", path=out,
                             fix="choose another --out or pass --overwrite")
        photo = load_photo(cfg.photo)
        spec = parse_rig_spec(cfg.rig)
        rig = load_rig(spec)
        generator, views = parse_generator_spec(cfg.generator), parse_view_spec(cfg.views)
        clips = [read_clip(c) for c in cfg.clips]
        for clip in clips:
            check_clip_for_rig(clip, rig)
        try:
            with atomic_directory(out, overwrite=cfg.overwrite) as stage:
                metrics = _build(cfg, photo, rig, cfg.rig, template_texture(spec), generator, views, clips, stage,
                                 start)
        except Interrupted as stopped:
            raise stopped.checkpoint_lost("`headforge photo` trains in a staging folder, removed when it stops; "
                                          "run it again" + (f" ({out} is unchanged)" if out.exists() else "")) \
                from None
    return PhotoRun(out, metrics)


def _build(cfg: PhotoJobConfig, photo, rig, rig_spec: str, template, generator_spec, view_spec, clips, stage: Path,
           start: float) -> dict:
    from dataclasses import replace

    from headforge.pipeline.photo_outputs import finish_outputs
    from headforge.stages.multiview import PriorConfig, make_generator
    from headforge.stages.photo_align import align_photo
    from headforge.stages.photo_fit import fit_photo

    clock = _Clock(cfg.progress)
    write_image(stage / "input.png", photo.rgb.numpy() if isinstance(photo.rgb, torch.Tensor) else photo.rgb)
    aligned = clock.run("align", "face, landmarks, masks, camera", align_photo, photo, rig,
                        replace(cfg.align, convention=cfg.convention))
    write_image(stage / "aligned.png", aligned.image.numpy())
    fit = clock.run("fit", f"{rig_spec} to one view, texture and hair completed", fit_photo, aligned, rig, rig_spec,
                    template_texture=template)
    generator = make_generator(generator_spec, prior=PriorConfig(views=view_spec, resolution=cfg.resolution))
    capture = clock.run("generate", f"{generator_spec} views ({view_spec})", generator.generate, aligned,
                        fit.avatar(), stage / "views")
    return finish_outputs(cfg, aligned, fit, capture, clips, stage, clock, start)
