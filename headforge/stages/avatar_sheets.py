"""Pictures of an avatar: the expressions sheet (a dozen ARKit expressions x three views) and comparison sheets
(hair swap: receiver | donor | result; texture edits: before | after).

Here in stages, not in viz, because the renders need :mod:`headforge.stages.avatar_layers` and viz sits below
stages; the layout helpers are the rig sheet's (``viz/rig_sheet.py``: ``labelled``, ``tile_grid``, ``text_row``).
Renders are :func:`composite_render` in the rig frame (head frame: +y up, face toward +z, +x the subject's left):
the mesh face layer under the Gaussian layers (``mesh_face=False``: the Gaussians alone). Cameras look at the
centre of the neutral head (face skin, scalp and ears) from the front, from the subject's left at 45 degrees
(3/4 left) and from the subject's right (profile right), framing a sphere of ``FRAME_MARGIN`` times the head's
largest half-extent, so hair inside that sphere shows and an avatar and its edit get the same cameras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from headforge.geometry.cameras import Cameras
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.head_rig import Region
from headforge.stages.avatar import Avatar, avatar_vertices
from headforge.stages.avatar_layers import composite_render
from headforge.viz.rig_sheet import SheetTile, framing_camera, labelled, layout, text_row, tile_grid

__all__ = ["DEFAULT_EXPRESSIONS", "DEFAULT_VIEWS", "SheetExpression", "SheetView", "avatar_cameras",
           "before_after_sheet", "comparison_sheet", "expressions_sheet"]

BACKGROUND = 0.93  # the rig sheet's grey
FRAME_MARGIN = 1.35  # the framed sphere's radius over the head's largest half-extent (room for hair)
HEAD_REGIONS = (Region.FACE_SKIN, Region.SCALP, Region.EARS)


class SheetView(StrEnum):
    FRONT = "front"  # from +z
    THREE_QUARTER_LEFT = "3/4 left"  # from the subject's left front, 45 degrees
    PROFILE_RIGHT = "profile right"  # from -x, the subject's right side


DEFAULT_VIEWS: tuple[SheetView, ...] = tuple(SheetView)
VIEW_DIRECTIONS: dict[SheetView, tuple[float, float, float]] = {
    SheetView.FRONT: (0.0, 0.0, 1.0),
    SheetView.THREE_QUARTER_LEFT: (math.sqrt(0.5), 0.0, math.sqrt(0.5)),
    SheetView.PROFILE_RIGHT: (-1.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class SheetExpression:
    label: str
    shapes: tuple[str, ...]  # ARKit names set to weight 1 (none: the neutral)


DEFAULT_EXPRESSIONS: tuple[SheetExpression, ...] = (
    SheetExpression("neutral", ()),
    SheetExpression("jawOpen", ("jawOpen",)),
    SheetExpression("mouthSmile L+R", ("mouthSmileLeft", "mouthSmileRight")),
    SheetExpression("eyeBlink L+R", ("eyeBlinkLeft", "eyeBlinkRight")),
    SheetExpression("browInnerUp", ("browInnerUp",)),
    SheetExpression("mouthPucker", ("mouthPucker",)),
    SheetExpression("mouthFunnel", ("mouthFunnel",)),
    SheetExpression("cheekPuff", ("cheekPuff",)),
    SheetExpression("browDown L+R", ("browDownLeft", "browDownRight")),
    SheetExpression("eyeWide L+R", ("eyeWideLeft", "eyeWideRight")),
    SheetExpression("mouthFrown L+R", ("mouthFrownLeft", "mouthFrownRight")),
    SheetExpression("jawLeft", ("jawLeft",)),
)


def expression_weights(expression: SheetExpression) -> torch.Tensor:  # -> [52]
    w = torch.zeros(NUM_ARKIT, dtype=torch.float64)
    for name in expression.shapes:
        if name not in ARKIT_NAMES:
            raise ValueError(f"{name!r} in {expression.label!r} is not an ARKit blendshape name")
        w[ARKIT_NAMES.index(name)] = 1.0
    return w


def avatar_cameras(avatar: Avatar, tile: int, views: tuple[SheetView, ...] = DEFAULT_VIEWS) -> Cameras:
    """Rig-frame cameras of ``tile`` x ``tile`` pixels around the avatar's neutral head (see the module doc)."""
    verts = avatar_vertices(avatar, avatar.neutral_params(), world=False)[0]
    rig = avatar.rig
    keep = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for region in HEAD_REGIONS:
        if region in rig.region_names:
            keep |= rig.region_mask(region)
    pts = verts[keep] if bool(keep.any()) else verts
    lo, hi = pts.min(0).values, pts.max(0).values
    centre, radius = (lo + hi) / 2, float((hi - lo).max()) / 2 * FRAME_MARGIN
    cams = [framing_camera(centre, torch.tensor(VIEW_DIRECTIONS[v]), radius, radius, radius, tile, tile)
            for v in views]
    return Cameras.cat(cams)


