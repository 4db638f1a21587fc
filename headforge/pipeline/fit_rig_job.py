"""The file job behind ``headforge fit-rig``: read the capture and the rig, fit, write the results atomically.

Output folder (written in a staging folder that replaces ``--out`` only when everything succeeded, so a failed
or interrupted fit leaves no ``rig_fit.json`` and the previous output as it was):

    rig_fit.json (+ rig_fit_offsets.npy)  identity, per-frame expression and pose, the rig source (last)
    fitted.glb                            the textured fit of the first frame (glTF builder)
    fitted.obj / .mtl / .png              the same as OBJ
    texture.png                           the baked texture in the rig's atlas layout (stages/rig_texture.py),
                                          what `pipeline/fitted_rig.load_fitted_rig` reads back
    overlay_sheet.png                     detected vs fitted landmarks, mesh edges, per-view error map
    metrics.json                          landmark px median / p90, silhouette IoU, held-out masked PSNR of
                                          the face region, seconds per stage, per view and per frame
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headforge import __version__
from headforge.atomic import atomic_directory, check_output_path
from headforge.captures.formats import read_capture
from headforge.captures.images import write_image
from headforge.errors import InputError
from headforge.geometry.rays import project_points
from headforge.locks import output_lock
from headforge.pipeline.fit_rig import LANDMARK_SET, RigFit, default_config, fit_rig
from headforge.pipeline.rig_fit_file import TEXTURE_FILE, RigFitRecord, write_rig_fit
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh_io import save_glb, save_obj
from headforge.representations.rig.deform import landmarks
from headforge.stages.face_landmarks import to_srgb
from headforge.stages.rig_evaluate import region_pixels, uv_grid, visible_points
from headforge.stages.rig_texture import rig_textured_mesh
from headforge.validation import Checked, ImageSide, NonNegativeInt
from headforge.viz.fit_overlay import OverlayView, overlay_sheet

MAX_SHEET_VIEWS = 12


@dataclass(frozen=True)
class FitRigJob(Checked):
    capture: Path
    out: Path
    rig: str = "builtin"
    frames: str = "first"
    resolution: ImageSide = 512
    test_every: NonNegativeInt = 8
    offsets: bool = True
    cache_dir: Path | None = None  # landmark cache (default: OUT's parent/.headforge_cache)
    overwrite: bool = False


def run_fit_rig(job: FitRigJob, progress=print) -> tuple[RigFit, Path]:
    from headforge.assets.rigs import load_rig
    from headforge.representations.rig.sources import parse_rig_spec

    out = check_output_path(job.out, directory=True)
    with output_lock(out):
        if out.exists() and not job.overwrite:
            raise InputError("output directory already exists", path=out,
                             fix="pass --overwrite to replace it (when the new fit has finished), or another --out")
        spec = parse_rig_spec(job.rig)
        capture = read_capture(job.capture, test_every=job.test_every)
        rig = load_rig(spec)
        cfg = default_config(job.resolution, job.offsets)
        cache = job.cache_dir or out.parent / ".headforge_cache"
        start = time.perf_counter()
        fit = fit_rig(capture, rig, cfg, rig_spec=job.rig, frames=job.frames, cache_dir=cache, progress=progress,
                      template_texture=template_texture(spec))
        with atomic_directory(out, overwrite=job.overwrite) as stage:
            write_outputs(fit, capture.at_resolution(job.resolution), stage, time.perf_counter() - start)
    return fit, out


def template_texture(spec) -> torch.Tensor | None:
    """The albedo a rig's UVs carry: the sample head's texture for the built-in rig; none for the others."""
    from headforge.representations.rig.sources import RigSource

    if spec.source is RigSource.BUILTIN:
        from headforge.assets.sample_head import load_sample_head

        return load_sample_head().mesh.texture
    return None


def fit_record(fit: RigFit, capture) -> RigFitRecord:
    names = tuple(tuple(capture.cameras.name(i) for i in f.views) for f in fit.frames)
    return RigFitRecord(fit.rig_spec, fit.rig.source, fit.rig.licence, fit.rig.num_vertices, fit.params,
                        tuple(f.frame for f in fit.frames), names, fit.landmark_set, fit.summary())


def metrics_json(fit: RigFit, capture, seconds: float) -> dict:
    frames = []
    for f in fit.frames:
        lm = f.landmarks
        frames.append({
            "frame": f.frame, "landmark_median_px": lm.median_px, "landmark_p90_px": lm.p90_px,
            "landmark_iterations": lm.iterations, "landmark_converged": lm.converged,
            "views": {capture.cameras.name(i): {"landmark_median_px": _num(lm.view_median_px[k]),
                                                "landmark_p90_px": _num(lm.view_p90_px[k]),
                                                "silhouette_iou": _num(f.silhouette_iou[k])}
                      for k, i in enumerate(f.views)},
            "held_out": {capture.cameras.name(i): {"psnr_face_db": _num(f.heldout_psnr[k])}
                         for k, i in enumerate(f.test_views)}})
    det = fit.detections
    return {"headforge_version": __version__, "rig": {"spec": fit.rig_spec, "source": fit.rig.source,
                                                      "licence": fit.rig.licence},
            "landmark_set": str(LANDMARK_SET), "summary": fit.summary(), "wall_seconds": round(seconds, 3),
            "detection": {"views": len(det.detections), "with_face": len(det.usable), "no_face": list(det.skipped),
                          "cache_hits": det.cache_hits},
            "frames": frames}


def _num(x) -> float | None:
    v = float(x)
    return None if v != v else v


def write_outputs(fit: RigFit, capture, folder: Path, seconds: float) -> None:
    verts = fit.world_vertices(0).float()
    mesh = rig_textured_mesh(fit.rig, verts, fit.texture)
    save_glb(mesh, folder / "fitted.glb")
    save_obj(mesh, folder / "fitted.obj")
    write_image(folder / TEXTURE_FILE, fit.texture.texture.numpy())
    write_image(folder / "overlay_sheet.png", overlay_image(fit, capture))
    (folder / "metrics.json").write_text(json.dumps(metrics_json(fit, capture, seconds), indent=1) + "\n")
    write_rig_fit(fit_record(fit, capture), folder)  # last: its presence means the fit finished


def _sheet_views(frame, found: list[bool]) -> list[tuple[int, bool]]:
    """The held-out views, then train views with a detected face, then the others, up to MAX_SHEET_VIEWS."""
    test = [(i, True) for i in frame.test_views]
    train = sorted(frame.views, key=lambda i: not found[i])  # stable: capture order within each group
    return (test + [(i, False) for i in train])[:MAX_SHEET_VIEWS]


def overlay_image(fit: RigFit, capture) -> np.ndarray:
    frame = fit.frames[0]
    chosen = _sheet_views(frame, [d.found for d in fit.detections.detections])
    idx = [i for i, _ in chosen]
    cams = capture.cameras[idx]
    verts = fit.world_vertices(0).float()
    with torch.no_grad():
        grid = uv_grid(fit.rig, verts, cams)
        region = region_pixels(fit.rig, verts, cams)
        render = render_mesh(rig_textured_mesh(fit.rig, verts, fit.texture), cams, antialiased=False).rgb
        points = landmarks(fit.rig, verts.double()[None], LANDMARK_SET)[0]
        fitted2d, _ = project_points(cams.to(dtype=torch.float64), points)
        shown = visible_points(fit.rig, verts, cams, points, 0.005)  # hidden fitted landmarks are not drawn
        fitted2d = torch.where(shown[..., None], fitted2d, torch.full_like(fitted2d, float("nan")))
    detected = fit.detections.points2d()
    lm_err = dict(zip(frame.views, frame.landmarks.view_median_px.tolist(), strict=True))
    views = []
    for k, (i, held) in enumerate(chosen):
        view = capture.load(i)
        img = to_srgb(view.rgb, capture.colour_space)
        mask = region[k] & ((view.alpha if view.alpha is not None else torch.ones(img.shape[:2])) > 0.5)
        err = torch.where(mask, (render[k] - img).abs().mean(-1), torch.full(mask.shape, float("nan")))
        med = lm_err.get(i, float("nan"))
        if held:  # not fitted: its landmark error is measured here
            d = (fitted2d[k] - detected[i]).norm(dim=-1)
            med = float(d[torch.isfinite(d)].median()) if bool(torch.isfinite(d).any()) else float("nan")
        views.append(OverlayView(capture.cameras.name(i), img, grid[k], detected[i].float(), fitted2d[k].float(),
                                 err, med, held))
    s = fit.summary()
    title = (f"{fit.rig_spec or fit.rig.source}: landmarks median {s['landmark_median_px']:.2f} px, p90 "
             f"{s['landmark_p90_px']:.2f} px; silhouette IoU {s['silhouette_iou'] or float('nan'):.3f}; held-out "
             f"face PSNR {s['heldout_psnr_face_db'] or float('nan'):.2f} dB")
    return overlay_sheet(title, views)
