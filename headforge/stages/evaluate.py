"""Stage: score any reconstruction on held-out views, and make its pictures.

Method-agnostic: a reconstruction is evaluated through a ``RenderFn`` (cameras, background ->
rgb [B, H, W, 3], alpha [B, H, W]). Metrics compare the render and the ground truth, both over the
same background (white, unless the method learned one): PSNR and SSIM of the whole image, and PSNR
inside the mask (``psnr_masked``) where masks exist. LPIPS only when its weights are already local.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torch import Tensor

from headforge.atomic import atomic_path
from headforge.captures.images import write_image
from headforge.geometry.camera_rigs import spherical_directions
from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at
from headforge.metrics import lpips_alex, lpips_status, psnr, ssim
from headforge.stages.views import ViewBatch, composite
from headforge.viz.sheets import contact_sheet, error_map, save_sheet

RenderFn = Callable[[Cameras, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ViewScore:
    view: int
    psnr: float
    ssim: float
    psnr_masked: float | None


@dataclass(frozen=True)
class Evaluation:
    psnr: float  # means over the held-out views
    ssim: float
    psnr_masked: float | None
    lpips: float | None
    lpips_note: str
    per_view: tuple[ViewScore, ...]
    renders: Tensor  # [B, H, W, 3]
    targets: Tensor  # [B, H, W, 3]


def evaluate(render_fn: RenderFn, views: ViewBatch, background: Tensor, *, chunk: int = 1) -> Evaluation:
    preds = []
    with torch.no_grad():
        for s in range(0, len(views), chunk):
            rgb, _ = render_fn(views.cameras[list(range(s, min(s + chunk, len(views))))], background)
            preds.append(rgb.clamp(0, 1).cpu())
    pred = torch.cat(preds)
    target = composite(views.images, views.alphas, background.cpu()).clamp(0, 1)
    p = psnr(pred, target)
    s = ssim(pred, target)
    pm = psnr(pred, target, views.alphas) if views.alphas is not None else None
    status = lpips_status()
    lp = float(lpips_alex(pred, target).mean()) if status.available else None
    scores = tuple(ViewScore(v, float(p[k]), float(s[k]), None if pm is None else float(pm[k]))
                   for k, v in enumerate(views.indices))
    return Evaluation(float(p.mean()), float(s.mean()), None if pm is None else float(pm.mean()), lp,
                      status.reason, scores, pred, target)


NOT_EVALUATED = "no held-out views: nothing was scored (the capture's split holds out no view)"


def evaluation_record(ev: Evaluation | None) -> dict:
    """The scores' part of ``metrics.json``; without held-out views every score is null and a note says why."""
    if ev is None:
        return {"psnr": None, "ssim": None, "psnr_masked": None, "lpips": None, "lpips_note": NOT_EVALUATED,
                "num_test_views": 0, "per_view": [], "evaluation_note": NOT_EVALUATED}
    return {"psnr": ev.psnr, "ssim": ev.ssim, "psnr_masked": ev.psnr_masked, "lpips": ev.lpips,
            "lpips_note": ev.lpips_note, "num_test_views": len(ev.per_view),
            "per_view": [asdict(v) for v in ev.per_view]}


def write_contact_sheet(path: Path, ev: Evaluation, max_rows: int = 8) -> Path:
    rows = [[ev.targets[k].numpy(), ev.renders[k].numpy(), error_map(ev.renders[k].numpy(), ev.targets[k].numpy())]
            for k in range(min(max_rows, len(ev.per_view)))]
    labels = [f"view {v.view}: {v.psnr:.1f} dB" for v in ev.per_view[:max_rows]]
    return save_sheet(path, contact_sheet(rows, column_titles=["ground truth", "render", "|error| (0-0.2)"],
                                          row_labels=labels, tile_height=192))


def write_renders(out_dir: Path, ev: Evaluation) -> list[str]:
    """``renders/test_NNNN.png`` for every scored view and ``contact_sheet.png``; -> the names written."""
    (out_dir / "renders").mkdir(exist_ok=True)
    for k, v in enumerate(ev.per_view):
        write_image(out_dir / "renders" / f"test_{v.view:04d}.png", ev.renders[k].numpy())
    write_contact_sheet(out_dir / "contact_sheet.png", ev)
    return ["renders/", "contact_sheet.png"]


def orbit_cameras(reference: Cameras, centre: Tensor, distance: float, frames: int = 36,
                  elevation_deg: float = 10.0) -> Cameras:
    """A turntable: ``frames`` cameras on a ring around ``centre`` (+y up), intrinsics of ``reference[0]``."""
    az = torch.arange(frames, dtype=torch.float32) * (360.0 / frames)
    dirs = spherical_directions(az, torch.full_like(az, elevation_deg))
    eye = centre + dirs * distance
    w2c = look_at(eye, centre.expand_as(eye), torch.tensor([0.0, 1.0, 0.0]).expand_as(eye))
    r = reference[0]
    return Cameras.create(w2c, float(r.fx), float(r.fy), float(r.cx), float(r.cy), int(r.width), int(r.height))


def write_turntable(path: Path, render_fn: RenderFn, cameras: Cameras, background: Tensor, fps: int = 12) -> Path:
    frames = []
    with torch.no_grad():
        for i in range(len(cameras)):
            rgb, _ = render_fn(cameras[[i]], background)
            frames.append((rgb[0].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))
    with atomic_path(path) as tmp:
        imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    return path


def finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x
