"""Shared photo helpers for the single-photo tests: the scikit-image portrait in files of every mode, with EXIF,
side by side with a smaller copy, shrunk, and renders of the built-in head turned away from the camera.

``require_mediapipe`` skips a test without the ``face`` extra, except under ``CI=true`` where it fails (the pattern
of tests/test_face_landmarks.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_face_landmarks import require_mediapipe  # noqa: F401  (re-exported for the photo tests)

ORIENTATION_TAG, EXIF_IFD, FOCAL_35MM_TAG = 0x0112, 0x8769, 0xA405
# EXIF orientation -> the transpose that stores an upright image so that the tag turns it back upright
STORE_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def astronaut() -> np.ndarray:
    """[512, 512, 3] uint8: Eileen Collins' NASA portrait (public domain), shipped by scikit-image."""
    from skimage import data

    return data.astronaut()


def write_photo(path: Path, rgb: np.ndarray, *, orientation: int = 1, focal_35mm: float | None = None) -> Path:
    """Write an upright uint8 RGB image so that a reader applying EXIF gets it back: stored turned by
    ``orientation``'s inverse, with the tag (and FocalLengthIn35mmFilm when given)."""
    im = Image.fromarray(rgb)
    if orientation != 1:
        im = im.transpose(STORE_TRANSPOSE[orientation])
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    if focal_35mm is not None:
        exif.get_ifd(EXIF_IFD)[FOCAL_35MM_TAG] = focal_35mm
    im.save(path, exif=exif.tobytes())
    return path


def write_mode(path_stem: Path, rgb: np.ndarray, mode: str) -> tuple[Path, np.ndarray]:
    """The image saved in PIL ``mode`` (RGB, RGBA, L, I;16, P, CMYK) and the RGB uint8 a faithful reader gets."""
    im = Image.fromarray(rgb)
    if mode == "RGBA":
        out, expect = im.convert("RGBA"), rgb
    elif mode == "L":
        out = im.convert("L")
        expect = np.repeat(np.asarray(out)[..., None], 3, -1)
    elif mode == "I;16":
        grey = np.asarray(im.convert("L")).astype(np.uint16) * 257
        out, expect = Image.fromarray(grey), np.repeat((grey // 257).astype(np.uint8)[..., None], 3, -1)
    elif mode == "P":
        out = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        expect = np.array(out.convert("RGB"))
    elif mode == "CMYK":
        out, expect = im.convert("CMYK"), np.array(im.convert("CMYK").convert("RGB"))
    else:
        out, expect = im, rgb
    path = path_stem.with_suffix(".tif" if mode == "CMYK" else ".png")
    out.save(path)
    return path, expect


def side_by_side(big: np.ndarray, small_scale: float) -> np.ndarray:
    """The portrait beside a copy scaled by ``small_scale`` (top-aligned, white below)."""
    h, w = big.shape[:2]
    small = np.asarray(Image.fromarray(big).resize((round(w * small_scale), round(h * small_scale)),
                                                   Image.Resampling.LANCZOS))
    out = np.full((h, w + small.shape[1], 3), 255, np.uint8)
    out[:, :w], out[:small.shape[0], w:] = big, small
    return out


def shrunk(rgb: np.ndarray, scale: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS))


def rig_render(rig, yaw_deg: float, size: int = 512) -> np.ndarray:
    """The rig's neutral in flat skin/eye colours seen from ``yaw_deg`` (+: from the subject's left), uint8."""
    from headforge.stages.landmark_embedding import EmbedConfig, embed_cameras, render_views

    cams = embed_cameras(rig, EmbedConfig(size=size, yaws=(float(yaw_deg),), pitches=(0.0,)))
    return np.round(render_views(rig, cams)[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
