"""Camera rig generators: ring, sphere, NeRSemble-like frontal arc and FaceLift-like 32-view sphere.

All rigs look at ``target`` from a distance chosen so that a ball of radius ``subject_radius`` fills
``fill`` of the shorter image side; world up is +y and the subject faces +z (the head frame, see
head_frame.py), so azimuth 0 is in front of the face and positive azimuth moves toward the subject's
left (+x). Cameras are square unless ``aspect`` (width / height) says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import torch

from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at
from headforge.validation import Checked, ImageSide, Positive

FovDeg = Annotated[float, at.Gt(0), at.Lt(180)]  # a pinhole's field of view, degrees
TurnDeg = Annotated[float, at.Ge(0), at.Le(180)]  # how far a moving camera swings to either side, degrees
ViewCount = Annotated[int, at.Ge(1), at.Le(1024)]  # cameras of a generated rig


class RigKind(StrEnum):
    RING = "ring"  # one horizontal ring at a fixed elevation
    SPHERE = "sphere"  # Fibonacci sphere, num_views cameras
    SPHERE32 = "sphere32"  # FaceLift-style: 32 views on a Fibonacci sphere
    NERSEMBLE16 = "nersemble16"  # NeRSemble-style: 16 cameras in a frontal arc, portrait images


@dataclass(frozen=True)
class RigConfig(Checked):
    kind: RigKind = RigKind.SPHERE32
    num_views: ViewCount = 32  # used by ring and sphere
    resolution: ImageSide = 512  # image height in pixels (width = round(resolution * aspect))
    fov_deg: FovDeg = 30.0  # vertical field of view
    subject_radius: Positive = 0.16  # metres; a head with neck fits in ~0.16 m
    fill: Annotated[float, at.Gt(0), at.Le(1)] = 0.9  # fraction of the image's shorter side the subject ball spans
    elevation_deg: Annotated[float, at.Ge(-90), at.Le(90)] = 0.0  # ring elevation
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _distance(cfg: RigConfig, aspect: float) -> float:
    half = math.radians(cfg.fov_deg) / 2
    half_short = half if aspect >= 1 else math.atan(math.tan(half) * aspect)
    return cfg.subject_radius / (math.sin(half_short) * cfg.fill)


def _cameras_at(directions: torch.Tensor, cfg: RigConfig, aspect: float, prefix: str) -> Cameras:
    # directions [N, 3] unit vectors from the target toward each camera
    target = torch.tensor(cfg.target, dtype=torch.float32)
    eye = target + directions * _distance(cfg, aspect)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(eye).clone()
    # Looking straight up or down: use the facing direction as "up" to keep look_at defined.
    vertical = (directions[:, 1].abs() > 0.999)
    up[vertical] = torch.tensor([0.0, 0.0, 1.0])
    w2c = look_at(eye, target.expand_as(eye), up)
    height = cfg.resolution
    width = round(cfg.resolution * aspect)
    f = (height / 2) / math.tan(math.radians(cfg.fov_deg) / 2)
    names = [f"{prefix}_{i:02d}" for i in range(len(directions))]
    return Cameras.create(w2c, f, f, width / 2, height / 2, width, height, names=names)


def spherical_directions(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """Unit vectors [N, 3]; azimuth 0 = +z (front), 90 = +x (subject's left); elevation up is +y."""
    az, el = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    return torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)


def fibonacci_directions(n: int, min_elevation_deg: float = -90.0) -> torch.Tensor:
    """``n`` near-uniform unit vectors [n, 3] on the sphere above ``min_elevation_deg``."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    lo = math.sin(math.radians(min_elevation_deg))
    y = 1 - (i / n) * (1 - lo)  # from the top down to the lowest allowed height
    r = torch.sqrt(torch.clamp(1 - y * y, min=0))
    golden = math.pi * (3 - math.sqrt(5))
    theta = golden * i
    return torch.stack([r * torch.sin(theta), y, r * torch.cos(theta)], -1).float()


def make_rig(cfg: RigConfig) -> Cameras:
    if cfg.kind == RigKind.RING:
        if cfg.num_views < 1:
            raise ValueError("a ring needs at least one view")
        az = torch.arange(cfg.num_views) * (360.0 / cfg.num_views)
        dirs = spherical_directions(az, torch.full_like(az, cfg.elevation_deg))
        return _cameras_at(dirs, cfg, 1.0, "ring")
    if cfg.kind == RigKind.SPHERE:
        if cfg.num_views < 1:
            raise ValueError("a sphere rig needs at least one view")
        return _cameras_at(fibonacci_directions(cfg.num_views), cfg, 1.0, "sphere")
    if cfg.kind == RigKind.SPHERE32:
        # FaceLift renders its training heads from 32 views all around; we keep the lowest views
        # 30 degrees under the horizon, where the neck is cut off.
        return _cameras_at(fibonacci_directions(32, min_elevation_deg=-30.0), cfg, 1.0, "sphere32")
    if cfg.kind == RigKind.NERSEMBLE16:
        # NeRSemble's studio: 16 cameras on a frontal arc about 1 m from the subject, spanning roughly
        # +-70 degrees horizontally on two slightly different heights, with portrait 2200x3208 images.
        az = torch.tensor([-70, -50, -30, -10, 10, 30, 50, 70, -60, -40, -20, 0, 20, 40, 60, 0], dtype=torch.float32)
        el = torch.tensor([8.0] * 8 + [-8.0] * 7 + [25.0])
        return _cameras_at(spherical_directions(az, el), cfg, 2200 / 3208, "cam")
    raise ValueError(f"unknown rig kind {cfg.kind!r}")
