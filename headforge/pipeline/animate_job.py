"""The job behind ``headforge animate``: an avatar driven by a clip of ARKit weights, filmed by a turning camera.

The clip (``builtin:NAME`` or a clip JSON, including a MediaPipe blendshape recording: see
``representations/rig/clips.py``) is checked against the avatar's rig first (a weight on a shape the rig lacks is
refused with the rig's names). Each clip frame poses the avatar in its rig frame (the head frame: metres, +y up,
the face toward +z) and is rendered from a camera that sweeps ``turn_deg`` to either side of the face and back
over the clip. The video is MP4 (H.264 through imageio-ffmpeg's bundled ffmpeg, run as a separate program) or
GIF by the output's suffix, written to a temporary file beside it and renamed at the end, so a failed or
interrupted run never leaves a truncated video (an existing one stays until the new one is complete).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from headforge.atomic import atomic_path, check_output_path
from headforge.errors import InputError
from headforge.geometry.camera_rigs import FovDeg, TurnDeg
from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at
from headforge.locks import output_lock
from headforge.pipeline.avatar_file import load_avatar
from headforge.representations.rig.clips import Clip, check_clip_for_rig, read_clip, resample
from headforge.stages.avatar import Avatar, pose_avatar
from headforge.stages.gaussian_train import render_splats
from headforge.validation import Checked, Count, ImageSide, Positive

__all__ = ["AnimateJob", "animate_frames", "run_animate", "sweep_cameras"]

VIDEO_SUFFIXES = (".mp4", ".gif")


@dataclass(frozen=True)
class AnimateJob(Checked):
    avatar: Path
    clip: str
    out: Path
    resolution: ImageSide = 512
    frames: Count | None = None  # resample the clip to this many frames (default: its own length)
    turn_deg: TurnDeg = 30.0  # the camera sweeps this far to each side of the face
    distance_m: Positive = 0.75
    fov_deg: FovDeg = 25.0
    overwrite: bool = False
    progress: bool = True


def sweep_cameras(count: int, resolution: int, turn_deg: float, distance: float, fov_deg: float,
                  target: tuple[float, float, float] = (0.0, 0.02, 0.0)) -> Cameras:
    """``count`` cameras looking at ``target`` (head frame): azimuth turn * sin(2 pi t), 5 degrees up."""
    t = torch.arange(count, dtype=torch.float64) / max(count, 1)
    az = torch.deg2rad(turn_deg * torch.sin(2 * math.pi * t))
    el = math.radians(5.0)
    centre = torch.tensor(target, dtype=torch.float64)
    eye = centre + distance * torch.stack([torch.sin(az) * math.cos(el), torch.full_like(az, math.sin(el)),
                                           torch.cos(az) * math.cos(el)], -1)
    w2c = look_at(eye.float(), centre.float().expand(count, 3), torch.tensor([0.0, 1.0, 0.0]).expand(count, 3))
    f = 0.5 * resolution / math.tan(math.radians(fov_deg) / 2)
    return Cameras.create(w2c, f, f, resolution / 2, resolution / 2, resolution, resolution)


def animate_frames(avatar: Avatar, clip: Clip, cameras: Cameras, background: torch.Tensor | None = None,
                   progress: bool = False):
    """Yield one uint8 frame [H, W, 3] per clip frame (clip frame k seen by camera k)."""
    if len(cameras) != clip.weights.shape[0]:
        raise ValueError(f"{len(cameras)} cameras for {clip.weights.shape[0]} clip frames")
    bg = torch.ones(3) if background is None else background
    for k in tqdm(range(len(cameras)), desc="animate", unit="frame", disable=not progress):
        params = avatar.frame_params(clip.weights[k], clip.rotations[k])
        with torch.no_grad():
            splats = pose_avatar(avatar, params, world=False)
            rgb = render_splats(splats, cameras[[k]], avatar.sh_degree, bg).rgb[0]
        yield (rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def run_animate(job: AnimateJob) -> Path:
    out = check_output_path(job.out, directory=False)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"the output must end in {' or '.join(VIDEO_SUFFIXES)}", path=out,
                         fix="e.g. --out talk.mp4")
    with output_lock(out):
        if out.exists() and not job.overwrite:
            raise InputError("the output file already exists", path=out, fix="pass --overwrite or another --out")
        avatar = load_avatar(job.avatar)
        clip = read_clip(job.clip)
        check_clip_for_rig(clip, avatar.rig)
        if job.frames is not None:
            clip = resample(clip, job.frames)
        cams = sweep_cameras(clip.weights.shape[0], job.resolution, job.turn_deg, job.distance_m, job.fov_deg)
        frames = animate_frames(avatar, clip, cams, progress=job.progress)
        with atomic_path(out) as tmp:
            if out.suffix.lower() == ".gif":
                imageio.mimsave(tmp, list(frames), format="GIF", duration=1000 / clip.fps, loop=0)
            else:
                with imageio.get_writer(tmp, format="FFMPEG", fps=clip.fps, codec="libx264", quality=8,
                                        macro_block_size=16, pixelformat="yuv420p") as writer:
                    for frame in frames:
                        writer.append_data(frame)
    return out
