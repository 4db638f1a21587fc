"""Command line, the capture commands: ``headforge render-capture | reconstruct | fit-rig`` (registered in ``cli.py``'s
command table; also the jobs ``headforge batch`` runs per item)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import tyro

from headforge.errors import InputError
from headforge.geometry.camera_rigs import FovDeg, RigConfig, RigKind, ViewCount
from headforge.geometry.head_frame import Axis, HeadFrameSpec, HeadWidth, Units
from headforge.pipeline.methods import Device, Method
from headforge.stages.render_capture import Supersample
from headforge.validation import Count, ImageSide, NonNegativeInt

if TYPE_CHECKING:
    from headforge.pipeline.reconstruct import Reconstruction


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
