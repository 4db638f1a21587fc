"""Command line: ``headforge run | reconstruct | extract-mesh | render-capture | inspect | rig-sheet | fit-rig``;
avatar and photo commands in ``cli_avatar.py``, export and report in ``cli_export.py``. A user error
(:class:`HeadforgeError`) prints one clear message and exits 2; nothing that looks complete is left behind (every
writer stages its output and renames it at the end). Closed sets are StrEnums, spelled by value (``--rig sphere32``).

Exit status: 0 done; 2 a user error; 1 a bug (``headforge: internal error: ...`` and where to report it; the
traceback with ``--debug`` or ``HEADFORGE_DEBUG=1``); 130 / 143 training stopped by SIGINT / SIGTERM, with
a checkpoint and the command that continues it (elsewhere ctrl-C / SIGTERM exit 130 / 143 with one line, after
the staging folders and the output lock are cleaned up). Global options: ``--threads N``, ``--debug``, ``--version``.
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
from typing import TYPE_CHECKING, Annotated

import tyro

from headforge import __version__
from headforge.cli_avatar import animate, avatar, edit_texture, hair_swap, photo
from headforge.cli_export import export, report
from headforge.errors import HeadforgeError, InputError, Interrupted
from headforge.geometry.camera_rigs import FovDeg, RigConfig, RigKind, ViewCount
from headforge.geometry.head_frame import Axis, HeadFrameSpec, HeadWidth, Units
from headforge.pipeline.methods import Device, Method
from headforge.stages.mesh_types import GridResolution, TargetFaces, TextureSize
from headforge.stages.render_capture import Supersample
from headforge.validation import Count, ImageSide, NonNegativeInt, Seconds, checked_command
from headforge.viz.rig_sheet import TileSize

if TYPE_CHECKING:
    from headforge.pipeline.reconstruct import Reconstruction


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


def scores_line(rec: Reconstruction) -> str:
    """The held-out scores of a :class:`Reconstruction`, or why there are none."""
    ev = rec.evaluation
    if ev is None:
        return "not scored (no held-out views)"
    masked = "n/a" if ev.psnr_masked is None else f"{ev.psnr_masked:.2f} dB"
    views = ", ".join(f"{v.view} ({v.azimuth_deg:.0f} deg)" for v in rec.test_views)
    return f"held-out PSNR {ev.psnr:.2f} dB (masked {masked}), SSIM {ev.ssim:.4f} on views {views}"


def render_capture(mesh_or_rig: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MESH_OR_RIG")],
                   out: Path, rig: RigKind = RigKind.SPHERE32, resolution: ImageSide = 512, num_views: ViewCount = 32,
                   fov_deg: FovDeg = 30.0,
                   units: Units | None = None, head_width: HeadWidth | None = None, up: Axis = Axis.POS_Y,
                   forward: Axis = Axis.POS_Z, supersample: Supersample = 2, animation: str | None = None,
                   frames: Count | None = None, overwrite: bool = False) -> None:
    """Render a textured mesh into a multi-view capture (RGBA, masks, depth, transforms.json, opencv_cameras.json),
    or a head rig driven by a clip into a NeRSemble-layout sequence (+ expressions.json: per-frame ARKit weights).

    The capture holds no train/test split: `reconstruct` and `inspect` choose one (--test-every).

    Args:
        mesh_or_rig: A textured mesh file (OBJ with MTL and texture, PLY, GLB); `builtin` (the built-in rig
            with its own texture); or a `headforge fit-rig` output folder (the fitted subject, its texture).
        out: Output capture directory.
        rig: Camera rig (sphere32: FaceLift-like, nersemble16: frontal arc, ring, sphere).
        resolution: Image height in pixels.
        num_views: Number of views for the ring and sphere rigs.
        fov_deg: Vertical field of view in degrees.
        units: Meshes: units of the mesh (m, cm, mm); scales it to metres in the head frame.
        head_width: Meshes: scale the head to this ear-to-ear width in metres instead (default 0.155 without --units).
        up: Meshes: the mesh's up axis.
        forward: Meshes: the axis the mesh's face looks along.
        supersample: Render at this multiple of the resolution and filter down.
        animation: Rigs: the clip, builtin:NAME (blink, smile, talk, head_turn) or a clip JSON file (keyframes or
            a MediaPipe blendshape recording). Without it one timestep of the neutral rig is rendered.
        frames: Rigs: render this many frames spanning the clip (default: the clip's own frames at its fps).
        overwrite: Replace an existing output directory (once the new one is complete).
    """
    from headforge.pipeline import render_sequence_job as sequence

    rig_cfg = RigConfig(kind=rig, resolution=resolution, num_views=num_views, fov_deg=fov_deg)
    if sequence.source_kind(mesh_or_rig) is not sequence.SourceKind.MESH:
        mesh_only = [f for f, given in (("--units", units is not None), ("--head-width", head_width is not None),
                                        ("--up", up != Axis.POS_Y), ("--forward", forward != Axis.POS_Z)) if given]
        print(sequence.run_render_sequence(sequence.RenderSequenceJob(
            source=mesh_or_rig, out=out, animation=animation, frames=frames, cameras=rig_cfg, supersample=supersample,
            mesh_options=tuple(mesh_only), overwrite=overwrite)).summary())
        return
    from headforge.representations.mesh_io import load_mesh
    from headforge.stages.render_capture import RenderCaptureConfig
    from headforge.stages.render_capture import render_capture as render

    sequence.refuse_clip_options(mesh_or_rig, animation, frames)
    if units is not None and head_width is not None:
        raise InputError("give either --units or --head-width, not both", fix="drop one of them")
    spec = HeadFrameSpec(up=up, forward=forward, units=units,
                         head_width_m=None if units is not None else (0.155 if head_width is None else head_width))
    cfg = RenderCaptureConfig(rig=rig_cfg, head_frame=spec, supersample=supersample)
    result = render(load_mesh(Path(mesh_or_rig)), cfg, out, overwrite=overwrite)
    print(f"wrote {len(result.capture)} views to {result.out_dir}")


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


def reconstruct(capture: Annotated[Path, tyro.conf.Positional], out: Path,
                method: Method = Method.GAUSSIANS, sdf: bool = False,
                preset: str = "default", resolution: ImageSide | None = None, steps: Count | None = None,
                test_every: NonNegativeInt = 8, device: Device = Device.AUTO, init_ply: Path | None = None,
                resume: bool = False, overwrite: bool = False) -> None:
    """Reconstruct a head from a multi-view capture: metrics.json, contact sheet, turntable and exports.

    Args:
        capture: Capture directory or camera file (nerfstudio, opencv_cameras.json, NeRSemble, COLMAP).
        out: Output directory.
        method: gaussians (splats.ply/.splat/.glb) or a neural field: hashgrid, triplane, trigrid (field.pt;
            then `headforge extract-mesh OUT`).
        sdf: Neural fields: VolSDF geometry (signed distance) for clean meshes.
        preset: fast, default, quality (headforge/presets/<gaussians|fields>_<preset>.toml), or a path to a TOML preset.
        resolution: Longest image side to train and evaluate at (overrides the preset).
        steps: Training steps (overrides the preset).
        test_every: Hold out ceil(views / test_every) views spread over azimuth (front, sides, back) for
            evaluation; 0 holds out none (the run is not scored).
        device: auto picks CUDA when torch sees a GPU.
        init_ply: Gaussians: start from a 3DGS PLY (e.g. an earlier export) instead of initialising.
        resume: Continue from the last checkpoint in OUT/checkpoints.
        overwrite: Replace an existing output directory, once the new run has finished (a failed run keeps it).
    """
    from headforge.pipeline.reconstruct import ReconstructConfig, run_reconstruct

    result = run_reconstruct(ReconstructConfig(capture=capture, out=out, method=method, sdf=sdf,
                                               preset=preset, resolution=resolution, steps=steps,
                                               test_every=test_every, device=device, init_ply=init_ply,
                                               resume=resume, overwrite=overwrite))
    print(f"wrote {result.out_dir} in {result.seconds:.0f} s: {scores_line(result)}, {result.summary.describe()}")


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


def fit_rig(capture: Annotated[Path, tyro.conf.Positional], out: Path, rig: str = "builtin",
            frames: str = "first", resolution: ImageSide = 512, test_every: NonNegativeInt = 8,
            offsets: bool = True, cache_dir: Path | None = None, overwrite: bool = False) -> None:
    """Fit a head rig to a multi-view capture: rig_fit.json, fitted.glb/.obj, overlay_sheet.png, metrics.json.

    Stages: face landmarks (MediaPipe, cached) -> similarity, identity, expression and pose from the landmarks
    -> silhouette and photometric refinement -> per-vertex offsets -> texture baked onto the rig's UVs.

    Args:
        capture: Capture directory or camera file (nerfstudio, opencv_cameras.json, NeRSemble, COLMAP), with
            masks.
        out: Output directory.
        rig: builtin (generated by headforge, MIT), ict-facekit:FOLDER (the kit's folder or its packed copy,
            MIT), or flame:FILE (your own FLAME file, under the FLAME licence).
        frames: Timesteps to fit: first, all, or a comma list (sequences share one identity).
        resolution: Longest image side to read the views at.
        test_every: Hold out ceil(views / test_every) views spread over azimuth to score the textured fit;
            0 holds out none.
        offsets: Fit per-vertex offsets (with a Laplacian prior) after the parametric fit.
        cache_dir: Where detected landmarks are cached (default: .headforge_cache beside OUT).
        overwrite: Replace an existing output directory, once the new fit has finished.
    """
    from headforge.pipeline.fit_rig_job import FitRigJob, run_fit_rig

    fit, where = run_fit_rig(FitRigJob(capture=capture, out=out, rig=rig, frames=frames, resolution=resolution,
                                       test_every=test_every, offsets=offsets, cache_dir=cache_dir,
                                       overwrite=overwrite))
    s = fit.summary()
    psnr = "not scored" if s["heldout_psnr_face_db"] is None else f"{s['heldout_psnr_face_db']:.2f} dB"
    print(f"wrote {where} in {s['total_seconds']:.0f} s: landmarks median {s['landmark_median_px']:.2f} px, "
          f"silhouette IoU {s['silhouette_iou']:.3f}, held-out face PSNR {psnr}")


# Each command checks its arguments against their declared ranges (headforge.validation) before it runs.
COMMANDS = {name: checked_command(fn) for name, fn in (
    ("run", run), ("reconstruct", reconstruct), ("extract-mesh", extract_mesh), ("render-capture", render_capture),
    ("inspect", inspect), ("rig-sheet", rig_sheet), ("fit-rig", fit_rig), ("avatar", avatar), ("animate", animate),
    ("hair-swap", hair_swap), ("edit-texture", edit_texture), ("export", export), ("report", report),
    ("photo", photo))}


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


class Terminated(BaseException):
    """SIGTERM outside training: unwinds like ctrl-C, so staging folders and the output lock are cleaned up."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """The ``headforge`` command; returns the exit status (see the module docstring)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
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
