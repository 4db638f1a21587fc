"""The prior generator's view sets, built in the rig frame and moved into the photo's world by the fit's similarity.

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

import torch

from headforge.captures.formats import read_capture
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig, spherical_directions
from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import transform_cameras
from headforge.geometry.rotations import look_at
from headforge.stages.multiview_base import HeadGeometry, ViewSet, ViewSpec

__all__ = ["FACELIFT_AZIMUTHS_DEG", "FACELIFT_FOV_DEG", "FACELIFT_VIEW_NAMES", "facelift_cameras", "view_cameras"]

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
