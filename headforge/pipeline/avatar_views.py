"""Scores and pictures of a trained avatar: held-out views per frame, contact sheet, turntable, expressions.

Held-out views are scored frame by frame (each posed with its frame's rig state) over a white background:
PSNR, SSIM and the PSNR inside the capture's mask, pooled separately for the frames the Gaussians were trained on
and for the frames kept out of training (``--test-frames``: expressions the Gaussians never saw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from headforge.captures.capture import Capture
from headforge.captures.images import write_image
from headforge.stages.avatar import Avatar, pose_avatar
from headforge.stages.avatar_sheets import expressions_sheet
from headforge.stages.evaluate import Evaluation, evaluate, orbit_cameras, write_renders, write_turntable
from headforge.stages.gaussian_train import render_splats
from headforge.stages.views import load_views

__all__ = ["FrameScores", "evaluate_frames", "render_avatar", "write_pictures"]


@dataclass(frozen=True, eq=False)
class FrameScores:
    evaluation: Evaluation | None  # every held-out view (held-out frames first), None when there is none
    frames: tuple[int, ...]  # the timestep of each view in ``evaluation``
    held_out: tuple[bool, ...]  # whether that timestep was kept out of training

    def _pool(self, held: bool) -> dict:
        ev = self.evaluation
        if ev is None:
            return {"psnr": None, "psnr_masked": None, "ssim": None, "num_views": 0}
        k = [i for i, h in enumerate(self.held_out) if h == held]
        if not k:
            return {"psnr": None, "psnr_masked": None, "ssim": None, "num_views": 0}
        mean = lambda xs: None if any(x is None for x in xs) else float(sum(xs) / len(xs))  # noqa: E731
        return {"psnr": mean([ev.per_view[i].psnr for i in k]),
                "psnr_masked": mean([ev.per_view[i].psnr_masked for i in k]),
                "ssim": mean([ev.per_view[i].ssim for i in k]), "num_views": len(k)}

    def to_json(self) -> dict:
        ev = self.evaluation
        views = [] if ev is None else [
            {"view": v.view, "frame": t, "held_out_frame": h, "psnr": v.psnr, "psnr_masked": v.psnr_masked,
             "ssim": v.ssim} for v, t, h in zip(ev.per_view, self.frames, self.held_out, strict=True)]
        return {"trained_frames": self._pool(False), "held_out_frames": self._pool(True),
                "lpips": None if ev is None else ev.lpips, "per_view": views}


def render_avatar(avatar: Avatar, b: int | None, cameras, background: Tensor) -> tuple[Tensor, Tensor]:
    """Render frame ``b`` of the avatar's fitted state (None: neutral) into world cameras -> (rgb, alpha)."""
    params = None if b is None else avatar.params.frame(b)
    splats = pose_avatar(avatar, params)
    out = render_splats(splats, cameras, avatar.sh_degree, background)
    return out.rgb, out.alpha


def evaluate_frames(avatar: Avatar, capture: Capture, test: list[int], slot: dict[int, int], held: set[int],
                    background: Tensor) -> FrameScores:
    frames = capture.frames.tolist()
    order = sorted(set(frames[i] for i in test), key=lambda t: (t not in held, t))
    evals, ts, hs = [], [], []
    for t in order:
        idx = [i for i in test if frames[i] == t]
        views = load_views(capture, idx)
        evals.append(evaluate(lambda cams, bg, b=slot[t]: render_avatar(avatar, b, cams, bg), views, background))
        ts += [t] * len(idx)
        hs += [t in held] * len(idx)
    if not evals:
        return FrameScores(None, (), ())
    per_view = tuple(v for e in evals for v in e.per_view)
    masked = [v.psnr_masked for v in per_view]
    lp = [e.lpips for e in evals]
    ev = Evaluation(sum(v.psnr for v in per_view) / len(per_view), sum(v.ssim for v in per_view) / len(per_view),
                    None if any(m is None for m in masked) else sum(masked) / len(masked),
                    None if any(x is None for x in lp) else sum(x * len(e.per_view) for x, e in zip(lp, evals,
                                                                                                    strict=True))
                    / len(per_view), evals[0].lpips_note, per_view,
                    torch.cat([e.renders for e in evals]), torch.cat([e.targets for e in evals]))
    return FrameScores(ev, tuple(ts), tuple(hs))


def write_pictures(avatar: Avatar, capture: Capture, scores: FrameScores, out_dir: Path, summary, background: Tensor,
                   turntable_frames: int) -> list[str]:
    pictures = [] if scores.evaluation is None else write_renders(out_dir, scores.evaluation)
    centre = avatar.params.similarity.translation.float()
    distance = summary.distance_median if math.isfinite(summary.distance_median) else 1.0
    cams = orbit_cameras(capture.cameras, centre, distance, turntable_frames)
    write_turntable(out_dir / "turntable.gif", lambda c, bg: render_avatar(avatar, None, c, bg), cams, background)
    pictures.append("turntable.gif")
    # the Gaussians alone (no mesh under them), so a gap in the avatar shows
    write_image(out_dir / "expressions_sheet.png", expressions_sheet(avatar, mesh_face=False))
    pictures.append("expressions_sheet.png")
    return pictures
