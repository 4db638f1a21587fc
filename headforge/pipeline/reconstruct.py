"""Job: capture -> reconstruction -> held-out metrics, pictures and exports.

``out/`` receives ``checkpoints/`` while training (each written atomically, so a crash leaves the last
one usable) and, only once everything succeeded, the final outputs: ``splats.ply``, ``splats.splat``,
``splats.glb``, ``contact_sheet.png``, ``turntable.gif``, ``renders/`` and ``metrics.json`` (last).
They are staged in ``out/final.partial-<pid>/`` and moved in together.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

import torch

from headforge import __version__
from headforge.captures.formats import read_capture
from headforge.captures.images import write_image
from headforge.captures.inspect import summarize
from headforge.config_io import load_config
from headforge.errors import InputError
from headforge.stages.evaluate import (
    evaluate,
    orbit_cameras,
    write_contact_sheet,
    write_metrics,
    write_turntable,
)
from headforge.stages.gaussian_train import GaussianTrainConfig, render_splats, train_gaussians
from headforge.stages.views import load_views


class Method(StrEnum):
    GAUSSIANS = "gaussians"


@dataclass(frozen=True)
class GaussianPreset:
    resolution: int = 512  # longest image side used for training and evaluation
    train: GaussianTrainConfig = field(default_factory=GaussianTrainConfig)


@dataclass(frozen=True)
class ReconstructConfig:
    capture: Path
    out: Path
    method: Method = Method.GAUSSIANS
    preset: str = "default"  # configs/gaussians_<preset>.toml, or a path to a TOML file
    resolution: int | None = None  # overrides the preset
    steps: int | None = None  # overrides the preset
    test_every: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_ply: Path | None = None  # continue from exported splats instead of initialising
    resume: bool = False  # continue from the last checkpoint in out/checkpoints
    overwrite: bool = False
    turntable_frames: int = 36
    progress: bool = True


@dataclass(frozen=True)
class ReconstructResult:
    out_dir: Path
    metrics: dict
    seconds: float


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device",
                         fix="use --device cpu (or auto), or install a CUDA build of torch")
    return device


def load_preset(cfg: ReconstructConfig) -> GaussianPreset:
    name = cfg.preset
    preset = load_config(GaussianPreset, name if name.endswith(".toml") else f"gaussians_{name}")
    if cfg.resolution is not None or cfg.steps is not None:
        train = preset.train
        if cfg.steps is not None:
            train = GaussianTrainConfig(**{**train.__dict__, "steps": cfg.steps})
        preset = GaussianPreset(cfg.resolution or preset.resolution, train)
    return preset


def prepare_out_dir(cfg: ReconstructConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.resume:
        if not cfg.overwrite:
            raise InputError("output directory already exists", path=out,
                             fix="pass --overwrite to replace it, --resume to continue its training, or another --out")
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out


def run_reconstruct(cfg: ReconstructConfig) -> ReconstructResult:
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    preset = load_preset(cfg)
    capture = read_capture(cfg.capture, test_every=cfg.test_every).at_resolution(preset.resolution)
    if not capture.split.test:
        raise InputError("the capture has no held-out views to evaluate on", path=cfg.capture,
                         fix="use --test-every N with N <= the number of views")
    summary = summarize(capture)
    train = load_views(capture, capture.split.train, progress=cfg.progress)
    test = load_views(capture, capture.split.test)
    init = None
    if cfg.init_ply is not None:
        from headforge.representations.splat_io import load_splats_ply

        init = load_splats_ply(cfg.init_ply)
    out = prepare_out_dir(cfg)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    result = train_gaussians(train, bounds, preset.train, checkpoint_dir=out / "checkpoints", resume=cfg.resume,
                             init=init, device=device, progress=cfg.progress)
    splats, degree = result.splats.detach(), result.sh_degree

    def render_fn(cams, background):
        r = render_splats(splats, cams, degree, background.to(splats.means))
        return r.rgb, r.alpha[..., 0]

    ev = evaluate(render_fn, test, result.background)
    stage = out / f"final.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        from headforge.representations.splat_io import save_splats_dot_splat, save_splats_glb, save_splats_ply

        save_splats_ply(splats, stage / "splats.ply")
        save_splats_dot_splat(splats, stage / "splats.splat")
        save_splats_glb(splats, stage / "splats.glb")
        (stage / "renders").mkdir()
        for k, v in enumerate(ev.per_view):
            write_image(stage / "renders" / f"test_{v.view:04d}.png", ev.renders[k].numpy())
        write_contact_sheet(stage / "contact_sheet.png", ev)
        centre = torch.tensor(summary.centre, dtype=torch.float32)
        write_turntable(stage / "turntable.gif", render_fn,
                        orbit_cameras(test.cameras, centre, summary.distance_median, cfg.turntable_frames),
                        result.background)
        seconds = time.perf_counter() - start
        metrics = {"method": cfg.method.value, "preset": cfg.preset, "steps": result.steps,
                   "train_seconds": round(result.seconds, 2), "seconds": round(seconds, 2), "device": device,
                   "num_gaussians": len(splats), "sh_degree": degree, "resolution": [summary.width, summary.height],
                   "capture": str(cfg.capture), "num_train_views": len(train), "headforge": __version__,
                   "history": [list(h) for h in result.history]}
        write_metrics(stage / "metrics.json", ev, metrics)
        for item in sorted(stage.iterdir(), key=lambda p: p.name == "metrics.json"):
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    import json

    return ReconstructResult(out, json.loads((out / "metrics.json").read_text()), time.perf_counter() - start)
