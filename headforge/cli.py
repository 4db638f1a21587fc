"""Command line: ``headforge run | extract-mesh | inspect | rig-sheet`` here; render-capture, reconstruct and fit-rig in
``cli_capture.py``, avatar and photo commands in ``cli_avatar.py``, export and report in ``cli_export.py``, batch in
``batch/command.py``. A user error (:class:`HeadforgeError`) prints one clear message and exits 2; nothing that looks
complete is left behind (every writer stages its output and renames it at the end). Closed sets are StrEnums, spelled
by value (``--rig sphere32``).

Exit status: 0 done; 2 a user error; 3 a batch finished with failed items (each reported); 1 a bug (``headforge:
internal error: ...`` and where to report it; the traceback with ``--debug`` or ``HEADFORGE_DEBUG=1``); 130 / 143
training stopped by SIGINT / SIGTERM, with a checkpoint and the command that continues it (elsewhere ctrl-C / SIGTERM
exit 130 / 143 with one line, after the staging folders and the output lock are cleaned up). Global options:
``--threads N``, ``--debug``, ``--version``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated

import tyro

from headforge import __version__
from headforge.batch.command import batch
from headforge.batch.driver import BatchIncomplete
from headforge.cli_avatar import animate, avatar, edit_texture, hair_swap, photo
from headforge.cli_capture import fit_rig, reconstruct, render_capture, scores_line
from headforge.cli_export import export, report
from headforge.errors import HeadforgeError, InputError, Interrupted, Terminated, raise_terminated
from headforge.geometry.camera_rigs import RigConfig, RigKind
from headforge.stages.mesh_types import GridResolution, TargetFaces, TextureSize
from headforge.validation import Count, ImageSide, NonNegativeInt, Seconds, checked_command
from headforge.viz.rig_sheet import TileSize


def run(out: Path = Path("outputs/sample_head"), mesh: Path | None = None, rig: RigKind = RigKind.SPHERE32,
        resolution: ImageSide = 256, preset: str = "fast", steps: Count | None = None, overwrite: bool = False) -> None:
    """Main job: render the built-in sample head (or --mesh) into a capture and reconstruct it as Gaussians.

    Args:
        out: Output directory.
        mesh: A textured mesh (OBJ/PLY/GLB) instead of the built-in sample head.
        rig: Camera rig.
        resolution: Image height in pixels (rendering, training and evaluation).
        preset: Reconstruction preset (fast, default, quality).
        steps: Training steps (overrides the preset).
        overwrite: Replace an existing output directory (once the new one is complete).
    """
    from headforge.pipeline.main_job import MainJobConfig, run_main_job

    result = run_main_job(MainJobConfig(out=out, mesh=mesh, rig=RigConfig(kind=rig, resolution=resolution),
                                        preset=preset, steps=steps, overwrite=overwrite))
    rec = result.reconstruction
    print(f"wrote {result.out_dir} in {result.seconds:.0f} s\n"
          f"  capture:        {result.capture_dir} (+ capture_sheet.png, cameras.png)\n"
          f"  reconstruction: {result.reconstruction_dir}: {scores_line(rec)}, {rec.summary.describe()}\n"
          f"  pictures:       {', '.join(rec.pictures)} (contact sheet: ground truth | render | error)")


def inspect(capture: Annotated[Path, tyro.conf.Positional],
            json_output: Annotated[bool, tyro.conf.arg(name="json")] = False, plot: Path | None = None,
            test_every: NonNegativeInt = 8) -> None:
    """Summarise a capture (nerfstudio, opencv_cameras.json, NeRSemble, COLMAP); --plot draws its cameras.

    Args:
        capture: Capture directory or camera file.
        json_output: Print the summary as JSON.
        plot: Write a PNG of the camera frusta to this file (default: no plot).
        test_every: Hold out ceil(views / test_every) views spread over azimuth (front, sides, back), as
            reconstruct does; 0 holds out none.
    """
    from headforge.atomic import check_output_path
    from headforge.captures.formats import read_capture
    from headforge.captures.inspect import format_summary, plot_frusta, summarize

    if plot is not None:
        check_output_path(plot, directory=False)  # refused before the capture is read
    cap = read_capture(capture, test_every=test_every)
    summary = summarize(cap)
    plot_path = plot_frusta(cap, plot, summary=summary) if plot is not None else None
    if json_output:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(format_summary(summary))
        print(f"camera plot: {plot_path}" if plot_path is not None
              else "camera plot: none (pass --plot PATH to draw the camera frusta)")


def extract_mesh(run_dir: Annotated[Path, tyro.conf.Positional], resolution: GridResolution = 256,
                 level: float | None = None, silhouette_level: bool = False, target_faces: TargetFaces | None = 100_000,
                 texture_size: TextureSize = 1024, unwrap_seconds: Seconds = 180.0, out: Path | None = None,
                 overwrite: bool = False) -> None:
    """Extract a textured mesh from a finished neural-field run into RUN_DIR/mesh/ (mesh.obj + .mtl + .png, mesh.ply,
    mesh.glb), written as one folder: it appears complete or not at all. The mesh is repaired to be manifold,
    closed where holes are small and single-piece; a quality report is printed.

    Args:
        run_dir: Output directory of `headforge reconstruct --method hashgrid|triplane|trigrid`.
        resolution: Marching-cubes cells along the longest side of the field's bounds.
        level: Iso level (default: 0 for SDF fields, a density of ln 2 per cm otherwise).
        silhouette_level: VolSDF fields: extract where the renders put the silhouette, about 3 beta outside the zero
            level set (volsdf_silhouette_offset; closer to the true surface, see bench/RESULTS.md).
        target_faces: Decimate to this many triangles.
        texture_size: Baked texture size in pixels.
        unwrap_seconds: Time budget of the xatlas UV unwrap; past it a cube-projection atlas (6 charts) is used.
        out: Output folder (default RUN_DIR/mesh).
        overwrite: Replace an existing output folder (the old one stays if this run fails).
    """
    from headforge.pipeline.methods import load_field
    from headforge.stages.mesh_stage import extract_mesh_stage
    from headforge.stages.mesh_types import MeshExtractConfig

    model, _, _ = load_field(Path(run_dir) / "field.pt")
    if silhouette_level:
        from headforge.representations.fields.sdf import HEAD_CURVATURE_RADIUS, volsdf_silhouette_offset

        if level is not None:
            raise InputError("--level and --silhouette-level exclude each other", path=run_dir, fix="give one")
        if not model.cfg.sdf:
            raise InputError("--silhouette-level needs a VolSDF field; this run learnt a density",
                             path=Path(run_dir) / "field.pt", fix="reconstruct with --sdf, or drop --silhouette-level")
        level = volsdf_silhouette_offset(float(model.volsdf.beta.detach()), HEAD_CURVATURE_RADIUS)
        print(f"silhouette level: sdf = {1000 * level:.3f} mm")
    cfg = MeshExtractConfig(resolution=resolution, level=level, target_faces=target_faces, texture_size=texture_size,
                            unwrap_seconds=unwrap_seconds)
    result = extract_mesh_stage(model, cfg, out if out is not None else Path(run_dir) / "mesh", overwrite=overwrite)
    print(f"wrote {result.files.directory}: {result.report.summary()} (UVs: {result.unwrap.value})")
    print("seconds: " + ", ".join(f"{name} {sec:.1f}" for name, sec in result.seconds))
    if not result.report.engine_ready:
        print("warning: the mesh is not engine-ready (see the counts above)", file=sys.stderr)


def rig_sheet(rig: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RIG")], out: Path,
              size: TileSize = 256, overwrite: bool = False) -> None:
    """Draw a head rig's sheet: every ARKit expression at weight 1 beside the neutral and the skeleton posed, coloured
    by how far each vertex moves (mm): the picture to check before trusting a rig.

    Args:
        rig: builtin (generated by headforge from its sample head, MIT), ict-facekit:FOLDER (the kit's FaceXModel
            folder or its packed copy, MIT) or flame:FILE (your own generic_model.pkl / flame2023.pkl, under the
            FLAME licence).
        out: The PNG to write.
        size: Tile height in pixels (each expression tile shows a front and a profile view).
        overwrite: Replace an existing file.
    """
    import time

    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.atomic import check_output_path
    from headforge.captures.images import write_image
    from headforge.viz.rig_sheet import RigSheetConfig
    from headforge.viz.rig_sheet import rig_sheet as draw_rig_sheet

    check_output_path(out, directory=False)
    if out.exists() and not overwrite:
        raise InputError("output file already exists", path=out, fix="pass --overwrite, or choose another path")
    spec = parse_rig_spec(rig)
    start = time.perf_counter()
    loaded = load_rig(spec)
    write_image(out, draw_rig_sheet(loaded, RigSheetConfig(tile=size)))
    missing = ", ".join(loaded.missing_expressions()) or "none"
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s ({spec.source}; missing ARKit shapes: {missing})")


# Each command checks its arguments against their declared ranges (headforge.validation) before it runs.
COMMANDS = {name: checked_command(fn) for name, fn in (
    ("run", run), ("reconstruct", reconstruct), ("extract-mesh", extract_mesh), ("render-capture", render_capture),
    ("inspect", inspect), ("rig-sheet", rig_sheet), ("fit-rig", fit_rig), ("avatar", avatar), ("animate", animate),
    ("hair-swap", hair_swap), ("edit-texture", edit_texture), ("export", export), ("report", report),
    ("photo", photo), ("batch", batch))}


ISSUES_FALLBACK = "the headforge issue tracker"


def issue_tracker() -> str:
    """Where to report a bug: the package's ``Issues`` (or ``Bug Tracker``) project URL when it declares one."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("headforge").get_all("Project-URL") or []
    except PackageNotFoundError:
        return ISSUES_FALLBACK
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("issues", "bug tracker", "bugs", "tracker"):
            return url.strip()
    return ISSUES_FALLBACK


