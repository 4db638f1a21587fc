"""Command line, the avatar commands: ``headforge avatar | animate | hair-swap | edit-texture | photo`` (registered in
``cli.py``'s command table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro

from headforge.geometry.camera_rigs import FovDeg, TurnDeg
from headforge.stages.photo_types import AlignConvention
from headforge.validation import Count, ImageSide, NonNegativeInt, Positive
from headforge.viz.rig_sheet import TileSize


def avatar(capture: Annotated[Path, tyro.conf.Positional], out: Path, rig: str = "builtin",
           rig_fit: Path | None = None, frames: str = "all", test_frames: str = "", resolution: ImageSide = 256,
           steps: Count = 3000, face_points: Count = 30_000, test_every: NonNegativeInt = 8, offsets: bool = True,
           turntable_frames: Count = 36, cache_dir: Path | None = None, resume: bool = False,
           overwrite: bool = False) -> None:
    """Build an animatable avatar: Gaussians bound to a fitted head rig, trained over the capture's frames.

    Writes avatar/ (rig fit, texture, bound Gaussians with binding and layer columns, one PLY per layer),
    metrics.json, contact_sheet.png, turntable.gif and renders/.

    Args:
        capture: Capture directory or camera file (one timestep or a sequence), with masks.
        out: Output directory.
        rig: The rig to fit (builtin, ict-facekit:FOLDER, flame:FILE); ignored with --rig-fit.
        rig_fit: A `headforge fit-rig` output folder to start from instead of fitting.
        frames: Timesteps to fit and use: first, all, or a comma list.
        test_frames: Timesteps kept out of the Gaussian training (their held-out views test unseen expressions).
        resolution: Longest image side the Gaussians are trained at.
        steps: Training steps.
        face_points: Gaussians first placed on the fitted skin.
        test_every: Hold out ceil(views / test_every) views per timestep; 0 holds out none.
        offsets: Fit per-vertex offsets when fitting the rig.
        turntable_frames: Frames of turntable.gif.
        cache_dir: Where detected landmarks are cached (default: .headforge_cache beside OUT).
        resume: Continue the training from the last checkpoint in OUT/checkpoints.
        overwrite: Replace an existing output directory, once the new run has finished.
    """
    from headforge.pipeline.avatar_job import AvatarJob, run_avatar

    run = run_avatar(AvatarJob(capture=capture, out=out, rig=rig, rig_fit=rig_fit, frames=frames,
                               test_frames=test_frames, resolution=resolution, steps=steps, face_points=face_points,
                               test_every=test_every, offsets=offsets, turntable_frames=turntable_frames,
                               cache_dir=cache_dir, resume=resume, overwrite=overwrite))
    m = run.metrics
    parts = []
    for key, label in (("trained_frames", "held-out views"), ("held_out_frames", "held-out frames")):
        pool = m[key]
        if pool["num_views"]:
            parts.append(f"{label}: masked PSNR {pool['psnr_masked']:.2f} dB over {pool['num_views']} views")
    print(f"wrote {run.out}: {m['num_gaussians']} Gaussians {m['gaussians']}; " + ("; ".join(parts) or "not scored"))


def animate(avatar: Annotated[Path, tyro.conf.Positional], clip: str, out: Path, resolution: ImageSide = 512,
            frames: Count | None = None, turn_deg: TurnDeg = 30.0, distance_m: Positive = 0.75,
            fov_deg: FovDeg = 25.0, overwrite: bool = False) -> None:
    """Render an avatar driven by a clip of ARKit weights from a turning camera into a video (MP4 or GIF).

    Args:
        avatar: An avatar folder (`headforge avatar` output, or its avatar/ folder).
        clip: builtin:NAME (blink, smile, talk, head_turn), a clip JSON file (keyframes or dense frames), or a
            MediaPipe face-blendshape recording (JSON: a list of frames of {categoryName, score}).
        out: The video file: .mp4 (H.264) or .gif.
        resolution: Image side in pixels.
        frames: Resample the clip to this many frames (default: its own frames at its fps).
        turn_deg: The camera sweeps this far to each side of the face and back over the clip.
        distance_m: Camera distance from the head centre, metres.
        fov_deg: The camera's field of view, degrees.
        overwrite: Replace an existing video (once the new one is complete).
    """
    from headforge.pipeline.animate_job import AnimateJob, run_animate

    path = run_animate(AnimateJob(avatar=avatar, clip=clip, out=out, resolution=resolution, frames=frames,
                                  turn_deg=turn_deg, distance_m=distance_m, fov_deg=fov_deg, overwrite=overwrite))
    print(f"wrote {path}")


def hair_swap(receiver: Annotated[Path, tyro.conf.Positional], donor: Annotated[Path, tyro.conf.Positional],
              out: Path, size: TileSize = 256, overwrite: bool = False) -> None:
    """Move the donor avatar's hair layer onto the receiver (through the rig's canonical space): OUT/avatar/,
    before_after.png (receiver | donor | result) and metrics.json (the receiver's face-region PSNR, layer counts).

    Args:
        receiver: The avatar folder (`headforge avatar`'s OUT or OUT/avatar) that keeps its face and clothing.
        donor: The avatar folder whose hair Gaussians are moved onto the receiver's scalp.
        out: Output directory.
        size: Tile height of the before/after sheet in pixels (the PSNR is measured at this size).
        overwrite: Replace an existing output directory, once the new result is written.
    """
    from headforge.pipeline.avatar_edit_job import HairSwapJob, run_hair_swap

    where, metrics = run_hair_swap(HairSwapJob(receiver=receiver, donor=donor, out=out, size=size,
                                               overwrite=overwrite))
    worst = metrics["face_psnr_db_min"]
    print(f"wrote {where}: hair {metrics['counts']['result']['hair']} Gaussians, receiver face region "
          f"{'not seen' if worst is None else f'PSNR >= {worst:.1f} dB'} against its own render")


def edit_texture(avatar: Annotated[Path, tyro.conf.Positional], out: Path, tint: str | None = None,
                 texture: Path | None = None, size: TileSize = 256, overwrite: bool = False) -> None:
    """Tint or replace an avatar's face texture (the mesh texture and the face-layer Gaussians' colours; hair
    untouched): OUT/avatar/ and before_after.png.

    Args:
        avatar: The avatar folder (`headforge avatar`'s OUT or OUT/avatar).
        out: Output directory.
        tint: R,G,B factors > 0 multiplying the face colours (e.g. 1.1,1.0,0.9).
        texture: A square PNG in the avatar's atlas layout (its texture.png's); another size is resampled.
        size: Tile height of the before/after sheet in pixels.
        overwrite: Replace an existing output directory, once the new result is written.
    """
    from headforge.pipeline.avatar_edit_job import EditTextureJob, run_edit_texture

    where = run_edit_texture(EditTextureJob(avatar=avatar, out=out, tint=tint, texture=texture, size=size,
                                            overwrite=overwrite))
    print(f"wrote {where}")


def photo(photo: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PHOTO")] = "builtin:astronaut",
          out: Path = Path("outputs/astronaut"), rig: str = "builtin", generator: str = "prior",
          views: str = "facelift6", convention: AlignConvention = AlignConvention.FACELIFT,
          resolution: ImageSide = 256, steps: Count = 500, face_points: Count = 8000, overwrite: bool = False) -> None:
    """One portrait photo -> an animatable 360-degree head: aligned input, rig fit with completed texture and hair,
    generated views, Gaussians bound to the rig, the rigged GLB (head.glb), report.html and photo_sheet.png.

    Args:
        photo: A photo file (JPEG, PNG, ...; EXIF orientation applied), or builtin:astronaut (scikit-image's portrait).
        out: Output directory.
        rig: The rig to fit (builtin, ict-facekit:FOLDER).
        generator: prior (render the completed head), external:CMD (a command writing views and opencv_cameras.json
            into {output} from {input}), or model:PATH (a local multi-view model folder).
        views: The generated view set: facelift6 (FaceLift's six views), sphere32, or a camera file.
        convention: How the aligned crop places the face (the generator's convention).
        resolution: Side of the generated views, pixels.
        steps: Training steps of the bound Gaussians.
        face_points: Gaussians first placed on the fitted skin.
        overwrite: Replace an existing output directory, once the new run has finished.
    """
    from headforge.pipeline.photo_job import PhotoJobConfig, run_photo_job

    run = run_photo_job(PhotoJobConfig(photo=photo, out=out, rig=rig, generator=generator, views=views,
                                       convention=convention, resolution=resolution, steps=steps,
                                       face_points=face_points, overwrite=overwrite))
    m = run.metrics
    print(f"wrote {run.out} in {m['seconds']['total']:.0f} s: landmarks {m['landmark_median_photo_px']:.2f} px in the "
          f"photo, views PSNR {m['views_psnr']:.2f} dB, {m['num_gaussians']} Gaussians; head.glb, report.html")
