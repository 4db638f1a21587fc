"""The extract-mesh stage: a radiance field -> a textured, engine-ready mesh folder, written atomically.

:func:`extract_mesh_stage` runs marching cubes, repair + decimation, UV unwrap and the texture bake
(:mod:`mesh_extract`, :mod:`mesh_cleanup`, :mod:`uv_unwrap`, :mod:`texture_bake`), measures the result
(:func:`headforge.stages.mesh_quality.mesh_report`) and writes ``mesh.obj`` + ``mesh.mtl`` + ``mesh.png``,
``mesh.ply`` and ``mesh.glb`` into ``out_dir`` through :func:`headforge.atomic.atomic_directory`: the folder
appears complete or not at all, and with ``overwrite`` a failed run leaves the previous folder as it was.
The folder is written under ``OUT.lock`` (:func:`headforge.locks.output_lock`): a second writer is refused.
Every stage's wall time is logged as it ends (``cfg.progress``) and returned in :class:`MeshExtraction`.
"""

from __future__ import annotations

from pathlib import Path

from headforge.atomic import atomic_directory
from headforge.locks import output_lock
from headforge.stages.mesh_extract import SurfaceField, export_mesh, field_device, field_geometry, iso_level
from headforge.stages.mesh_quality import mesh_report
from headforge.stages.mesh_types import MeshExtractConfig, MeshExtraction, MeshFiles, StageClock
from headforge.stages.texture_bake import bake_onto_uvs, unwrap_uvs

MESH_NAME = "mesh"  # file stem of every file in the folder


def extract_mesh_stage(field: SurfaceField, cfg: MeshExtractConfig, out_dir: str | Path, *,
                       overwrite: bool = False) -> MeshExtraction:
    """Field -> ``out_dir``/mesh.{obj,mtl,png,ply,glb}; returns paths, the quality report and stage times.

    Raises :class:`headforge.errors.InputError` if ``out_dir`` exists and ``overwrite`` is false (before any
    work), and the extraction's own errors (:class:`headforge.stages.mesh_extract.EmptyFieldError`, ...).
    """
    out_dir = Path(out_dir)
    clock = StageClock(progress=cfg.progress)
    with output_lock(out_dir), atomic_directory(out_dir, overwrite=overwrite) as staging:
        mesh = field_geometry(field, cfg, clock)
        with clock.stage("unwrap", f"{mesh.num_faces} triangles, {cfg.unwrap.value}"):
            mesh, method = unwrap_uvs(mesh, cfg)
        with clock.stage("bake", f"{cfg.texture_size} px, {cfg.bake_supersample ** 2} samples per texel"):
            mesh = bake_onto_uvs(mesh, field.color, cfg, device=field_device(field)).validate()
        with clock.stage("measure"):
            report = mesh_report(mesh)
        with clock.stage("write"):
            written = export_mesh(mesh, staging, MESH_NAME)
    files = MeshFiles(directory=out_dir, **{key: out_dir / path.name for key, path in written.items()})
    return MeshExtraction(files=files, report=report, unwrap=method,
                          level=iso_level(cfg, bool(getattr(field.cfg, "sdf", False))),
                          seconds=tuple(clock.seconds))
