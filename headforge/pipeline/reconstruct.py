"""Job: capture -> reconstruction (Gaussians or a neural field) -> held-out metrics, pictures, exports.

``out/`` receives ``checkpoints/`` while training (each written atomically, so a crash leaves the last
one usable) and, only once everything succeeded, the final outputs: the method's files (``splats.ply``,
``splats.splat``, ``splats.glb`` or ``field.pt``), ``renders/``, ``contact_sheet.png``,
``turntable.gif`` and ``metrics.json`` (last). They are staged in ``out/final.partial-<pid>/`` and moved
in together.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from headforge import __version__
from headforge.captures.formats import read_capture
from headforge.captures.images import write_image
from headforge.captures.inspect import summarize
from headforge.errors import InputError
from headforge.pipeline.methods import Method, load_preset, train_field_method, train_gaussian_method
from headforge.stages.evaluate import evaluate, orbit_cameras, write_contact_sheet, write_metrics, write_turntable
from headforge.stages.views import load_views


@dataclass(frozen=True)
class ReconstructConfig:
    capture: Path
    out: Path
    method: Method = Method.GAUSSIANS
    sdf: bool = False  # neural fields: VolSDF geometry instead of density
    preset: str = "default"  # configs/<gaussians|fields>_<preset>.toml, or a path to a TOML file
    resolution: int | None = None  # overrides the preset
    steps: int | None = None  # overrides the preset
    test_every: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_ply: Path | None = None  # Gaussians: continue from exported splats instead of initialising
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


def prepare_out_dir(cfg: ReconstructConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.resume:
        if not cfg.overwrite:
            raise InputError("output directory already exists", path=out,
                             fix="pass --overwrite to replace it, --resume to continue its training, or another --out")
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out


def check_options(cfg: ReconstructConfig) -> None:
    gaussians = cfg.method == Method.GAUSSIANS
    if gaussians and cfg.sdf:
        raise InputError("--sdf applies to the neural-field methods only", fix="use --method hashgrid|triplane|trigrid")
    if not gaussians and cfg.init_ply is not None:
        raise InputError("--init-ply applies to --method gaussians only", path=cfg.init_ply, fix="drop --init-ply")


def run_reconstruct(cfg: ReconstructConfig) -> ReconstructResult:
    start = time.perf_counter()
    check_options(cfg)
    device = resolve_device(cfg.device)
    preset = load_preset(cfg.method, cfg.preset, resolution=cfg.resolution, steps=cfg.steps, sdf=cfg.sdf)
    capture = read_capture(cfg.capture, test_every=cfg.test_every).at_resolution(preset.resolution)
    if not capture.split.test:
        raise InputError("the capture has no held-out views to evaluate on", path=cfg.capture,
                         fix="use --test-every N with N <= the number of views")
    summary = summarize(capture)
    train = load_views(capture, capture.split.train, progress=cfg.progress)
    test = load_views(capture, capture.split.test)
    out = prepare_out_dir(cfg)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    common = dict(checkpoint_dir=out / "checkpoints", resume=cfg.resume, device=device, progress=cfg.progress)
    if cfg.method == Method.GAUSSIANS:
        trained = train_gaussian_method(train, bounds, preset.train, init_ply=cfg.init_ply, **common)
    else:
        trained = train_field_method(train, bounds, preset.train, **common)
    ev = evaluate(trained.render_fn, test, trained.background)
    stage = out / f"final.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        files = trained.write_exports(stage)
        (stage / "renders").mkdir()
        for k, v in enumerate(ev.per_view):
            write_image(stage / "renders" / f"test_{v.view:04d}.png", ev.renders[k].numpy())
        write_contact_sheet(stage / "contact_sheet.png", ev)
        centre = torch.tensor(summary.centre, dtype=torch.float32)
        write_turntable(stage / "turntable.gif", trained.render_fn,
                        orbit_cameras(test.cameras, centre, summary.distance_median, cfg.turntable_frames),
                        trained.background)
        metrics = {"method": cfg.method.value, "preset": cfg.preset, "steps": trained.steps,
                   "train_seconds": round(trained.train_seconds, 2),
                   "seconds": round(time.perf_counter() - start, 2), "device": device, **trained.metrics,
                   "resolution": [summary.width, summary.height], "capture": str(cfg.capture),
                   "num_train_views": len(train), "outputs": files, "headforge": __version__,
                   "history": [list(h) for h in trained.history]}
        write_metrics(stage / "metrics.json", ev, metrics)
        for item in sorted(stage.iterdir(), key=lambda p: p.name == "metrics.json"):
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ReconstructResult(out, json.loads((out / "metrics.json").read_text()), time.perf_counter() - start)
