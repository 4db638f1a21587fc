"""Stage: render a textured head rig driven by a clip into a multi-view, multi-timestep capture (NeRSemble layout).

Output layout (``out/``), what ``captures/nersemble.py`` reads (View.frame = the timestep)::

    camera_params.json                                  NeRSemble calibration: shared intrinsics, world_2_cam
    timesteps/frame_<nnnnn>/images/cam_<serial>.png     RGB over black (the render's premultiplied colour)
    timesteps/frame_<nnnnn>/alpha_map/cam_<serial>.png  8-bit coverage
    expressions.json                                    the ground truth: the clip as rendered, every frame's
                                                        52 ARKit weights and joint rotations (radians), its
                                                        name and fps (``clips.write_clip``, dense frames)

Frame n shows exactly ``deform`` of the rig with the subject's identity and offsets (``base``), the clip's
weights of frame n and its joint rotations (``stages/rig_params.rig_vertices``), in the rig's own frame: the
head frame the cameras look at (origin at the head centre, +y up, the face toward +z). ``base.similarity``
(where a fit placed the head in its capture's world) is not applied. A serial is the camera's name without a
leading ``cam_`` (``nersemble16``: 00 .. 15). Everything is checked before the first image is rendered; the
folder is written under ``OUT.lock`` as one staged directory, so a failure leaves no output (and an earlier
one, with ``overwrite``, as it was).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.atomic import atomic_directory, write_text
from headforge.captures.capture import Capture, CaptureFormat
from headforge.captures.format_base import json_text
from headforge.captures.formats import read_capture
from headforge.captures.images import write_image
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.geometry.cameras import Cameras
from headforge.locks import output_lock
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.clips import Clip, check_clip_for_rig, write_clip
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.render_capture import Supersample
from headforge.stages.rig_params import RigParams, rig_vertices
from headforge.validation import Checked, Count, NonNegativeInt

EXPRESSIONS_FILE = "expressions.json"
CAMERA_FILE = "camera_params.json"


@dataclass(frozen=True)
class RenderSequenceConfig(Checked):
    rig: RigConfig = field(default_factory=lambda: RigConfig(kind=RigKind.NERSEMBLE16, resolution=256))
    supersample: Supersample = 2  # render at k x resolution and box-filter
    shading: bool = False  # unlit albedo (what reconstructions are scored against)
    test_every: NonNegativeInt = 8  # split of the returned capture (not written into the files)
    batch: Count = 4  # views rendered together


@dataclass(frozen=True)
class RenderedSequence:
    out_dir: Path
    capture: Capture  # read back from the files; View.frame = timestep, views ordered by (frame, serial)
    clip: Clip  # the ground truth as rendered (what expressions.json holds)
    cameras: Cameras  # the camera rig, one per serial, in the rig generator's order
    serials: tuple[str, ...]  # serial of each camera

    def summary(self) -> str:
        c = self.clip
        return (f"wrote {c.num_frames} timesteps x {len(self.cameras)} views of '{c.name}' ({c.fps:g} fps) to "
                f"{self.out_dir} (NeRSemble layout; ground truth in {EXPRESSIONS_FILE})")


def serials_of(cameras: Cameras) -> tuple[str, ...]:
    """One serial per camera: its name without ``cam_`` (the file names are ``cam_<serial>.png``)."""
    names = tuple(cameras.name(i).removeprefix("cam_") for i in range(len(cameras)))
    if len(set(names)) != len(names) or not all(n.replace("_", "").replace("-", "").isalnum() for n in names):
        raise ValueError(f"camera names must give distinct alphanumeric serials (got {names})")
    return names


def frame_params(base: RigParams, clip: Clip, frame: int) -> RigParams:
    """The subject's identity and offsets with frame ``frame`` of the clip (one frame, float64)."""
    return base.posed(clip.weights[frame], clip.rotations[frame])


def frame_vertices(rig: HeadRig, base: RigParams, clip: Clip, frame: int) -> Tensor:  # -> [V, 3] float64
    """Posed rig vertices of one frame, in the rig frame (= ``deform`` of its weights and rotations)."""
    return rig_vertices(rig, frame_params(base, clip, frame))[0]


