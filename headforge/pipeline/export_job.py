"""Job: ``headforge export RUN --format glb|vrm|obj|ply|splat|spz|all --out DIR``: :func:`run_export`.

What a run can give is ``export_source.py`` (the kinds of run and their formats). Here: what the job reads from a run
(:func:`load_exportable`) and how each format is written (:func:`writers`). Everything a format needs is loaded and
checked up front (the rig and its fit, the avatar, the splats, the mesh, the clips against the rig), so that the job
fails before its output folder exists. Writers take the staging folder and
return the files they wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headforge import __version__
from headforge.atomic import atomic_directory, check_output_path, write_bytes, write_text
from headforge.errors import InputError
from headforge.locks import output_lock
from headforge.pipeline.export_source import (
    DEFAULT_CLIPS,
    ExportFormat,
    ExportJob,
    ExportResult,
    ExportSource,
    RunKind,
    find_source,
    resolve_formats,
)
from headforge.representations.gaussians import Splats
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.clips import Clip

__all__ = ["Exportable", "load_exportable", "rigged_glb_of_run", "run_export", "writers"]

HEAD, SPLATS = "head", "splats"  # file stems: the rigged / mesh head, the Gaussians


@dataclass(frozen=True, eq=False)
class Exportable:
    source: ExportSource
    head: object | None = None  # stages.rig_export.ExportHead for rig fits and avatars
    mesh: TexturedMesh | None = None  # the neutral textured head (rig frame) or the extracted field mesh
    splats: Splats | None = None  # the reconstruction's splats, or the avatar's Gaussians posed neutral (rig frame)
    clips: tuple[Clip, ...] = ()

    def conventions(self, formats: tuple[ExportFormat, ...]) -> dict[str, str]:
        rig = self.source.kind in (RunKind.AVATAR, RunKind.RIG_FIT)
        frame = "head frame (metres, +y up, face toward +z, +x the subject's left)" if rig else "the capture's world"
        out = {}
        for fmt in formats:
            if fmt in (ExportFormat.GLB, ExportFormat.VRM):
                out[str(fmt)] = "glTF axes = " + frame
            elif fmt is ExportFormat.SPZ:
                out[str(fmt)] = "RUB (right, up, back) = " + frame
            elif fmt in (ExportFormat.PLY, ExportFormat.SPLAT) and self.splats is not None:
                out[str(fmt)] = "see the PLY header comment; .splat like the PLY"
            else:
                out[str(fmt)] = frame
        return out


def _clips(job: ExportJob, rig) -> tuple[Clip, ...]:
    from headforge.representations.rig.clips import check_clip_for_rig, read_clip

    out = []
    for spec in job.clips:
        clip = read_clip(spec)
        check_clip_for_rig(clip, rig)
        out.append(clip)
    return tuple(out)


def load_exportable(source: ExportSource, job: ExportJob) -> Exportable:
    from headforge.stages.rig_export import ExportHead

    rigged = {ExportFormat.GLB, ExportFormat.VRM} & set(job.formats) or ExportFormat.ALL in job.formats
    if source.kind is RunKind.AVATAR:
        from headforge.pipeline.avatar_file import load_avatar
        from headforge.stages.avatar import avatar_vertices, pose_avatar
        from headforge.stages.rig_texture import rig_textured_mesh

        avatar = load_avatar(source.folder)
        verts = avatar_vertices(avatar, avatar.neutral_params(), world=False)[0].float()
        return Exportable(source, ExportHead.of_avatar(avatar),
                          rig_textured_mesh(avatar.rig, verts, avatar.texture),
                          pose_avatar(avatar, world=False).detach(), _clips(job, avatar.rig) if rigged else ())
    if source.kind is RunKind.RIG_FIT:
        from headforge.pipeline.fitted_rig import load_fitted_rig
        from headforge.stages.rig_params import rig_vertices

        fit = load_fitted_rig(source.folder)
        verts = rig_vertices(fit.rig, fit.params.posed())[0].float()
        return Exportable(source, ExportHead(fit.rig, fit.params, fit.texture), fit.mesh(verts),
                          clips=_clips(job, fit.rig) if rigged else ())
    if source.kind is RunKind.SPLATS:
        from headforge.representations.splat_io import load_splats_ply

        ply = source.run if source.run.is_file() else source.folder / "splats.ply"
        return Exportable(source, splats=load_splats_ply(ply))
    from headforge.representations.mesh_io import load_mesh

    mesh_file = source.folder / "mesh" / "mesh.obj"
    if not mesh_file.is_file():
        raise InputError("this neural-field run has no extracted mesh (mesh/mesh.obj)", path=source.run,
                         fix=f"extract it first: headforge extract-mesh {source.folder}")
    return Exportable(source, mesh=load_mesh(mesh_file))


def rigged_glb_of_run(run: Path) -> tuple[bytes, RunKind]:
    """The rigged GLB ``headforge export RUN --format glb`` writes, in memory (for the report's 3D view)."""
    from headforge.stages.rig_export import RigGlbConfig, build_rigged_glb

    source = find_source(run)
    if source.kind not in (RunKind.AVATAR, RunKind.RIG_FIT):
        raise InputError(f"a {source.kind} run has no rigged head", path=run, fix="give an avatar or fit-rig run")
    data = load_exportable(source, ExportJob(run, run / "unused", formats=(ExportFormat.GLB,), clips=DEFAULT_CLIPS))
    return build_rigged_glb(data.head, data.clips, RigGlbConfig()), source.kind


def writers(data: Exportable, job: ExportJob, formats: tuple[ExportFormat, ...]
            ) -> dict[ExportFormat, Callable[[Path], list[Path]]]:
    """Format -> a function writing it into the staging folder (returns the files written)."""
    from headforge.representations.mesh_io import save_glb, save_obj, save_ply
    from headforge.representations.splat_io import (
        SplatFrame,
        save_splats_dot_splat,
        save_splats_glb,
        save_splats_ply,
        save_splats_spz,
    )

    frame = SplatFrame(job.ply_frame or SplatFrame.OPENCV)
    glb_cache: dict[str, bytes] = {}

    def rigged_glb(hair: str) -> bytes:
        from headforge.stages.rig_export import HairExport, RigGlbConfig, build_rigged_glb

        if hair not in glb_cache:
            glb_cache[hair] = build_rigged_glb(data.head, data.clips, RigGlbConfig(
                hair=HairExport(hair), split_parts=not job.single_mesh, quantize_targets=job.quantize_targets))
        return glb_cache[hair]

    def glb(stage: Path) -> list[Path]:
        if data.head is not None:
            write_bytes(stage / f"{HEAD}.glb", rigged_glb(job.hair))
            return [stage / f"{HEAD}.glb"]
        if data.splats is not None:
            return [save_splats_glb(data.splats, stage / f"{SPLATS}.glb")]
        return [save_glb(data.mesh, stage / f"{HEAD}.glb")]

    def vrm(stage: Path) -> list[Path]:
        from headforge.stages.export_vrm import VrmMeta, vrm_from_rigged_glb

        meta = VrmMeta(name=job.name, authors=(job.author or "headforge user",),
                       **({"license_url": job.licence_url} if job.licence_url else {}))
        # VRM tools know meshes, not KHR_gaussian_splatting points: the VRM carries the mesh head only
        write_bytes(stage / f"{HEAD}.vrm", vrm_from_rigged_glb(rigged_glb("none"), meta))
        return [stage / f"{HEAD}.vrm"]

    def obj(stage: Path) -> list[Path]:
        path = save_obj(data.mesh, stage / f"{HEAD}.obj")
        return [p for p in (path, path.with_suffix(".mtl"), path.with_suffix(".png")) if p.exists()]

    def ply(stage: Path) -> list[Path]:
        if data.splats is not None:
            return [save_splats_ply(data.splats, stage / f"{SPLATS}.ply", frame=frame)]
        return [save_ply(data.mesh, stage / f"{HEAD}.ply")]

    table = {
        ExportFormat.GLB: glb, ExportFormat.VRM: vrm, ExportFormat.OBJ: obj, ExportFormat.PLY: ply,
        ExportFormat.SPLAT: lambda stage: [save_splats_dot_splat(data.splats, stage / f"{SPLATS}.splat", frame=frame)],
        ExportFormat.SPZ: lambda stage: [save_splats_spz(data.splats, stage / f"{SPLATS}.spz")],
    }
    return {fmt: table[fmt] for fmt in formats}


def check_options(job: ExportJob, data_kind: RunKind, formats: tuple[ExportFormat, ...]) -> None:
    """Options that only some formats read are refused where none of the asked formats reads them."""
    rig_run = data_kind in (RunKind.AVATAR, RunKind.RIG_FIT)
    rigged = ExportFormat.GLB in formats and rig_run or ExportFormat.VRM in formats
    if tuple(job.clips) != DEFAULT_CLIPS and not rigged:
        raise InputError("--clip only goes into a rigged GLB or VRM, and none is written here", path=job.run,
                         fix="drop --clip, or export a rig fit / avatar with --format glb or vrm")
    if job.ply_frame is not None and not ({ExportFormat.PLY, ExportFormat.SPLAT} & set(formats)
                                          and data_kind in (RunKind.AVATAR, RunKind.SPLATS)):
        raise InputError("--ply-frame sets the frame of splat PLY / .splat files, and none is written here",
                         path=job.run, fix="drop --ply-frame, or ask for --format ply / splat of a splat run or avatar")
    if (job.single_mesh or job.quantize_targets) and not rigged:
        raise InputError("--single-mesh / --quantize-targets shape the rigged GLB / VRM, and none is written here",
                         path=job.run, fix="drop them, or export a rig fit / avatar with --format glb or vrm")
    if (job.author or job.licence_url) and ExportFormat.VRM not in formats:
        raise InputError("--author / --licence-url are VRM meta data, and no VRM is written", path=job.run,
                         fix="add --format vrm or drop them")


def run_export(job: ExportJob) -> ExportResult:
    """Read and check the run and every option, then write all formats into ``job.out`` as one folder."""
    source = find_source(job.run)
    formats = resolve_formats(source, tuple(ExportFormat(f) for f in job.formats))
    check_options(job, source.kind, formats)
    check_output_path(job.out, directory=True)
    if job.out.exists() and not job.overwrite:
        raise InputError("the export folder already exists", path=job.out,
                         fix="choose another --out or pass --overwrite")
    data = load_exportable(source, job)  # every input read and checked (clips too) before anything is written
    write: dict[ExportFormat, Callable[[Path], list[Path]]] = writers(data, job, formats)
    seconds: dict[str, float] = {}
    with output_lock(job.out), atomic_directory(job.out, overwrite=job.overwrite) as stage:
        written: list[Path] = []
        for fmt in formats:
            t0 = time.perf_counter()
            written += write[fmt](stage)
            seconds[str(fmt)] = round(time.perf_counter() - t0, 3)
        files = {p.name: p.stat().st_size for p in written}
        doc = {"format": "headforge.export", "version": 1, "headforge": __version__, "kind": str(source.kind),
               "source": str(source.run), "formats": [str(f) for f in formats], "files": files, "seconds": seconds,
               "conventions": data.conventions(formats)}
        write_text(stage / "export.json", json.dumps(doc, indent=2))
    return ExportResult(job.out, source, files, seconds)
