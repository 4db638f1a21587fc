"""The canonical head frame every stage works in.

**Canonical head frame.** Units are metres. +y is up, the face looks toward +z, and +x is the
subject's left (so the frame is right-handed: x = y × z). The origin is the *head centre*, found from
the vertices alone so that scans which include the neck and shoulders give the same answer as a bare
head:

1. Rotate the source axes so that up is +y and forward is +z. Let ``y_top`` be the crown (highest
   vertex) and ``W(d)`` the left-right extent (max x - min x) of all vertices less than ``d`` below
   the crown.
2. The *cranium width* ``c`` is ``W(d*)`` at the first depth ``d*`` where ``d* >= 0.6 W(d*)``. A
   head's width saturates about 8-10 cm below the crown, so this fixed point is reached on the
   cranium, long before the shoulders (which start ~25 cm down) can widen ``W``.
3. The centre height is ``y_c = y_top - 0.75 c`` (about eye/ear level, mid-way between chin and
   crown for human proportions). The centre's x and z are the middle of the bounding box (in x and z)
   of the *cranium band*: the vertices with ``y >= y_c``.
4. The *head width* (ear to ear) is the x extent of the vertices within ``0.1 c`` of ``y_c``.

Scaling is either from known units (``units="m" | "cm" | "mm"``) or to a target head width
(``head_width_m``; e.g. 0.25 for "the head scaled to 25 cm wide", used by the Chamfer metric).
The transform into the frame is a similarity ``p' = s R (p - centre)`` returned as a 4x4 matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Protocol, Self, TypeVar

import annotated_types as at
import torch
from torch import Tensor

from headforge.errors import InputError, MeshError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import make_rigid
from headforge.validation import Checked


class Axis(StrEnum):
    """A signed source axis (the command line takes the values: +x, -y, ...)."""

    POS_X = "+x"
    NEG_X = "-x"
    POS_Y = "+y"
    NEG_Y = "-y"
    POS_Z = "+z"
    NEG_Z = "-z"


class Units(StrEnum):
    M = "m"
    CM = "cm"
    MM = "mm"


UNIT_SCALE: dict[Units, float] = {Units.M: 1.0, Units.CM: 0.01, Units.MM: 0.001}
CRANIUM_RATIO = 0.6  # d* >= CRANIUM_RATIO * W(d*) defines the cranium width
CENTRE_DEPTH = 0.75  # centre height = crown - CENTRE_DEPTH * cranium width
WIDTH_BAND = 0.1  # head width measured within +-WIDTH_BAND * cranium width of the centre height


# An ear-to-ear width in metres: 0.155 for a real adult head, 0.25 for the Chamfer convention.
HeadWidth = Annotated[float, at.Gt(0), at.Le(1)]


@dataclass(frozen=True)
class HeadFrameSpec(Checked):
    """How a source mesh relates to the canonical frame. Give exactly one of units / head_width_m."""

    up: Axis = Axis.POS_Y  # source axis that points up
    forward: Axis = Axis.POS_Z  # source axis the face looks along
    units: Units | None = None  # source units, or None to scale to head_width_m
    head_width_m: HeadWidth | None = None  # scale so the ear-to-ear width is this many metres

    def __post_init__(self):
        super().__post_init__()
        if self.up[1] == self.forward[1]:
            raise InputError(f"head frame: up {self.up!r} and forward {self.forward!r} must be different axes",
                             fix="pick two perpendicular axes, e.g. up='+y', forward='+z'")
        if (self.units is None) == (self.head_width_m is None):
            raise InputError("head frame: give exactly one of units (m/cm/mm) or head_width_m",
                             fix="e.g. HeadFrameSpec(units='cm') or HeadFrameSpec(head_width_m=0.25)")


@dataclass(frozen=True)
class HeadMeasurements:
    """Head landmarks in the rotated source frame (source units)."""

    centre: Tensor  # [3]
    crown_y: float
    cranium_width: float
    head_width: float  # ear to ear at the centre height


def axis_rotation(up: Axis, forward: Axis) -> Tensor:  # -> [3, 3] R with R @ up = +y, R @ forward = +z
    def vec(a: Axis) -> Tensor:
        v = torch.zeros(3, dtype=torch.float64)
        v["xyz".index(a[1])] = 1.0 if a[0] == "+" else -1.0
        return v

    y, z = vec(up), vec(forward)
    x = torch.linalg.cross(y, z)
    return torch.stack([x, y, z])  # rows: source coordinates of the new axes


def measure_head(vertices: Tensor) -> HeadMeasurements:
    """Crown, cranium width, centre and ear-to-ear width of upright vertices [V, 3] (y up, face +z)."""
    v = vertices.double()
    if v.ndim != 2 or v.shape[0] < 4 or not bool(torch.isfinite(v).all()):
        raise MeshError("head frame needs at least 4 finite vertices", fix="check the mesh")
    crown = float(v[:, 1].max())
    depth = crown - v[:, 1]  # [V] >= 0
    order = torch.argsort(depth)
    d_sorted = depth[order]
    xs = v[order, 0]
    width = torch.cummax(xs, 0).values - torch.cummin(xs, 0).values  # [V] W at each vertex's depth
    hit = (d_sorted >= CRANIUM_RATIO * width) & (width > 0)
    if not bool(hit.any()):
        raise MeshError("cannot find the cranium: the mesh is wider than it is tall everywhere below the top",
                        fix="check HeadFrameSpec.up (is the head upright with that axis?)")
    cranium = float(width[int(hit.nonzero()[0])])
    centre_y = crown - CENTRE_DEPTH * cranium
    band = v[v[:, 1] >= centre_y]
    cx = 0.5 * float(band[:, 0].min() + band[:, 0].max())
    cz = 0.5 * float(band[:, 2].min() + band[:, 2].max())
    slab = v[(v[:, 1] - centre_y).abs() <= WIDTH_BAND * cranium]
    head_width = float(slab[:, 0].max() - slab[:, 0].min()) if len(slab) > 1 else cranium
    return HeadMeasurements(torch.tensor([cx, centre_y, cz], dtype=torch.float64), crown, cranium, head_width)


def head_frame_transform(vertices: Tensor, spec: HeadFrameSpec) -> Tensor:  # [V, 3] -> [4, 4] float64
    """Similarity transform taking source coordinates into the canonical head frame."""
    R = axis_rotation(spec.up, spec.forward)  # [3, 3]
    upright = vertices.double() @ R.T  # [V, 3]
    m = measure_head(upright)
    if spec.units is not None:
        scale = UNIT_SCALE[spec.units]
    else:
        scale = spec.head_width_m / m.head_width
    # p' = s (R p - centre)
    return make_rigid(scale * R, -scale * m.centre)


class Posable(Protocol):
    """A frozen dataclass with vertices that a similarity moves (e.g. representations.mesh.TexturedMesh)."""

    vertices: Tensor  # [V, 3]

    def transformed(self, matrix: Tensor) -> Self: ...  # matrix [4, 4]


M = TypeVar("M", bound=Posable)


def to_head_frame(mesh: M, spec: HeadFrameSpec) -> tuple[M, Tensor]:
    """The mesh in the canonical head frame and the [4, 4] transform that took it there."""
    T = head_frame_transform(mesh.vertices, spec)
    moved = mesh.transformed(T)
    return replace(moved, vertices=moved.vertices.to(mesh.vertices.dtype)), T


def split_similarity(T: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # [4, 4] -> s [], R [3, 3], t [3]
    M = T[:3, :3]
    det = torch.linalg.det(M.double())
    if not det > 0:
        raise ValueError(f"transform is not a proper similarity (det = {float(det):.3g}); mirrors are not allowed")
    s = det.pow(1.0 / 3.0).to(T.dtype)
    R = M / s
    if float((R.double() @ R.double().T - torch.eye(3, dtype=torch.float64)).abs().max()) > 1e-4:
        raise ValueError("transform is not a similarity (rotation times uniform scale plus translation)")
    return s, R, T[:3, 3]


def transform_cameras(cameras: Cameras, T: Tensor) -> Cameras:
    """Cameras expressed in a new world, given the similarity T [4, 4] mapping old world -> new world.

    With p' = s R p + t and old extrinsics (Rc, tc), the camera coordinates of p are Rc p + tc; the
    new extrinsics are Rc' = Rc R^T and tc' = s tc - Rc R^T t, which give s times the old camera
    coordinates: the same pixels, depths scaled by s, rotations still orthonormal.
    """
    s, R, t = split_similarity(T.double())
    w2c = cameras.world_to_camera.double()  # [N, 4, 4]
    Rc, tc = w2c[:, :3, :3], w2c[:, :3, 3]
    R_new = Rc @ R.T  # [N, 3, 3]
    t_new = s * tc - R_new @ t  # [N, 3]
    return replace(cameras, world_to_camera=make_rigid(R_new, t_new).to(cameras.world_to_camera.dtype))