def check_inputs(rig: HeadRig, base: RigParams, clip: Clip, cameras: Cameras) -> None:
    check_clip_for_rig(clip, rig)
    if base.identity.shape != (rig.num_identity,):
        raise InputError(f"the subject's identity has {base.identity.shape[0]} coefficients, the rig "
                         f"({rig.source}) {rig.num_identity}", fix="use the rig the subject was fitted with")
    if base.offsets is not None and base.offsets.shape != rig.template.shape:
        raise InputError(f"the subject's offsets are {list(base.offsets.shape)}, the rig has {rig.num_vertices} "
                         "vertices", fix="use the rig the subject was fitted with")
    intr = torch.stack([cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width.to(cameras.fx),
                        cameras.height.to(cameras.fx)], -1)
    if not bool((intr == intr[0]).all()) or cameras.has_distortion():
        raise ValueError("a NeRSemble capture holds one set of undistorted intrinsics for every camera")
    serials_of(cameras)


def camera_params(cameras: Cameras) -> dict:
    """The NeRSemble calibration of a rig whose cameras share their intrinsics."""
    K = [[float(cameras.fx[0]), 0.0, float(cameras.cx[0])], [0.0, float(cameras.fy[0]), float(cameras.cy[0])],
         [0.0, 0.0, 1.0]]
    w2c = {s: cameras.world_to_camera[i].double().tolist() for i, s in enumerate(serials_of(cameras))}
    return {"intrinsics": K, "world_2_cam": dict(sorted(w2c.items()))}


def render_frame(mesh: TexturedMesh, cameras: Cameras, cfg: RenderSequenceConfig, folder: Path,
                 serials: tuple[str, ...]) -> None:
    """Write ``folder/images/cam_<serial>.png`` (RGB) and ``folder/alpha_map/cam_<serial>.png`` of every camera."""
    far = float(cameras.centers().norm(dim=-1).max()) * 3
    (folder / "images").mkdir(parents=True)
    (folder / "alpha_map").mkdir()
    for start in range(0, len(cameras), cfg.batch):
        idx = list(range(start, min(start + cfg.batch, len(cameras))))
        with torch.no_grad():
            out = render_mesh(mesh, cameras[idx], far=far, supersample=cfg.supersample, shading=cfg.shading)
        for j, i in enumerate(idx):
            write_image(folder / "images" / f"cam_{serials[i]}.png", out.rgb[j].numpy())
            write_image(folder / "alpha_map" / f"cam_{serials[i]}.png", out.alpha[j].numpy())


def frame_folder(frame: int) -> str:
    return f"timesteps/frame_{frame:05d}"


def render_sequence(rig: HeadRig, base: RigParams, mesh_of: Callable[[Tensor], TexturedMesh], clip: Clip,
                    cfg: RenderSequenceConfig, out_dir: str | Path, *, overwrite: bool = False,
                    progress: bool = True) -> RenderedSequence:
    """Render ``clip`` (already at the wanted frame count) on the rig with the subject ``base`` (its identity and
    offsets; expression and pose come from the clip). ``mesh_of`` maps posed vertices [V, 3] (rig frame) to the
    textured mesh to draw (the rig's faces, UVs and the subject's texture)."""
    out_dir = Path(out_dir)
    cameras = make_rig(cfg.rig)
    check_inputs(rig, base, clip, cameras)
    serials = serials_of(cameras)
    with output_lock(out_dir), atomic_directory(out_dir, overwrite=overwrite) as stage:
        write_text(stage / CAMERA_FILE, json_text(camera_params(cameras)))
        for n in tqdm(range(clip.num_frames), desc=f"render {clip.name}", unit="frame", disable=not progress):
            mesh = mesh_of(frame_vertices(rig, base, clip, n).float())
            render_frame(mesh, cameras, cfg, stage / frame_folder(n), serials)
        write_clip(clip, stage / EXPRESSIONS_FILE)
    capture = read_capture(out_dir / CAMERA_FILE, format=CaptureFormat.NERSEMBLE, test_every=cfg.test_every)
    return RenderedSequence(out_dir, capture, clip, cameras, serials)