def render_views(avatar: Avatar, weights: torch.Tensor | None, cameras: Cameras, mesh_face: bool) -> np.ndarray:
    """The views side by side [H, W * C, 3] of the avatar under ARKit ``weights`` [52] (None: neutral)."""
    params = avatar.frame_params(expression=weights)
    rgb, _ = composite_render(avatar, params, cameras, torch.full((3,), BACKGROUND), mesh_face=mesh_face,
                              world=False)
    return torch.cat(list(rgb.clamp(0, 1)), dim=1).numpy()


def _sheet(title: str, tiles: list[SheetTile], columns: int, tile: int) -> np.ndarray:
    cap, gap = layout(tile)
    grid = tile_grid([labelled(t, cap) for t in tiles], columns, gap)
    return np.clip(np.concatenate([text_row(title, grid.shape[1], cap), grid], 0), 0, 1)


def expressions_sheet(avatar: Avatar, names: tuple[SheetExpression, ...] = DEFAULT_EXPRESSIONS,
                      views: tuple[SheetView, ...] = DEFAULT_VIEWS, *, tile: int = 192, columns: int = 3,
                      mesh_face: bool = True) -> np.ndarray:
    """[H, W, 3] in [0, 1]: one labelled tile per expression (its views side by side), ``columns`` per row. A
    shape the rig lacks is drawn washed out and labelled missing (as the rig sheet does)."""
    cams = avatar_cameras(avatar, tile, views)
    present = dict(zip(ARKIT_NAMES, avatar.rig.expression_present.tolist(), strict=True))
    tiles = []
    for e in names:
        w = expression_weights(e)
        tiles.append(SheetTile(e.label, render_views(avatar, w, cams, mesh_face),
                               missing=not all(present[n] for n in e.shapes)))
    layers = ", ".join(f"{k} {v}" for k, v in avatar.gaussians.counts().items() if v)
    title = f"ARKit expressions at weight 1 ({'mesh face + ' if mesh_face else ''}Gaussians: {layers}); views " \
        + ", ".join(str(v) for v in views)
    return _sheet(title, tiles, columns, tile)


def comparison_sheet(title: str, avatars: list[tuple[str, Avatar]], views: tuple[SheetView, ...] = DEFAULT_VIEWS,
                     *, tile: int = 192, mesh_face: bool = True, frame: Avatar | None = None) -> np.ndarray:
    """One row per (label, avatar), neutral, its views side by side; one set of rig-frame cameras for all (every
    rig lives in the head frame), framed on ``frame`` (default: the first avatar)."""
    cams = avatar_cameras(avatars[0][1] if frame is None else frame, tile, views)
    tiles = []
    for label, avatar in avatars:
        counts = ", ".join(f"{k} {v}" for k, v in avatar.gaussians.counts().items() if v)
        tiles.append(SheetTile(f"{label} ({counts})", render_views(avatar, None, cams, mesh_face)))
    return _sheet(title, tiles, 1, tile)


def before_after_sheet(receiver: Avatar, donor: Avatar, result: Avatar, views: tuple[SheetView, ...] = DEFAULT_VIEWS,
                       *, tile: int = 192) -> np.ndarray:
    """The hair swap: receiver | donor | result, one row each, three views each."""
    return comparison_sheet("hair swap: views " + ", ".join(str(v) for v in views),
                            [("receiver", receiver), ("donor", donor), ("result", result)], views, tile=tile)
