"""Cameras, rotations, rays, rigs and the canonical head frame. See DESIGN.md."""

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import Rays, generate_rays

__all__ = ["Cameras", "Rays", "generate_rays"]
