"""Reading one photo for the single-photo path: EXIF orientation applied, any PIL mode, the EXIF focal length.

``read_photo(path) -> PhotoImage``: pixels as float32 sRGB [H, W, 3] in [0, 1] of the *upright* photo (the EXIF
``Orientation`` tag, 0x0112, applied with ``PIL.ImageOps.exif_transpose``), through ``io.files.read_pil_image``
so that a missing, empty, truncated or non-image file is an ``InputError`` naming it.

Modes: 8-bit (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ...) are converted by PIL to RGB (a palette with
transparency to RGBA); 16-bit grey (``I;16*``) is scaled by 1/65535; 32-bit ``I`` is read as 16-bit samples
(values beyond 0..65535 are refused); ``F`` must be finite and is clipped to [0, 1]. Grey is repeated into
three channels. An alpha channel (``RGBA``, ``LA``, ``PA``, a palette's transparency) is composited on white,
FaceLift's own convention for RGBA inputs, and kept in ``alpha`` as a mask hint (align_photo multiplies the
person segmentation by it). ICC profiles are not applied: the samples are taken as sRGB.

EXIF focal facts (``FocalInfo``): ``FocalLengthIn35mmFilm`` (0xA405), ``FocalLength`` (0x920A) and the focal-plane
resolution (0xA20E, 0xA210, with ``ExifImageWidth`` 0xA002 when the file was resized since), from the Exif
sub-IFD (0x8769). Which one becomes the camera's focal length is decided in ``stages/photo_camera.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from headforge.errors import InputError
from headforge.io.files import read_pil_image, require_finite

__all__ = ["FocalInfo", "PhotoImage", "photo_from_array", "read_photo"]

PHOTO_FIX = "give a photo as a PNG, JPEG, TIFF or WebP file (re-export it if it does not open in an image viewer)"
EXIF_IFD = 0x8769
TAG_ORIENTATION, TAG_FOCAL, TAG_FOCAL_35MM = 0x0112, 0x920A, 0xA405
TAG_PLANE_XRES, TAG_PLANE_UNIT, TAG_EXIF_WIDTH, TAG_EXIF_HEIGHT = 0xA20E, 0xA210, 0xA002, 0xA003
PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, micrometre


@dataclass(frozen=True)
class FocalInfo:
    """What the file's EXIF says about the lens; None where a tag is missing, zero or not a number."""

    focal_35mm: float | None = None  # FocalLengthIn35mmFilm, mm (equivalent on a 36 x 24 mm frame)
    focal_mm: float | None = None  # FocalLength, mm (the real lens)
    focal_px: float | None = None  # FocalLength x focal-plane resolution, in pixels of the upright image


@dataclass(frozen=True, eq=False)
class PhotoImage:
    rgb: Tensor  # [H, W, 3] float32 sRGB in [0, 1], upright (EXIF orientation applied), alpha composited on white
    alpha: Tensor | None  # [H, W] float32 in [0, 1] when the file had transparency, else None
    focal: FocalInfo
    orientation: int  # the EXIF orientation tag that was applied (1 = none)
    mode: str  # the file's PIL mode ("RGB", "I;16", ...)
    source: Path | None  # the file; None for an in-memory photo

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def name(self) -> str:
        return str(self.source) if self.source is not None else "in-memory photo"


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def focal_info(exif: Image.Exif, upright_width: int, upright_height: int, orientation: int) -> FocalInfo:
    """The focal facts of an EXIF block (see the module doc); ``upright_*`` is the image after orientation."""
    ifd = exif.get_ifd(EXIF_IFD)
    f35, fmm = _number(ifd.get(TAG_FOCAL_35MM)), _number(ifd.get(TAG_FOCAL))
    fpx = None
    xres, unit = _number(ifd.get(TAG_PLANE_XRES)), ifd.get(TAG_PLANE_UNIT, 2)
    if fmm is not None and xres is not None and unit in PLANE_UNIT_MM:
        stored_w = upright_height if orientation in (5, 6, 7, 8) else upright_width  # the sensor's x axis
        exif_w = _number(ifd.get(TAG_EXIF_WIDTH))
        fpx = fmm * xres / PLANE_UNIT_MM[unit] * (stored_w / exif_w if exif_w else 1.0)
    return FocalInfo(f35, fmm, fpx)


def _pixels(im: Image.Image, path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb [H, W, 3] float32, alpha [H, W] float32 or None) of any PIL mode (see the module doc)."""
    where = path if path is not None else "in-memory photo"
    if im.mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, -1), None
    if im.mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"32-bit integer photo holds values {a.min()}..{a.max()}, outside 16-bit samples",
                             path=where, fix="re-export it as an 8- or 16-bit image")
        return np.repeat((a.astype(np.float32) / 65535.0)[..., None], 3, -1), None
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        require_finite(a, path, "photo", items="pixels", fix="re-export the photo with finite values")
        return np.repeat(np.clip(a, 0, 1)[..., None], 3, -1), None
    has_alpha = "A" in im.getbands() or "transparency" in im.info
    a = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    if not has_alpha:
        return a, None
    alpha = a[..., 3]
    return a[..., :3] * alpha[..., None] + (1.0 - alpha[..., None]), alpha  # composited on white


def photo_from_pil(im: Image.Image, source: Path | None) -> PhotoImage:
    """A decoded PIL image (EXIF orientation not yet applied) as a PhotoImage."""
    exif = im.getexif()
    orientation = int(exif.get(TAG_ORIENTATION, 1) or 1)
    upright = ImageOps.exif_transpose(im) if orientation != 1 else im
    if upright.width == 0 or upright.height == 0:
        raise InputError("photo has no pixels", path=source or "in-memory photo", fix=PHOTO_FIX)
    rgb, alpha = _pixels(upright, source)
    return PhotoImage(torch.from_numpy(np.ascontiguousarray(rgb)), None if alpha is None else torch.from_numpy(alpha),
                      focal_info(exif, upright.width, upright.height, orientation), orientation, im.mode, source)


def read_photo(path: str | Path) -> PhotoImage:
    """The photo at ``path``, upright, as float32 sRGB (see the module doc); InputError naming the file when it
    is missing, empty, not an image, truncated or corrupt."""
    path = Path(path)
    return photo_from_pil(read_pil_image(path, "photo", fix=PHOTO_FIX), path)


def photo_from_array(rgb, source: Path | None = None) -> PhotoImage:
    """An in-memory upright photo: uint8 or float [H, W, 3] (float in [0, 1] sRGB); no EXIF."""
    a = rgb.detach().cpu().numpy() if isinstance(rgb, Tensor) else np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        require_finite(a, source, "photo", items="pixels", item_axes=1)
        a = np.clip(a.astype(np.float32), 0, 1)
    return PhotoImage(torch.from_numpy(np.ascontiguousarray(a)), None, FocalInfo(), 1, "RGB", source)
