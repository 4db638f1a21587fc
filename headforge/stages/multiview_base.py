"""The multi-view generators' shared vocabulary: their kinds and the CLI spec, the interface, the head's geometry,
the in-memory capture every generator returns (see stages/multiview.py), and the prior's view sets.

View sets (:class:`ViewSet`, or any camera file, :func:`parse_view_spec`):

- ``facelift6``: FaceLift's six generated views (weijielyu/FaceLift, ``utils_folder/opencv_cameras.json`` and
  ``mvdiffusion/data/dataset.py``), facts only: front, front_right, right, back, left, front_left (in that
  order) at elevation 0, all looking at the origin of its canonical head from 2.7 units, 512 x 512 pixels with
  fx = fy = 548.99 (a 50.0 degree field of view), principal point at the centre. In its Blender frame (z up,
  the face toward -y) "right" is the subject's right (camera at -x), so in ours the azimuths are
  0, -45, -90, 180, 90, 45 degrees. Its heads' scale: in its sample data's front view the ear-to-ear
  silhouette at eye level is 177 px wide, 0.87 units at the 2.7-unit distance; we keep FaceLift's framing by
  placing the cameras at 2.7 / 0.87 = 3.10 times the fitted head's ear-to-ear width (0.48 m for a 15.5 cm
  head), the field of view unchanged; its heads are centred at about eye level, as our rig frame's origin.
- ``sphere32``: headforge's 32-view rig (``geometry.camera_rigs``, RigKind.SPHERE32: fov 30, a 0.16 m subject
  ball filling 0.9 of the image), the ball scaled by the fitted head's width / 0.155 m.
- a camera file (any capture format's camera file or folder): its cameras as they are, in the photo's world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from headforge.captures.capture import Capture, CaptureFormat, Split, View
from headforge.captures.formats import read_capture, write_capture
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig, spherical_directions
from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import measure_head, transform_cameras
from headforge.geometry.rotations import look_at
from headforge.stages.avatar import Avatar, avatar_vertices
from headforge.stages.photo_types import AlignedPhoto

__all__ = ["FACELIFT_AZIMUTHS_DEG", "FACELIFT_FOV_DEG", "FACELIFT_VIEW_NAMES", "GeneratorKind", "GeneratorSpec",
           "HeadGeometry", "MultiViewGenerator", "ViewSet", "ViewSpec", "facelift_cameras", "generated_capture",
           "head_geometry", "parse_generator_spec", "parse_view_spec", "straight_colour", "view_cameras",
           "write_generated"]

# FaceLift's six views (facts of weijielyu/FaceLift, see the module doc), in its generation order.
FACELIFT_VIEW_NAMES = ("front", "front_right", "right", "back", "left", "front_left")
FACELIFT_AZIMUTHS_DEG = (0.0, -45.0, -90.0, 180.0, 90.0, 45.0)  # head frame: +90 = the subject's left (+x)
FACELIFT_ELEVATION_DEG = 0.0
FACELIFT_RESOLUTION = 512
FACELIFT_FOCAL_512 = 548.9937744140625  # pixels at 512
FACELIFT_FOV_DEG = math.degrees(2 * math.atan(FACELIFT_RESOLUTION / 2 / FACELIFT_FOCAL_512))  # 50.0
FACELIFT_DISTANCE_UNITS = 2.7
FACELIFT_HEAD_WIDTH_UNITS = 0.87  # ear-to-ear silhouette of its sample head's front view, in its units
ADULT_HEAD_WIDTH_M = 0.155  # an adult's ear-to-ear width (head_frame.py's real-head convention)
SPHERE32_RADIUS_M = 0.16  # RigConfig's default subject ball for a 0.155 m wide head


class GeneratorKind(StrEnum):
    PRIOR = "prior"  # render the completed head (the default)
    EXTERNAL = "external"  # a user's command writes the views
    MODEL = "model"  # a learned multi-view model from a local folder


class ViewSet(StrEnum):
    FACELIFT6 = "facelift6"
    SPHERE32 = "sphere32"


@dataclass(frozen=True)
class GeneratorSpec:
    kind: GeneratorKind
    command: str | None = None  # EXTERNAL: the command template
    path: Path | None = None  # MODEL: the model folder

    def __str__(self) -> str:
        if self.kind is GeneratorKind.EXTERNAL:
            return f"external:{self.command}"
        if self.kind is GeneratorKind.MODEL:
            return f"model:{self.path}"
        return str(self.kind)


@dataclass(frozen=True)
class ViewSpec:
    """A built-in view set or a camera file (exactly one)."""

    view_set: ViewSet | None = ViewSet.FACELIFT6
    camera_file: Path | None = None

    def __post_init__(self):
        if (self.view_set is None) == (self.camera_file is None):
            raise ValueError("ViewSpec takes exactly one of view_set and camera_file")

    def __str__(self) -> str:
        return str(self.view_set) if self.view_set is not None else str(self.camera_file)


def parse_generator_spec(text: str) -> GeneratorSpec:
    """``prior``, ``external:CMD`` or ``model:PATH`` -> a GeneratorSpec (anything else is an InputError)."""
    fix = "use --generator prior, external:'COMMAND {input} {output}' or model:PATH"
    kind, sep, rest = text.strip().partition(":")
    try:
        k = GeneratorKind(kind.strip().lower())
    except ValueError:
        raise InputError(f"{text!r} is not a generator (known: {', '.join(GeneratorKind)})", fix=fix) from None
    if k is GeneratorKind.PRIOR:
        if sep:
            raise InputError(f"the prior generator takes no argument (got {text!r})",
                             fix="use --generator prior (choose its views with the view-set option)")
        return GeneratorSpec(k)
    if not rest.strip():
        raise InputError(f"the {k} generator needs {'a command' if k is GeneratorKind.EXTERNAL else 'a folder'} "
                         f"after '{k}:' (got {text!r})", fix=fix)
    if k is GeneratorKind.EXTERNAL:
        return GeneratorSpec(k, command=rest.strip())
    return GeneratorSpec(k, path=Path(rest.strip()).expanduser())


def parse_view_spec(text: str) -> ViewSpec:
    """``facelift6``, ``sphere32`` or a camera file / capture folder that exists."""
    try:
        return ViewSpec(ViewSet(text.strip().lower()))
    except ValueError:
        pass
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"{text!r} is neither a view set ({', '.join(ViewSet)}) nor an existing camera file",
                         path=path, fix="give facelift6, sphere32 or a camera file such as opencv_cameras.json")
    return ViewSpec(None, path)


# ------------------------------------------------------------------------------------------ the head
@dataclass(frozen=True)
class HeadGeometry:
    """Where the head is: the rig-frame head width (metres) and the fit's world-from-rig similarity [4, 4]."""

    width_m: float
    world_from_rig: Tensor  # [4, 4] float64


