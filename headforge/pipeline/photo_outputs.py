"""The second half of ``headforge photo``: Gaussians bound to the photo's fitted rig, trained on the generated views,
then the avatar folder, the rigged GLB, the pictures (``photo_sheet.png`` among them), ``metrics.json`` and the report.

The generated views show the completed head in the photo's expression and pose (the fit's one frame), so the avatar
trains in that frame and its neutral head comes from the rig (``Avatar.neutral_params``), as for a capture. The
views are the only truth there is: every generated view is scored against the avatar's render of it (how well the
Gaussians reproduce the generator's views), not held out.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from headforge import __version__
from headforge.atomic import write_bytes, write_text
from headforge.captures.capture import Capture
from headforge.captures.images import write_image
from headforge.captures.inspect import summarize
from headforge.geometry.rays import project_points
from headforge.pipeline.avatar_file import save_avatar
from headforge.pipeline.avatar_views import evaluate_frames, render_avatar, write_pictures
from headforge.pipeline.rig_fit_file import RigFitRecord
from headforge.representations.rig.head_rig import LandmarkSet
from headforge.stages.avatar import Avatar, BoundSplats
from headforge.stages.avatar_init import AvatarInitConfig, initial_bound_splats
from headforge.stages.avatar_train import AvatarTrainConfig, train_avatar
from headforge.stages.evaluate import orbit_cameras
from headforge.stages.gaussian_train import scene_scale
from headforge.stages.photo_types import AlignedPhoto, PhotoFit
from headforge.stages.rig_params import world_vertices
from headforge.stages.views import load_views
from headforge.viz.sheets import contact_sheet, save_sheet

__all__ = ["finish_outputs", "fit_overlay", "photo_sheet"]


def fit_overlay(aligned: AlignedPhoto, fit: PhotoFit) -> np.ndarray:
    """[H, 2W, 3]: the photo with detected (green) and fitted (red) landmarks | the fitted head over the photo."""
    from headforge.representations.rig.deform import landmarks as rig_landmarks
    from headforge.stages.avatar_layers import composite_render

    photo = aligned.image.numpy().copy()
    cam = aligned.camera
    verts = world_vertices(fit.rig, fit.params)[0].float()
    pts = rig_landmarks(fit.rig, verts[None], LandmarkSet.MEDIAPIPE_478)[0]
    fitted = project_points(cam, pts[None])[0][0]
    left = photo.copy()
    for colour, xy in (((0.1, 0.9, 0.2), aligned.landmarks), ((0.95, 0.1, 0.1), fitted)):
        for x, y in xy.numpy():
            i, j = int(y), int(x)
            left[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] = colour
    rgb, alpha = composite_render(fit.avatar(), fit.params, cam, torch.ones(3), world=True)
    a = 0.6 * alpha[0].numpy()
    right = (1 - a) * photo + a * rgb[0].numpy()
    return np.concatenate([left, right], 1).clip(0, 1)


def photo_sheet(stage: Path, aligned: AlignedPhoto, overlay: np.ndarray, generated: torch.Tensor,
                rendered: torch.Tensor, turning: list[np.ndarray], tile: int = 192) -> None:
    """input | fit overlay, then generated views, the avatar's renders of the same views, and a turning strip."""
    half = overlay.shape[1] // 2
    rows = [[aligned.image.numpy(), overlay[:, :half], overlay[:, half:]],
            [g.numpy() for g in generated], [r.numpy() for r in rendered], turning]
    labels = ["input | fit", "generated views", "avatar renders", "turning"]
    save_sheet(stage / "photo_sheet.png", contact_sheet(rows, row_labels=labels, tile_height=tile))


