"""Command line, the asset commands: ``headforge export | report`` (registered in ``cli.py``'s command table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

from headforge.pipeline.export_source import ExportFormat
from headforge.representations.splat_io import SplatFrame
from headforge.stages.rig_export import HairExport


def export(run: Annotated[Path, tyro.conf.Positional], out: Path,
           format: tuple[ExportFormat, ...] = (ExportFormat.ALL,), clip: tuple[str, ...] | None = None,
           hair: HairExport = HairExport.SPLATS, single_mesh: bool = False, quantize_targets: bool = False,
           ply_frame: SplatFrame | None = None, name: str = "head", author: str = "", licence_url: str = "",
           overwrite: bool = False) -> None:
    """Export a run for engines and viewers: rigged GLB (52 ARKit morph targets, skin, clips), VRM 1.0, OBJ, PLY,
    .splat, .spz. Writes OUT/ as one folder (complete or absent) with export.json last.

    Args:
        run: A folder `headforge avatar`, `fit-rig`, `reconstruct` (or `run`) or `extract-mesh` wrote.
        out: Output folder.
        format: glb, vrm, obj, ply, splat, spz, or all (every format the run can give).
        clip: Animation clips for the rigged GLB / VRM: builtin:NAME (blink, smile, talk, head_turn) or a clip JSON
            (default: the four built-ins).
        hair: The avatar's hair and clothing layers in the rigged GLB: splats (KHR_gaussian_splatting nodes) or none.
        single_mesh: Eyes and teeth inside the one skinned head mesh instead of rigid meshes under their joints
            (Unreal plays morph targets on skinned meshes only; ICT-FaceKit's lower teeth have shapes).
        quantize_targets: Morph targets as 16-bit integers (steps of 30.5 um): 2-3x smaller for dense shape sets
            like ICT-FaceKit's, but the file then requires KHR_mesh_quantization (Blender, three.js and glTFast
            read it; a viewer without it refuses the file).
        ply_frame: Frame of splat PLY / .splat files: opencv (x right, y down, z forward: what 3DGS viewers expect,
            the default) or head (headforge's head frame, +y up).
        name: The asset's name (VRM meta).
        author: VRM meta author.
        licence_url: VRM meta licence URL (default: the VRM Public License 1.0).
        overwrite: Replace an existing output folder (the old one stays if this export fails).
    """
    from headforge.pipeline.export_job import run_export
    from headforge.pipeline.export_source import DEFAULT_CLIPS, ExportJob

    result = run_export(ExportJob(run=run, out=out, formats=format, clips=DEFAULT_CLIPS if clip is None else clip,
                                  hair=hair, single_mesh=single_mesh, quantize_targets=quantize_targets,
                                  ply_frame=ply_frame, name=name, author=author, licence_url=licence_url,
                                  overwrite=overwrite))
    sizes = ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in result.files.items())
    print(f"wrote {result.out} from the {result.source.kind} run: {sizes}")


def report(run: Annotated[Path, tyro.conf.Positional], out: Path, glb: Path | None = None,
           viewer_js: Path | None = None, overwrite: bool = False) -> None:
    """Write one self-contained HTML page of a run: metrics, pictures, a 3D view of a GLB (orbit, one slider per
    morph target, clip playback).

    Args:
        run: Output folder of headforge reconstruct, fit-rig, avatar or run.
        out: The HTML file to write.
        glb: GLB to show (default: an avatar's or rig fit's rigged head, exported for the page; else the first
            RUN/**/*.glb).
        viewer_js: three.js bundle to inline (default: $HEADFORGE_VIEWER_JS, then the checkout's
            .cache/clients/viewer/three_bundle.js, else the page loads three.js 0.187.0 from jsDelivr).
        overwrite: Replace an existing file.
    """
    from headforge.pipeline.report_job import write_report

    print("\n".join(write_report(run, out, glb, viewer_js, overwrite=overwrite).lines()))
