"""The rig sheet: every ARKit expression at weight 1 beside the neutral, and the skeleton posed.

The picture a user checks before trusting a rig (``headforge rig-sheet RIG --out sheet.png``). Each tile is the
rig deformed by :func:`headforge.representations.rig.deform.deform` and rendered by the mesh rasterizer with
head-light Lambert shading, so shape changes show without a texture. Vertices are coloured by how far they moved
from the neutral (millimetres, one shared scale with a colour bar under the grid), so the sheet shows WHERE each
shape moves; below ~0.3 mm a vertex stays grey.

Views (head frame: +y up, face toward +z, +x the subject's left): ``front`` looks at the face from +z, so the
subject's left is on the image's right; ``profile`` looks from +x at the subject's left side (the face toward the
image's left). Eye poses are shown in a wide crop around both eyes. The eye overlay shells (tear film, occlusion,
lashes) are not drawn: they would hide the eyeballs. A shape the rig lacks (``expression_present`` False) is
drawn from its all-zero row (so it equals the neutral), washed out and labelled "missing".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rotations import look_at
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.deform import RigPose, deform
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, Region
from headforge.validation import Checked, Count, Positive

BACKGROUND = 0.93  # tile background grey
BASE_GREY = 0.72  # colour of a vertex that did not move
HEAT_CMAP = "turbo"
HEAT_FADE_MM = 0.3  # below this displacement a vertex fades to grey (no colour for numerical noise)
FOV_DEG = 20.0
PUPIL_DEG = 14.0  # half-angle of the dark pupil cap drawn on each eyeball
MISSING_WASH = 0.6  # how far a missing shape's tile is washed toward white


class Framing(StrEnum):
    FACE = "face"  # front + profile of the face
    EYES = "eyes"  # a wide crop around both eyes, front only


TileSize = Annotated[int, at.Ge(16), at.Le(1024)]  # pixels; 1024: a 53-tile sheet of about 2-3 GB


@dataclass(frozen=True)
class RigSheetConfig(Checked):
    tile: TileSize = 256  # pixels: the height of a tile (a face tile is two square views wide with the profile)
    heat_max_mm: Positive = 10.0  # displacement at the top of the colour scale (larger values saturate)
    columns: Count = 6  # tiles per row
    profile: bool = True  # add a profile view beside each front view


@dataclass(frozen=True)
class SkeletonPose:
    label: str
    rotations: tuple[tuple[Joint, tuple[float, float, float]], ...]  # axis-angle (radians) in the parent frame
    framing: Framing


# Positive x rotation turns the face down (+z toward -y); positive y turns it toward the subject's left (+x).
SKELETON_POSES: tuple[SkeletonPose, ...] = (
    SkeletonPose("jaw open", ((Joint.JAW, (0.35, 0.0, 0.0)),), Framing.FACE),
    SkeletonPose("head turned left", ((Joint.HEAD, (0.0, 0.5, 0.0)),), Framing.FACE),
    SkeletonPose("head turned right", ((Joint.HEAD, (0.0, -0.5, 0.0)),), Framing.FACE),
    SkeletonPose("head nodded down", ((Joint.HEAD, (0.35, 0.0, 0.0)),), Framing.FACE),
    SkeletonPose("eyes at rest", (), Framing.EYES),
    SkeletonPose("eyes left", ((Joint.LEFT_EYE, (0.0, 0.35, 0.0)), (Joint.RIGHT_EYE, (0.0, 0.35, 0.0))),
                 Framing.EYES),
    SkeletonPose("eyes right", ((Joint.LEFT_EYE, (0.0, -0.35, 0.0)), (Joint.RIGHT_EYE, (0.0, -0.35, 0.0))),
                 Framing.EYES),
    SkeletonPose("eyes up", ((Joint.LEFT_EYE, (-0.3, 0.0, 0.0)), (Joint.RIGHT_EYE, (-0.3, 0.0, 0.0))),
                 Framing.EYES),
)


@dataclass(frozen=True)
class SheetTile:
    label: str
    image: np.ndarray  # [H, W, 3] float in [0, 1], unlabelled
    missing: bool = False


# ------------------------------------------------------------------------------------------ maths
def displacement_mm(neutral: Tensor, vertices: Tensor) -> Tensor:  # [V, 3], [B, V, 3] metres -> [B, V] mm
    return (vertices - neutral).norm(dim=-1) * 1000.0


def heat_colors(disp_mm: Tensor, vmax_mm: float) -> Tensor:  # [B, V] -> [B, V, 3] sRGB in [0, 1]
    """Grey where nothing moved, blending into the colour map's value for |delta| / vmax above HEAT_FADE_MM."""
    t = (disp_mm / vmax_mm).clamp(0, 1)
    lut = torch.from_numpy(colormaps[HEAT_CMAP](np.linspace(0, 1, 256))[:, :3].astype(np.float32))
    heat = lut[(t * 255).round().long()]  # [B, V, 3]
    a = (disp_mm / HEAT_FADE_MM).clamp(0, 1)[..., None]
    return (1 - a) * BASE_GREY + a * heat


