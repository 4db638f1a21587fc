"""The main job on the built-in default input: render the sample head into a capture and show it.

Until reconstruction lands this is: subject mesh (the built-in sample head, or ``--mesh``) ->
render-capture stage -> contact sheet + camera plot + ``run.json``. The output directory appears
only when everything in it has been written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from headforge import __version__
from headforge.atomic import atomic_directory, write_text
from headforge.captures.inspect import plot_frusta, summarize
from headforge.geometry.head_frame import HeadFrameSpec
from headforge.geometry.rigs import RigConfig, RigKind
from headforge.representations.mesh import TexturedMesh
from headforge.stages.render_capture import RenderCaptureConfig, render_capture
from headforge.viz.sheets import colorize, contact_sheet, save_sheet


@dataclass(frozen=True)
class MainJobConfig:
    out: Path = Path("outputs/sample_head")
    mesh: Path | None = None  # default: the built-in sample head
    rig: RigConfig = field(default_factory=lambda: RigConfig(kind=RigKind.SPHERE32, resolution=256))
    head_frame: HeadFrameSpec = field(default_factory=lambda: HeadFrameSpec(head_width_m=0.155))
    overwrite: bool = False


@dataclass(frozen=True)
class MainJobResult:
    out_dir: Path
    capture_dir: Path
    contact_sheet: Path
    cameras_plot: Path
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
    rgb, alpha, depth = [], [], []
    from headforge.captures.images import read_image

    for i in picks:
        view = capture.load(int(i))
        a = view.alpha.numpy() if view.alpha is not None else np.ones(view.rgb.shape[:2], np.float32)
        rgb.append(np.concatenate([view.rgb.numpy(), a[..., None]], -1))
        alpha.append(a)
        if capture.views[i].depth_path is not None:
            d = read_image(capture.views[i].depth_path)[..., 0] * 65535 * capture.depth_unit
            depth.append(colorize(d, valid=d > 0))
    rows = [rgb, alpha] + ([depth] if depth else [])
    return contact_sheet([[r[k] for r in rows] for k in range(len(picks))], column_titles=["RGB", "mask", "depth"],
                         row_labels=[f"view {i}" for i in picks], tile_height=160)


def run_main_job(cfg: MainJobConfig, *, progress: bool = True) -> MainJobResult:
    start = time.perf_counter()
    mesh, spec = load_subject(cfg.mesh, cfg.head_frame)
    with atomic_directory(cfg.out, overwrite=cfg.overwrite) as stage:
        rendered = render_capture(mesh, RenderCaptureConfig(rig=cfg.rig, head_frame=spec), stage / "capture",
                                  progress=progress)
        sheet = save_sheet(stage / "contact_sheet.png", capture_contact_sheet(rendered.capture))
        plot = plot_frusta(rendered.capture, stage / "cameras.png")
        seconds = time.perf_counter() - start
        summary = summarize(rendered.capture)
        record = {"headforge": __version__, "job": "render-sample-capture", "seconds": round(seconds, 3),
                  "input": str(cfg.mesh) if cfg.mesh else "built-in sample head",
                  "rig": json.loads(json.dumps(asdict(cfg.rig), default=str)),
                  "capture": summary.to_json(), "outputs": ["capture/", sheet.name, plot.name]}
        write_text(stage / "run.json", json.dumps(record, indent=2))
    out = Path(cfg.out)
    return MainJobResult(out, out / "capture", out / "contact_sheet.png", out / "cameras.png", seconds)