def pop_debug_option(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere on the line (or ``HEADFORGE_DEBUG=1``): print the traceback of an internal error."""
    debug = os.environ.get("HEADFORGE_DEBUG", "").strip() not in ("", "0")
    rest = [a for a in argv if a != "--debug"]
    return debug or len(rest) != len(argv), rest


def interrupted_line(stopped: Interrupted, argv: list[str], command: str | None) -> str:
    """One line: where training stopped, its checkpoint and the command (``argv`` and ``--resume``) that
    continues it; only ``reconstruct`` can resume."""
    text = f"headforge: {stopped}"
    if stopped.checkpoint is not None and command == "reconstruct":
        again = [a for a in argv if a != "--overwrite"] + ([] if "--resume" in argv else ["--resume"])
        text += f"; continue with: headforge {shlex.join(again)}"
    return text


def main(argv: list[str] | None = None) -> int:
    """The ``headforge`` command; returns the exit status (see the module docstring)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    from headforge.threads import configure_threads, pop_threads_option

    debug, line = pop_debug_option(sys.argv[1:] if argv is None else list(argv))
    args = line
    try:
        # Global option ``--threads N`` (anywhere on the line) or $HEADFORGE_THREADS; default: the cores this
        # process may use (affinity, cgroup quota). See headforge/threads.py.
        threads, args = pop_threads_option(line)
        if args[:1] == ["--version"]:
            print(f"headforge {__version__}")
            return 0
        configure_threads(threads)
        tyro.extras.subcommand_cli_from_dict(COMMANDS, args=args, prog="headforge",
                                             config=(tyro.conf.EnumChoicesFromValues,))
    except Interrupted as stopped:
        print(interrupted_line(stopped, line, args[0] if args else None), file=sys.stderr)
        return 128 + stopped.signum
    except BatchIncomplete as incomplete:
        print(f"headforge: {incomplete}", file=sys.stderr)
        return 3
    except HeadforgeError as error:
        print(f"headforge: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headforge: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("headforge: terminated", file=sys.stderr)
        return 143
    except Exception as bug:  # a bug: short message, traceback on request
        if debug:
            traceback.print_exc()
        print(f"headforge: internal error: {type(bug).__name__}: {bug}\n"
              f"This is a bug in headforge {__version__}; please report it at {issue_tracker()} with the command "
              f"line{'' if debug else ' and the traceback (rerun with --debug or HEADFORGE_DEBUG=1)'}.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
