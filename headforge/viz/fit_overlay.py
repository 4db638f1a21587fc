"""The overlay sheet of a rig fit: per view, the photo with the fit drawn over it, and an error map.

Each view gives one tile of three panels side by side:

1. the view as captured;
2. the view with the fitted mesh drawn over it (the boundaries of a label image, thin and translucent: the
   caller passes the cells of a grid over the rig's UVs, which stays readable where triangles are a few pixels
   wide, or triangle ids), the detected landmarks (green dots) and the fitted landmarks the head does not hide
   (red dots; NaN points are not drawn), each pair joined by a yellow line when more than 3 px apart;
3. the per-pixel error |render - view| of the textured fit over the scored face region, as a heat map
   (0 to ``error_max``, mean over RGB), grey elsewhere.

The caption names the view, its landmark median error and, for a held-out view, that it was held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from headforge.viz.rig_sheet import SheetTile, labelled, layout, text_row, tile_grid

DETECTED = (40, 220, 60)
FITTED = (235, 40, 40)
LINK = (250, 220, 0)
EDGE_RGB = np.array([0.15, 0.85, 1.0], np.float32)
EDGE_ALPHA = 0.35
LINK_MIN_PX = 3.0


@dataclass(frozen=True, eq=False)
class OverlayView:
    name: str
    image: Tensor  # [H, W, 3] sRGB in [0, 1]
    labels: Tensor  # [H, W] int64 what the mesh shows at each pixel (UV grid cell or triangle id), -1 where empty
    detected: Tensor  # [L, 2] pixels, NaN where not detected
    fitted: Tensor  # [L, 2] pixels of the fitted landmarks
    error: Tensor  # [H, W] mean |render - view| over RGB, NaN outside the scored region
    median_px: float  # NaN when no landmark was detected
    held_out: bool = False


def edge_map(labels: Tensor) -> Tensor:  # [H, W] int64 -> [H, W] bool: a pixel whose neighbour differs
    t = labels
    edge = torch.zeros_like(t, dtype=torch.bool)
    edge[:, 1:] |= (t[:, 1:] != t[:, :-1]) & (t[:, 1:] >= 0)
    edge[1:, :] |= (t[1:, :] != t[:-1, :]) & (t[1:, :] >= 0)
    return edge


def heat(error: Tensor, vmax: float) -> np.ndarray:  # [H, W] (NaN outside) -> [H, W, 3] float in [0, 1]
    x = (error / vmax).clamp(0, 1).numpy()
    rgb = np.stack([np.clip(1.5 * x, 0, 1), np.clip(1.5 * x - 0.5, 0, 1) * 0.9 + 0.1 * x, 0.25 * (1 - x)], -1)
    rgb = rgb.astype(np.float32)
    rgb[np.isnan(error.numpy())] = 0.5
    return rgb


def overlay_panel(v: OverlayView) -> np.ndarray:  # -> [H, W, 3] float
    img = v.image.float().numpy().copy()
    e = edge_map(v.labels).numpy()
    img[e] = (1 - EDGE_ALPHA) * img[e] + EDGE_ALPHA * EDGE_RGB
    pil = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = max(1.0, img.shape[0] / 256)
    for d, f in zip(v.detected.tolist(), v.fitted.tolist(), strict=True):
        if d[0] == d[0] and f[0] == f[0] and ((d[0] - f[0]) ** 2 + (d[1] - f[1]) ** 2) ** 0.5 > LINK_MIN_PX:
            draw.line([tuple(d), tuple(f)], fill=LINK, width=1)
    for pts, colour in ((v.detected, DETECTED), (v.fitted, FITTED)):
        for x, y in pts.tolist():
            if x == x:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(pil, dtype=np.float32) / 255


def view_tile(v: OverlayView, error_max: float) -> SheetTile:
    panels = np.concatenate([v.image.float().numpy(), overlay_panel(v), heat(v.error, error_max)], 1)
    med = "no face" if v.median_px != v.median_px else f"{v.median_px:.2f} px"
    label = f"{v.name}: landmarks {med}" + (" (held out)" if v.held_out else "")
    return SheetTile(label, np.clip(panels, 0, 1), False)


def overlay_sheet(title: str, views: list[OverlayView], *, columns: int = 2, error_max: float = 0.25
                  ) -> np.ndarray:
    """The sheet [H, W, 3] float in [0, 1]: a title, a legend and one tile per view."""
    if not views:
        raise ValueError("overlay_sheet: no views to draw")
    tile_h = int(views[0].image.shape[0])
    cap, gap = layout(tile_h)
    grid = tile_grid([labelled(view_tile(v, error_max), cap) for v in views], columns, gap)
    legend = ["each view: captured | mesh (cyan: a grid over its UVs), landmarks detected (green) and fitted (red),",
              f"yellow where more than {LINK_MIN_PX:g} px apart | |render - view| on the face region, 0 (dark) to "
              f"{error_max:g} (bright); grey: not scored"]
    rows = [text_row(t, grid.shape[1], cap) for t in (title, *legend)]
    return np.clip(np.concatenate([*rows, grid], 0), 0, 1)
