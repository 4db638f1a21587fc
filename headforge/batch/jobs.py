"""The jobs a batch item can run: the CLI commands themselves, so an item's options are the command's options, with
the same declared types and ranges (``headforge.validation``), and the item builds the same config classes.

Each :class:`JobSpec` says which parameter takes the item's ``input``, whether the job continues from a checkpoint
(``--resume``), which file it writes last (so a finished output is recognised), and where its pictures are.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from headforge.cli_avatar import avatar, photo
from headforge.cli_capture import fit_rig, reconstruct, render_capture
from headforge.cli_export import export


class JobKind(enum.StrEnum):
    PHOTO = "photo"
    RECONSTRUCT = "reconstruct"
    FIT_RIG = "fit-rig"
    AVATAR = "avatar"
    EXPORT = "export"
    RENDER_CAPTURE = "render-capture"


# Options the batch sets itself; an item may not give them.
BATCH_OWNED = frozenset({"out", "overwrite", "resume"})


@dataclass(frozen=True)
class JobSpec:
    kind: JobKind
    command: Callable[..., None]
    input_param: str  # the command's positional parameter the item's ``input`` fills
    resumable: bool  # trains with checkpoints in OUT/checkpoints and takes --resume
    last_file: str | None  # written last by the job (None: the whole output folder appears at once)
    renders: tuple[str, ...]  # pictures of the result, best first (globs in the output), for the thumbnail
    links: tuple[tuple[str, str], ...]  # (label, glob) of files the index links to
    headline: tuple[str, ...] = ()  # dotted keys of the metrics file shown in the index
    metrics_file: str = "metrics.json"
    input_is_path: bool = True  # False: a string that may also name a built-in (photo's builtin:astronaut)

    @property
    def name(self) -> str:
        return self.kind.value

    def parameters(self) -> dict[str, tuple[Any, Any]]:
        """The options an item may give: name -> (annotation, default)."""
        return dict(_parameters(self.kind))

    def uses_gpu(self, options: dict[str, Any], cluster_has_gpu: bool) -> bool:
        """Whether the item asks for a GPU: jobs with a ``device`` option, on cuda (auto: when there is one)."""
        if "device" not in self.parameters():
            return False
        device = str(options.get("device", self.parameters()["device"][1]))
        return device == "cuda" or (device == "auto" and cluster_has_gpu)


TURNTABLE = ("turntable", "turntable.gif")
JOBS: dict[JobKind, JobSpec] = {spec.kind: spec for spec in (
    JobSpec(JobKind.PHOTO, photo, "photo", resumable=False, last_file="metrics.json",
            renders=("turntable.gif", "renders/*.png", "photo_sheet.png"), input_is_path=False,
            headline=("landmark_median_photo_px", "views_psnr", "num_gaussians", "seconds.total"),
            links=(("report", "report.html"), ("glb", "head.glb"), TURNTABLE, ("sheet", "photo_sheet.png"))),
    JobSpec(JobKind.RECONSTRUCT, reconstruct, "capture", resumable=True, last_file="metrics.json",
            renders=("turntable.gif", "turntable*.png", "contact_sheet.png"),
            headline=("psnr", "psnr_masked", "ssim", "num_gaussians", "seconds"),
            links=(("report", "report.html"), ("glb", "*.glb"), TURNTABLE, ("sheet", "contact_sheet.png"))),
    JobSpec(JobKind.FIT_RIG, fit_rig, "capture", resumable=False, last_file="rig_fit.json",
            renders=("overlay_sheet.png",), headline=("summary.landmark_median_px", "summary.silhouette_iou",
                                                      "summary.heldout_psnr_face_db", "wall_seconds"),
            links=(("report", "report.html"), ("glb", "fitted.glb"), ("sheet", "overlay_sheet.png"))),
    JobSpec(JobKind.AVATAR, avatar, "capture", resumable=True, last_file="metrics.json",
            renders=("turntable.gif", "renders/*.png", "contact_sheet.png"),
            headline=("trained_frames.psnr_masked", "held_out_frames.psnr_masked", "num_gaussians", "seconds.total"),
            links=(("report", "report.html"), TURNTABLE, ("sheet", "contact_sheet.png"),
                   ("expressions", "expressions_sheet.png"))),
    JobSpec(JobKind.EXPORT, export, "run", resumable=False, last_file="export.json",
            renders=(), links=(("glb", "*.glb"), ("vrm", "*.vrm"), ("spz", "*.spz")), metrics_file="export.json",
            headline=("kind", "seconds")),
    JobSpec(JobKind.RENDER_CAPTURE, render_capture, "mesh_or_rig", resumable=False, last_file=None,
            renders=("images/*.png", "timesteps/*/images/*.png", "images/*/*.png"), input_is_path=False,
            links=(("cameras", "transforms.json"),), metrics_file=""),
)}

# Jobs whose output a report page can be written for (headforge report), after the job, by the item.
REPORTED = frozenset({JobKind.RECONSTRUCT, JobKind.FIT_RIG, JobKind.AVATAR})


@cache
def _parameters(kind: JobKind) -> tuple[tuple[str, tuple[Any, Any]], ...]:
    spec = JOBS[kind]
    hints = typing.get_type_hints(spec.command, include_extras=True)
    out = []
    for name, p in inspect.signature(spec.command).parameters.items():
        if name in BATCH_OWNED or name == spec.input_param:
            continue
        out.append((name, (hints.get(name, Any), p.default)))
    return tuple(out)


def job_names() -> str:
    return ", ".join(k.value for k in JobKind)


def headline_metrics(spec: JobSpec, output: Path) -> dict[str, Any]:
    """The job's headline numbers (and short strings) from its metrics file; keys it lacks are left out."""
    import json

    if not spec.metrics_file or not (output / spec.metrics_file).is_file():
        return {}
    data = json.loads((output / spec.metrics_file).read_text())
    out: dict[str, Any] = {}
    for dotted in spec.headline:
        value: Any = data
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[dotted] = value
    return out


def first_match(folder: Path, globs: tuple[str, ...]) -> Path | None:
    """The first file (sorted) matching the first glob that matches anything under ``folder``."""
    for pattern in globs:
        hits = sorted(p for p in folder.glob(pattern) if p.is_file())
        if hits:
            return hits[0]
    return None
