"""Contact sheets and colour maps (numpy in, PNG out).

A contact sheet is a grid of equally sized tiles with a caption above each column and an optional
label at the left of each row, e.g. rows = views, columns = ground truth | render | error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib import colormaps

from headforge.captures.images import write_image


def to_rgb(image: np.ndarray, background: float | Sequence[float] = 1.0) -> np.ndarray:
    """[H, W, 1|3|4] float -> [H, W, 3]: RGBA is composited over ``background``, grey is repeated."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        bg = np.broadcast_to(np.asarray(background, dtype=np.float32), (3,))
        return img[..., :3] * img[..., 3:] + bg * (1 - img[..., 3:])
    return img[..., :3]


def colorize(values: np.ndarray, vmin: float | None = None, vmax: float | None = None,
             cmap: str = "turbo", valid: np.ndarray | None = None) -> np.ndarray:
    """Scalar map [H, W] -> RGB [H, W, 3] through a matplotlib colour map; invalid pixels are black."""
    v = np.asarray(values, dtype=np.float32)
    ok = np.isfinite(v) if valid is None else (valid & np.isfinite(v))
    if not ok.any():
        return np.zeros((*v.shape, 3), np.float32)
    lo = float(v[ok].min()) if vmin is None else vmin
    hi = float(v[ok].max()) if vmax is None else vmax
    t = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = colormaps[cmap](t)[..., :3].astype(np.float32)
    rgb[~ok] = 0
    return rgb


def error_map(a: np.ndarray, b: np.ndarray, vmax: float = 0.2) -> np.ndarray:
    """Per-pixel mean absolute RGB error of two [H, W, 3] images as a colour map (0 .. vmax)."""
    return colorize(np.abs(np.asarray(a) - np.asarray(b)).mean(-1), 0.0, vmax, cmap="inferno")


def _caption(tile: np.ndarray, text: str, height: int) -> np.ndarray:
    bar = np.full((height, tile.shape[1], 3), 255, np.uint8)
    scale = max(0.35, height / 40)
    cv2.putText(bar, text, (4, int(height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (25, 25, 25), 1, cv2.LINE_AA)
    return np.concatenate([bar.astype(np.float32) / 255, tile], 0)


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], *, column_titles: Sequence[str] = (),
                  row_labels: Sequence[str] = (), tile_height: int = 192, gap: int = 4) -> np.ndarray:
    """Grid image [H, W, 3] of tiles (any size/channels; resized to ``tile_height``).

    Column titles form one header line; each row's label is written above its first tile.
    """
    if not rows or not rows[0]:
        raise ValueError("contact_sheet needs at least one tile")
    ncols = max(len(r) for r in rows)
    first = to_rgb(rows[0][0])
    tile_w = max(1, round(first.shape[1] * tile_height / first.shape[0]))
    cap_h = max(16, tile_height // 8)
    out_rows = []
    if column_titles:
        header = [_caption(np.ones((0, tile_w, 3), np.float32), t, cap_h) for t in column_titles]
        header += [np.ones((cap_h, tile_w, 3), np.float32)] * (ncols - len(header))
        out_rows.append(np.concatenate([np.pad(h, ((0, 0), (0, gap), (0, 0)), constant_values=1.0)
                                        for h in header], 1))
    for r, row in enumerate(rows):
        tiles = []
        for c in range(ncols):
            tile = np.ones((tile_height, tile_w, 3), np.float32)
            if c < len(row):
                tile = cv2.resize(to_rgb(row[c]), (tile_w, tile_height), interpolation=cv2.INTER_AREA)
            label = row_labels[r] if (c == 0 and r < len(row_labels)) else ""
            if row_labels:
                tile = _caption(tile, label, cap_h)
            tiles.append(np.pad(tile, ((0, gap), (0, gap), (0, 0)), constant_values=1.0))
        out_rows.append(np.concatenate(tiles, 1))
    return np.clip(np.concatenate(out_rows, 0), 0, 1)


def tile_grid(images: Sequence[np.ndarray], columns: int, *, labels: Sequence[str] = (),
              tile_height: int = 160) -> np.ndarray:
    """Lay out a flat list of images ``columns`` per row (labels per image)."""
    rows = [list(images[i:i + columns]) for i in range(0, len(images), columns)]
    grid_labels = [list(labels[i:i + columns]) for i in range(0, len(labels), columns)]
    out = []
    for r, row in enumerate(rows):
        titles = grid_labels[r] if r < len(grid_labels) else []
        out.append(contact_sheet([row + [np.ones_like(to_rgb(row[0]))] * (columns - len(row))],
                                 column_titles=titles, tile_height=tile_height))
    return np.concatenate(out, 0)


def save_sheet(path: str | Path, sheet: np.ndarray) -> Path:
    write_image(path, sheet)
    return Path(path)