def pupil_mask(rig: HeadRig) -> Tensor:  # [V] bool
    """Eyeball vertices within PUPIL_DEG of each eye joint's forward (+z) axis at rest: drawn dark, so a tile shows
    where the eyes look (an untextured eyeball shows no gaze). All False for a rig without an eyes region."""
    if Region.EYES not in rig.region_names:
        return torch.zeros(rig.num_vertices, dtype=torch.bool)
    eyes = rig.region_mask(Region.EYES)
    joints = rig.rest_joints.float()[[JOINTS.index(Joint.LEFT_EYE), JOINTS.index(Joint.RIGHT_EYE)]]  # [2, 3]
    rel = rig.template.float()[:, None] - joints  # [V, 2, 3]
    nearest = rel.norm(dim=-1).argmin(1)  # [V]
    d = rel[torch.arange(rig.num_vertices), nearest]  # [V, 3]
    forward = d[:, 2] / d.norm(dim=-1).clamp_min(1e-12)
    return eyes & (forward > math.cos(math.radians(PUPIL_DEG)))


def visible_faces(rig: HeadRig) -> Tensor:  # [F', 3]: the faces drawn (eye overlay shells left out)
    if Region.EYE_OVERLAYS not in rig.region_names:
        return rig.faces
    overlay = rig.region_mask(Region.EYE_OVERLAYS)
    keep = ~overlay[rig.faces].all(1)
    return rig.faces[keep]


def framing_camera(target: Tensor, direction: Tensor, half_w: float, half_h: float, depth: float, width: int,
            height: int) -> Cameras:
    """A pinhole looking at ``target`` from ``direction`` (unit, from the target), framing +-half_w x +-half_h
    metres at the target's depth, standing ``depth`` metres clear of it (the subject's near side)."""
    tan = math.tan(math.radians(FOV_DEG) / 2)
    dist = depth + max(half_h, half_w * height / width) / tan
    eye = target + direction * dist
    w2c = look_at(eye, target, torch.tensor([0.0, 1.0, 0.0]))
    f = (height / 2) / tan
    return Cameras.create(w2c, f, f, width / 2, height / 2, width, height)


def sheet_cameras(rig: HeadRig, framing: Framing, tile: int, profile: bool) -> Cameras:
    """The cameras of one tile, from the neutral: the face region's box (the whole rig without one), or the eyes."""
    tpl = rig.template.float()
    pts = tpl[rig.region_mask(Region.FACE_SKIN)] if Region.FACE_SKIN in rig.region_names else tpl
    lo, hi = pts.min(0).values, pts.max(0).values
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
    if framing is Framing.EYES:
        joints = rig.rest_joints.float()
        left, right = joints[JOINTS.index(Joint.LEFT_EYE)], joints[JOINTS.index(Joint.RIGHT_EYE)]
        sep = max(float((left - right).norm()), 0.2 * float(half.max()))
        return framing_camera((left + right) / 2, torch.tensor([0.0, 0.0, 1.0]), 1.0 * sep, 0.5 * sep,
                       float(half[2]), 2 * tile, tile)
    views = [framing_camera(centre, torch.tensor([0.0, 0.0, 1.0]), float(half[0]), float(half[1]), float(half[2]),
                     tile, tile)]
    if profile:
        views.append(framing_camera(centre, torch.tensor([1.0, 0.0, 0.0]), float(half[2]), float(half[1]),
                             float(half[0]), tile, tile))
    return Cameras.create(torch.cat([v.world_to_camera for v in views]), torch.cat([v.fx for v in views]),
                          torch.cat([v.fy for v in views]), torch.cat([v.cx for v in views]),
                          torch.cat([v.cy for v in views]), torch.cat([v.width for v in views]),
                          torch.cat([v.height for v in views]))


