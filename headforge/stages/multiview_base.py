"""The multi-view generators' shared vocabulary: their kinds and the CLI spec, the interface, the head's geometry,
and the in-memory capture every generator returns (see stages/multiview.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from headforge.captures.capture import Capture, CaptureFormat, Split, View
from headforge.captures.formats import write_capture
from headforge.errors import InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import measure_head
from headforge.stages.avatar import Avatar, avatar_vertices
from headforge.stages.photo_types import AlignedPhoto

__all__ = ["GeneratorKind", "GeneratorSpec", "HeadGeometry", "MultiViewGenerator", "ViewSet", "ViewSpec",
           "generated_capture", "head_geometry", "parse_generator_spec", "parse_view_spec", "straight_colour",
           "write_generated"]


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
