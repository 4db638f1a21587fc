"""The README's main job on the built-in default input.

subject mesh (the built-in sample head, or ``--mesh``) -> render-capture stage (32-view sphere rig)
-> Gaussian reconstruction (``reconstruct`` job, ``fast`` preset) -> held-out metrics, splat exports,
contact sheets, turntable. Layout of ``out/``::

    capture/            the rendered capture (+ capture_sheet.png: RGB | mask | depth)
    cameras.png         camera frusta of the capture
    reconstruction/     metrics.json, splats.ply/.splat/.glb, contact_sheet.png, turntable.gif, ...
    run.json            what ran, how long, the headline numbers (written last)

The whole directory is built in a staging directory beside ``out`` and moved in at the end
(``atomic_directory``): ``--overwrite`` replaces an earlier output only once the new one is complete.
The job holds ``OUT.lock`` (:func:`headforge.locks.output_lock`) throughout and reads and checks its inputs
(mesh, preset, options) before it writes anything. It trains inside the staging directory, so a stop by
SIGINT/SIGTERM keeps no checkpoint (:class:`headforge.errors.Interrupted` says so); the job starts again.
The rendered capture goes to the reconstruction in memory (``reconstruct``'s core), with the split
the capture was read back with (held-out views spread over azimuth).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from headforge import __version__
from headforge.atomic import atomic_directory, check_output_path, write_text
from headforge.captures.inspect import plot_frusta, summarize
from headforge.errors import InputError, Interrupted
from headforge.geometry.camera_rigs import RigConfig, RigKind
from headforge.geometry.head_frame import HeadFrameSpec
from headforge.locks import output_lock
from headforge.pipeline.reconstruct import (
    Reconstruction,
    ReconstructOptions,
    check_job_inputs,
    prepare,
    run_prepared,
)
from headforge.representations.mesh import TexturedMesh
from headforge.stages.render_capture import RenderCaptureConfig, render_capture
from headforge.validation import Checked, Count
from headforge.viz.sheets import colorize, contact_sheet, save_sheet


@dataclass(frozen=True)
class MainJobConfig(Checked):
    out: Path = Path("outputs/sample_head")
    mesh: Path | None = None  # default: the built-in sample head
    rig: RigConfig = field(default_factory=lambda: RigConfig(kind=RigKind.SPHERE32, resolution=256))
    head_frame: HeadFrameSpec = field(default_factory=lambda: HeadFrameSpec(head_width_m=0.155))
    preset: str = "fast"
    steps: Count | None = None  # overrides the preset
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class MainJobResult:
    out_dir: Path
    capture_dir: Path
    reconstruction_dir: Path
    reconstruction: Reconstruction
    seconds: float


def load_subject(mesh_path: Path | None, spec: HeadFrameSpec) -> tuple[TexturedMesh, HeadFrameSpec | None]:
    """The subject mesh and how to bring it into the head frame (None: the sample head already is)."""
    if mesh_path is None:
        from headforge.assets.sample_head import load_sample_head

        return load_sample_head().mesh, None
    from headforge.representations.mesh_io import load_mesh

    return load_mesh(mesh_path), spec


def capture_contact_sheet(capture, columns: int = 8) -> np.ndarray:
    """Rows of RGB (on white), alpha and depth for up to ``columns`` evenly spaced views."""
    picks = np.linspace(0, len(capture) - 1, min(columns, len(capture))).round().astype(int)
    rows = []
    for i in picks:
        view = capture.load(int(i))
        a = view.alpha.numpy() if view.alpha is not None else np.ones(view.rgb.shape[:2], np.float32)
        row = [np.concatenate([view.rgb.numpy(), a[..., None]], -1), a]
        if capture.views[i].depth_path is not None:
            d = capture.load_depth(int(i)).numpy()
            row.append(colorize(d, valid=d > 0))
        rows.append(row)
    return contact_sheet(rows, column_titles=["RGB", "mask", "depth"], row_labels=[f"view {i}" for i in picks],
                         tile_height=160)


def run_main_job(cfg: MainJobConfig) -> MainJobResult:
    start = time.perf_counter()
    out = check_output_path(cfg.out, directory=True)
    options = ReconstructOptions(preset=cfg.preset, resolution=cfg.rig.resolution, steps=cfg.steps,
                                 progress=cfg.progress)
    with output_lock(out):
        if out.exists() and not cfg.overwrite:
            raise InputError("output directory already exists", path=out,
                             fix="choose another --out or pass --overwrite")
        check_job_inputs(options)  # before the mesh is rendered, and before anything is written
        mesh, spec = load_subject(cfg.mesh, cfg.head_frame)
        try:
            with atomic_directory(out, overwrite=cfg.overwrite) as stage:
                recon, seconds = _build(cfg, mesh, spec, options, out, stage, start)
        except Interrupted as stopped:
            raise stopped.checkpoint_lost("`headforge run` trains in a staging folder, removed when it stops; "
                                          "run it again" + (f" ({out} is unchanged)" if out.exists() else "")) \
                from None
    recon = replace(recon, out_dir=out / "reconstruction")
    return MainJobResult(out, out / "capture", out / "reconstruction", recon, seconds)


def _build(cfg: MainJobConfig, mesh: TexturedMesh, spec: HeadFrameSpec | None, options: ReconstructOptions,
           out: Path, stage: Path, start: float) -> tuple[Reconstruction, float]:
    """Everything the job writes, into the staging directory ``stage`` that becomes ``out``."""
    rendered = render_capture(mesh, RenderCaptureConfig(rig=cfg.rig, head_frame=spec), stage / "capture",
                              progress=cfg.progress)
    save_sheet(stage / "capture_sheet.png", capture_contact_sheet(rendered.capture))
    plot_frusta(rendered.capture, stage / "cameras.png")
    job = prepare(rendered.capture, options, source=str(out / "capture"))  # as run_reconstruct would say
    recon = run_prepared(job, stage / "reconstruction")
    seconds = time.perf_counter() - start
    m = recon.to_json()
    headline = {k: m[k] for k in ("psnr", "psnr_masked", "ssim", "num_gaussians", "steps", "train_seconds",
                                  "device")}
    final_source = out / rendered.capture.source_path.relative_to(stage)  # where it will be, not the stage
    capture_record = replace(summarize(rendered.capture), source_path=str(final_source)).to_json()
    record = {"headforge": __version__, "job": "sample-head: render capture + reconstruct gaussians",
              "seconds": round(seconds, 2), "input": str(cfg.mesh) if cfg.mesh else "built-in sample head",
              "rig": json.loads(json.dumps(asdict(cfg.rig), default=str)), "preset": cfg.preset,
              "capture": capture_record, "reconstruction": headline,
              "outputs": ["capture/", "capture_sheet.png", "cameras.png", "reconstruction/"]}
    write_text(stage / "run.json", json.dumps(record, indent=2))
    return recon, seconds