def render_tile(vertices: Tensor, faces: Tensor, colors: Tensor, cameras: Cameras) -> np.ndarray:
    """vertices [V, 3], colours [V, 3] -> [H, W * N, 3]: the N views side by side over the background grey."""
    mesh = TexturedMesh(vertices.float(), faces, vertex_colors=colors.float())
    out = render_mesh(mesh, cameras, shading=True)
    a = out.alpha[..., None]
    img = out.rgb * a + BACKGROUND * (1 - a)  # [N, H, W, 3]
    return torch.cat(list(img), dim=1).numpy()


# ------------------------------------------------------------------------------------------ tiles
def _tiles(rig: HeadRig, vertices: Tensor, labels: list[str], framings: list[Framing], missing: list[bool],
           cfg: RigSheetConfig) -> list[SheetTile]:
    faces = visible_faces(rig)
    colors = heat_colors(displacement_mm(rig.template.float(), vertices.float()), cfg.heat_max_mm)
    colors[:, pupil_mask(rig)] = 0.08
    cams = {f: sheet_cameras(rig, f, cfg.tile, cfg.profile) for f in set(framings)}
    return [SheetTile(label, render_tile(v, faces, c, cams[f]), m)
            for v, c, label, f, m in zip(vertices, colors, labels, framings, missing, strict=True)]


def expression_tiles(rig: HeadRig, cfg: RigSheetConfig = RigSheetConfig()) -> list[SheetTile]:
    """Tile 0: the neutral; then one per ARKit name at weight 1 (rest pose), in ``ARKIT_NAMES`` order."""
    n = len(ARKIT_NAMES)
    weights = torch.cat([torch.zeros(1, n), torch.eye(n)]).to(rig.template.dtype)  # [53, 52]
    with torch.no_grad():
        verts = deform(rig, None, weights, RigPose.rest(n + 1, dtype=rig.template.dtype))
    present = [True, *rig.expression_present.tolist()]
    return _tiles(rig, verts, ["neutral", *ARKIT_NAMES], [Framing.FACE] * (n + 1), [not p for p in present], cfg)


def pose_tiles(rig: HeadRig, cfg: RigSheetConfig = RigSheetConfig(),
               poses: tuple[SkeletonPose, ...] = SKELETON_POSES) -> list[SheetTile]:
    """One tile per skeleton pose (neutral expression), coloured by displacement from the rest pose."""
    dtype = rig.template.dtype
    pose = RigPose.rest(len(poses), dtype=dtype)
    for b, p in enumerate(poses):
        for joint, aa in p.rotations:
            pose.rotations[b, JOINTS.index(joint)] = torch.tensor(aa, dtype=dtype)
    with torch.no_grad():
        verts = deform(rig, None, torch.zeros(len(poses), len(ARKIT_NAMES), dtype=dtype), pose)
    return _tiles(rig, verts, [p.label for p in poses], [p.framing for p in poses], [False] * len(poses), cfg)


def rig_sheet(rig: HeadRig, cfg: RigSheetConfig = RigSheetConfig()) -> np.ndarray:
    """The whole sheet [H, W, 3] float in [0, 1]: title, expression grid, skeleton poses, colour bar."""
    title = f"{rig.source or 'head rig'}: {rig.num_vertices} vertices, {len(rig.missing_expressions())} of " \
            f"{len(ARKIT_NAMES)} ARKit shapes missing; front view (subject's left on the right)" \
            + (" + profile from the subject's left" if cfg.profile else "")
    return compose_sheet(title, expression_tiles(rig, cfg), pose_tiles(rig, cfg), cfg)


# ------------------------------------------------------------------------------------------ layout
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, px))


