"""What ``headforge export`` can read: the kinds of run, the formats each gives, the job's options and result.

The job itself (loading, the writers, the one output folder) is ``export_job.py``.

What a run can give (:class:`RunKind`, found by :func:`find_source` from the files the run wrote):

============  ===========================================  =====================================================
kind          recognised by                                 formats
============  ===========================================  =====================================================
``avatar``    ``avatar.json`` (or ``avatar/avatar.json``)   glb (rigged head + hair / clothing splats), vrm, obj,
                                                            ply, splat, spz (every Gaussian, neutral, rig frame)
``rig-fit``   ``rig_fit.json`` + ``texture.png``            glb (rigged head), vrm, obj, ply (mesh with colours)
``splats``    ``splats.ply`` (or ``reconstruction/``)       ply, splat, spz, glb (``KHR_gaussian_splatting``)
``field``     ``field.pt`` with ``mesh/`` from extract-mesh obj, ply, glb (the extracted textured mesh)
============  ===========================================  =====================================================

Asking for a format the run cannot give is an error naming what it can (``all`` takes every one it can). Every
file goes into a staging folder that becomes ``DIR`` only when all are written (``atomic_directory``: a failed
export leaves no folder, and with ``--overwrite`` the previous one stays until the new one is complete), under
``DIR.lock``; ``export.json`` (kind, source, files with sizes, the axis conventions) is written last.
Conventions: GLB and VRM are glTF (metres, +y up, face toward +z: the head frame); OBJ / mesh PLY are the head frame
(rig runs) or the capture's world (field runs); splat PLY and .splat use the 3DGS frame by default (x right, y down,
z forward, ``--ply-frame head`` keeps the head frame; the PLY's header comment says which); .spz is RUB (= head frame).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from headforge.errors import InputError
from headforge.io.files import is_missing

__all__ = ["ExportFormat", "ExportJob", "ExportResult", "ExportSource", "RunKind", "find_source", "resolve_formats"]


class ExportFormat(enum.StrEnum):
    GLB = "glb"
    VRM = "vrm"
    OBJ = "obj"
    PLY = "ply"
    SPLAT = "splat"
    SPZ = "spz"
    ALL = "all"


class RunKind(enum.StrEnum):
    AVATAR = "avatar"
    RIG_FIT = "rig-fit"
    SPLATS = "splats"
    FIELD = "field"


DEFAULT_CLIPS = ("builtin:blink", "builtin:smile", "builtin:talk", "builtin:head_turn")
F = ExportFormat
FORMATS: dict[RunKind, tuple[ExportFormat, ...]] = {
    RunKind.AVATAR: (F.GLB, F.VRM, F.OBJ, F.PLY, F.SPLAT, F.SPZ),
    RunKind.RIG_FIT: (F.GLB, F.VRM, F.OBJ, F.PLY),
    RunKind.SPLATS: (F.PLY, F.SPLAT, F.SPZ, F.GLB),
    RunKind.FIELD: (F.OBJ, F.PLY, F.GLB),
}
WHY_NOT: dict[RunKind, str] = {
    RunKind.RIG_FIT: "a rig fit is a mesh with no Gaussians; build an avatar (headforge avatar --rig-fit) for splats",
    RunKind.SPLATS: "a Gaussian reconstruction has no mesh or rig; fit a rig (headforge fit-rig) and build an "
                    "avatar for rigged formats",
    RunKind.FIELD: "a neural-field run has a mesh, no Gaussians or rig; reconstruct with --method gaussians for "
                   "splats, fit a rig for rigged formats",
    RunKind.AVATAR: "",
}


@dataclass(frozen=True)
class ExportSource:
    kind: RunKind
    folder: Path  # the folder the exported data is read from (the avatar/ folder, the reconstruction folder, ...)
    run: Path  # what the user named


def _first(path: Path, *candidates: str) -> Path | None:
    return next((path / c for c in candidates if (path / c).is_file()), None)


def find_source(run: str | Path) -> ExportSource:
    """What ``run`` (a folder a headforge command wrote, or its ``rig_fit.json`` / ``splats.ply``) holds."""
    run = Path(run)
    if is_missing(run):
        raise InputError("the run to export does not exist", path=run, fix="give a folder a headforge command wrote")
    if run.is_file():
        if run.name == "rig_fit.json":
            return ExportSource(RunKind.RIG_FIT, run.parent, run)
        if run.suffix.lower() == ".ply":
            return ExportSource(RunKind.SPLATS, run.parent, run)
        raise InputError("not something headforge exports (a run folder, rig_fit.json or a splat .ply)", path=run,
                         fix="give the output folder of reconstruct, extract-mesh, fit-rig or avatar")
    if (hit := _first(run, "avatar.json", "avatar/avatar.json")) is not None:
        return ExportSource(RunKind.AVATAR, hit.parent, run)
    if (run / "rig_fit.json").is_file():
        return ExportSource(RunKind.RIG_FIT, run, run)
    if (hit := _first(run, "splats.ply", "reconstruction/splats.ply")) is not None:
        return ExportSource(RunKind.SPLATS, hit.parent, run)
    if (hit := _first(run, "field.pt", "reconstruction/field.pt")) is not None:
        return ExportSource(RunKind.FIELD, hit.parent, run)
    raise InputError("not a headforge run: no avatar.json, rig_fit.json, splats.ply or field.pt in it", path=run,
                     fix="give the output folder of headforge reconstruct, extract-mesh, fit-rig or avatar")


@dataclass(frozen=True)
class ExportJob:
    run: Path
    out: Path
    formats: tuple[ExportFormat, ...] = (ExportFormat.ALL,)
    clips: tuple[str, ...] = DEFAULT_CLIPS
    hair: str = "splats"  # stages.rig_export.HairExport: the avatar's hair / clothing as splat nodes, or none
    quantize_targets: bool = False  # morph targets as int16 (KHR_mesh_quantization, required by the file)
    single_mesh: bool = False  # eyes and teeth inside the one skinned head mesh (Unreal morphs skinned meshes only)
    ply_frame: str | None = None  # splat PLY / .splat frame (splat_io.SplatFrame; None: the 3DGS frame, opencv)
    name: str = "head"  # the asset's name (GLB scene, VRM meta)
    author: str = ""  # VRM meta authors (default: the user running headforge is not known: "headforge user")
    licence_url: str = ""  # VRM meta licenseUrl (default: the VRM Public License 1.0 page)
    overwrite: bool = False


@dataclass(frozen=True)
class ExportResult:
    out: Path
    source: ExportSource
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    seconds: dict[str, float] = field(default_factory=dict)  # format -> seconds


def resolve_formats(source: ExportSource, asked: tuple[ExportFormat, ...]) -> tuple[ExportFormat, ...]:
    """The formats to write, in a fixed order; a format the run cannot give is an error naming those it can."""
    can = FORMATS[source.kind]
    if not asked:
        raise InputError("no --format given", fix=f"give one or more of {', '.join(can)} (or all)")
    if ExportFormat.ALL in asked:
        return can
    bad = [str(f) for f in asked if f not in can]
    if bad:
        raise InputError(f"a {source.kind} run cannot be exported as {', '.join(bad)} ({WHY_NOT[source.kind]})",
                         path=source.run, fix=f"ask for one of {', '.join(can)} (or all)")
    return tuple(f for f in can if f in asked)