def head_geometry(avatar: Avatar) -> HeadGeometry:
    """The ear-to-ear width of the avatar's head (its photo frame, rig frame) and its similarity."""
    params = avatar.params.frame(0)
    verts = avatar_vertices(avatar, params, world=False)[0]  # [V, 3] rig frame
    width = measure_head(verts).head_width
    sim = params.similarity
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = sim.scale.double() * sim.rotation.double()
    T[:3, 3] = sim.translation.double()
    return HeadGeometry(float(width), T)


# ------------------------------------------------------------------------------------------ view sets
def facelift_cameras(resolution: int, head_width_m: float) -> Cameras:
    """FaceLift's six views in the rig frame (see the module doc), ``resolution`` square pixels."""
    az = torch.tensor(FACELIFT_AZIMUTHS_DEG)
    dirs = spherical_directions(az, torch.full_like(az, FACELIFT_ELEVATION_DEG)).double()  # [6, 3]
    distance = FACELIFT_DISTANCE_UNITS / FACELIFT_HEAD_WIDTH_UNITS * head_width_m
    eye = dirs * distance
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(eye)
    w2c = look_at(eye, torch.zeros_like(eye), up)
    f = FACELIFT_FOCAL_512 * resolution / FACELIFT_RESOLUTION
    names = [f"facelift_{n}" for n in FACELIFT_VIEW_NAMES]
    return Cameras.create(w2c.float(), f, f, resolution / 2, resolution / 2, resolution, resolution, names=names)


def view_cameras(spec: ViewSpec, resolution: int, head: HeadGeometry) -> Cameras:
    """The cameras of a view set in the photo's world (built in the rig frame, moved by the fit's similarity);
    a capture's camera file (its images must exist) gives its cameras as they are."""
    if spec.camera_file is not None:
        return read_capture(spec.camera_file, test_every=0).native_cameras
    if spec.view_set is ViewSet.FACELIFT6:
        rig = facelift_cameras(resolution, head.width_m)
    else:
        radius = SPHERE32_RADIUS_M * head.width_m / ADULT_HEAD_WIDTH_M
        rig = make_rig(RigConfig(kind=RigKind.SPHERE32, resolution=resolution, subject_radius=radius))
    return transform_cameras(rig, head.world_from_rig)


# ------------------------------------------------------------------------------------------ captures
def generated_capture(cameras: Cameras, rgba: Tensor) -> Capture:
    """An in-memory capture of generated views: rgba [N, H, W, 4] straight colour, nothing held out."""
    n = len(cameras)
    return Capture(cameras, tuple(View(None) for _ in range(n)), Split(tuple(range(n)), ()),
                   images=rgba.float().clamp(0, 1).contiguous())


def write_generated(capture: Capture, out_dir: Path, *, overwrite: bool = False) -> Capture:
    """Write the views as an opencv_cameras.json capture folder (atomically); returns ``capture``."""
    write_capture(capture, out_dir, CaptureFormat.OPENCV_JSON, overwrite=overwrite)
    return capture


def straight_colour(premultiplied: Tensor, alpha: Tensor) -> Tensor:  # [..., 3], [..., 1] -> [..., 3]
    """Colour rendered over black divided by its coverage (0 where nothing covers)."""
    return torch.where(alpha > 1e-4, premultiplied / alpha.clamp_min(1e-4), torch.zeros_like(premultiplied)).clamp(0, 1)


# ------------------------------------------------------------------------------------------ the interface
class MultiViewGenerator(Protocol):
    kind: GeneratorKind

    def generate(self, photo: AlignedPhoto, head: Avatar | None, out_dir: Path) -> Capture:
        """Views of the photo's subject in the photo's world (the head frame), written into ``out_dir``."""
        ...