def labelled(tile: SheetTile, caption_px: int) -> np.ndarray:
    """The tile with its caption bar on top; a missing shape is washed out and says so."""
    img = tile.image if not tile.missing else tile.image * (1 - MISSING_WASH) + MISSING_WASH
    bar = Image.new("RGB", (img.shape[1], caption_px), (255, 255, 255))
    draw = ImageDraw.Draw(bar)
    text = f"{tile.label} (missing)" if tile.missing else tile.label
    draw.text((4, caption_px // 8), text, fill=(150, 150, 150) if tile.missing else (20, 20, 20),
              font=_font(int(caption_px * 0.7)))
    if tile.missing:
        body = Image.fromarray(np.round(img * 255).astype(np.uint8))
        ImageDraw.Draw(body).text((img.shape[1] // 2, img.shape[0] // 2), "missing", fill=(120, 0, 0),
                                  font=_font(img.shape[0] // 6), anchor="mm")
        img = np.asarray(body, dtype=np.float32) / 255
    return np.concatenate([np.asarray(bar, dtype=np.float32) / 255, img], 0)


def text_row(text: str, width: int, px: int) -> np.ndarray:
    row = Image.new("RGB", (width, int(px * 1.6)), (255, 255, 255))
    ImageDraw.Draw(row).text((8, int(px * 0.3)), text, fill=(0, 0, 0), font=_font(px))
    return np.asarray(row, dtype=np.float32) / 255


def tile_grid(tiles: list[np.ndarray], columns: int, gap: int) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = []
    for i in range(0, len(tiles), columns):
        cells = []
        for t in tiles[i:i + columns]:
            cell = np.ones((h + gap, w + gap, 3), np.float32)
            cell[:t.shape[0], :t.shape[1]] = t
            cells.append(cell)
        row = np.ones((h + gap, columns * (w + gap), 3), np.float32)
        row[:, :len(cells) * (w + gap)] = np.concatenate(cells, 1)
        rows.append(row)
    return np.concatenate(rows, 0)


def colour_bar(width: int, vmax_mm: float, px: int) -> np.ndarray:
    """A horizontal legend: grey (unmoved) then the colour map from 0 to vmax mm (saturating above)."""
    bar_w, bar_h = min(width - 16, 60 * px), px
    values = torch.linspace(0, vmax_mm, bar_w)[None]  # [1, bar_w] mm
    strip = heat_colors(values, vmax_mm)[0].numpy()  # [bar_w, 3]
    img = Image.new("RGB", (width, bar_h * 3), (255, 255, 255))
    img.paste(Image.fromarray(np.round(np.repeat(strip[None], bar_h, 0) * 255).astype(np.uint8)), (8, 0))
    draw = ImageDraw.Draw(img)
    for k in range(6):
        x = 8 + round(k / 5 * (bar_w - 1))
        draw.line([(x, bar_h), (x, bar_h + bar_h // 3)], fill=(0, 0, 0))
        label = f"{k / 5 * vmax_mm:g}" + (" mm (and above)" if k == 5 else "")
        draw.text((x, bar_h + bar_h // 3), label, fill=(0, 0, 0), font=_font(int(px * 0.8)),
                  anchor="lt" if k == 0 else "mt" if k < 5 else "rt")
    draw.text((bar_w + 24, 0), "vertex displacement from the neutral / rest pose", fill=(0, 0, 0),
              font=_font(int(px * 0.8)))
    return np.asarray(img, dtype=np.float32) / 255


def layout(tile: int) -> tuple[int, int]:
    """(caption bar height, gap between tiles) in pixels for a tile height."""
    return max(12, tile // 10), max(2, tile // 64)


def compose_sheet(title: str, expressions: list[SheetTile], poses: list[SheetTile],
                  cfg: RigSheetConfig) -> np.ndarray:
    """Title, the expression grid (``cfg.columns`` per row), the pose grid and the colour bar, one under another."""
    cap, gap = layout(cfg.tile)
    grid = tile_grid([labelled(t, cap) for t in expressions], cfg.columns, gap)
    pose_grid = tile_grid([labelled(t, cap) for t in poses], cfg.columns, gap)
    width = max(grid.shape[1], pose_grid.shape[1])

    def pad(img: np.ndarray) -> np.ndarray:
        return np.pad(img, ((0, 0), (0, width - img.shape[1]), (0, 0)), constant_values=1.0)

    parts = [text_row(title, width, cap), text_row("expressions at weight 1 (ARKit names)", width, cap),
             grid, text_row("skeleton poses (neutral expression)", width, cap), pose_grid,
             colour_bar(width, cfg.heat_max_mm, cap)]
    return np.clip(np.concatenate([pad(p) for p in parts], 0), 0, 1)