def finish_outputs(cfg, aligned: AlignedPhoto, fit: PhotoFit, capture: Capture, clips, stage: Path, clock,
                   start: float) -> dict:
    from headforge.pipeline.report_job import write_report
    from headforge.stages.rig_export import ExportHead, RigGlbConfig, build_rigged_glb

    overlay = fit_overlay(aligned, fit)
    write_image(stage / "fit_overlay.png", overlay)
    work = capture.at_resolution(cfg.resolution)
    every = list(range(len(work)))
    views = load_views(work, every)
    rig, params = fit.rig, fit.params
    verts = world_vertices(rig, params)[0].float()
    gen = torch.Generator().manual_seed(0)
    faces = initial_bound_splats(rig, verts, params.similarity, fit.texture, None, None,
                                 AvatarInitConfig(face_points=cfg.face_points), gen)
    init = BoundSplats.concat([faces, fit.hair]) if len(fit.hair) else faces
    trained = clock.run("train", f"{len(init)} bound Gaussians, {cfg.steps} steps on {len(every)} views",
                        train_avatar, rig, params, init, views, torch.zeros(len(every), dtype=torch.long),
                        AvatarTrainConfig(steps=cfg.steps), checkpoint_dir=stage / "checkpoints", resume=False,
                        scene_scale=scene_scale(views), progress=cfg.progress)
    avatar = Avatar(rig, fit.rig_spec, trained.params, fit.texture, trained.gaussians, trained.sh_degree)
    scores = clock.run("evaluate", "the avatar against every generated view", evaluate_frames, avatar, work, every,
                       {0: 0}, set(), trained.background)
    record = RigFitRecord(fit.rig_spec, rig.source, rig.licence, rig.num_vertices, trained.params, (0,),
                          (("photo",),), LandmarkSet.MEDIAPIPE_478, {"landmark_median_px": fit.landmark_median_px})
    save_avatar(avatar, stage / "avatar", record)
    summary = summarize(work)
    pictures = write_pictures(avatar, work, scores, stage, summary, trained.background, cfg.turntable_frames)
    glb = clock.run("export", "rigged GLB", build_rigged_glb, ExportHead.of_avatar(avatar), clips, RigGlbConfig())
    write_bytes(stage / "head.glb", glb)
    outputs = ["input.png", "aligned.png", "fit_overlay.png", "views/", "avatar/", "head.glb", *pictures]
    # the sheet: the generated views and the avatar's renders of them, and a turning strip
    ev = scores.evaluation
    centre = params.similarity.translation.float()
    distance = summary.distance_median if math.isfinite(summary.distance_median) else 1.0
    cams = orbit_cameras(work.cameras, centre, distance, 8)
    with torch.no_grad():
        turning = [render_avatar(avatar, None, cams[[i]], torch.ones(3))[0][0].clamp(0, 1).numpy()
                   for i in range(len(cams))]
    photo_sheet(stage, aligned, overlay, ev.targets, ev.renders, turning)
    outputs.append("photo_sheet.png")
    shutil.rmtree(stage / "checkpoints")
    metrics = {"job": "photo", "photo": cfg.photo, "rig": fit.rig_spec, "generator": cfg.generator,
               "views": cfg.views, "convention": str(aligned.convention), "focal": aligned.focal_source,
               "notes": list(aligned.notes), "landmark_median_px": fit.landmark_median_px,
               "landmark_median_photo_px": fit.landmark_median_px * aligned.crop.side / aligned.size,
               "num_views": len(every), "resolution": cfg.resolution, "gaussians": avatar.gaussians.counts(),
               "num_gaussians": len(avatar.gaussians), "steps": trained.steps,
               "views_psnr": ev.psnr, "views_psnr_masked": ev.psnr_masked, "views_ssim": ev.ssim,
               "seconds": {**clock.seconds}, "outputs": outputs}
    metrics["seconds"]["total"] = round(time.perf_counter() - start, 2)
    write_text(stage / "metrics.json", json.dumps({"headforge": __version__, **metrics}, indent=1))
    write_report(stage, stage / "report.html", stage / "head.glb")
    return metrics
