"""Reading and writing images with clear errors. Images are float32 in [0, 1], [H, W, C]."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from headforge.atomic import atomic_path
from headforge.errors import InputError
from headforge.io.files import read_bytes, require_finite


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """Read an 8/16-bit or float PNG/JPEG/TIFF/... as float32 [H, W, C] (C = 1, 3 or 4; RGB(A) order); 8/16-bit
    samples are scaled to [0, 1]. Missing, empty, truncated or non-image files are refused, and so are float
    images holding NaN or Inf (with the number of such pixels): they would poison training at its first step."""
    path = Path(path)
    fix = "check the path listed in the camera file"
    data = np.frombuffer(read_bytes(path, what, fix=fix), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{what} is not an image, or is truncated or corrupt", path=path,
                         fix="re-export it as PNG or JPEG")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype == np.float32:
        scale = 1.0
    else:
        raise InputError(f"unsupported image sample type {img.dtype}", path=path,
                         fix="use 8- or 16-bit PNG/JPEG images")
    if scale == 1.0:
        require_finite(img, path, what, items="pixels", item_axes=img.ndim - 2,
                       fix="re-export the image with finite values (clamp or fill the NaN/Inf pixels)")
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 3:
        img = img[..., ::-1]
    elif img.shape[2] == 4:
        img = img[..., [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image as float32 [H, W] in [0, 1] (alpha channel if present, else the mean of channels)."""
    img = read_image(path, "mask")
    return img[..., 3] if img.shape[2] == 4 else img.mean(-1)


def write_image(path: str | Path, image: np.ndarray, bits: int = 8) -> None:
    """Write float [H, W, C] in [0, 1] (C = 1, 3, 4) as PNG/JPEG, atomically."""
    path = Path(path)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if not np.isfinite(img).all():
        raise ValueError(f"refusing to write non-finite values to {path}")
    maxval = 255 if bits == 8 else 65535
    q = np.round(np.clip(img, 0, 1) * maxval).astype(np.uint8 if bits == 8 else np.uint16)
    if q.shape[2] == 3:
        q = q[..., ::-1]
    elif q.shape[2] == 4:
        q = q[..., [2, 1, 0, 3]]
    ok, buf = cv2.imencode(path.suffix or ".png", q)
    if not ok:
        raise InputError(f"cannot encode an image as {path.suffix!r}", path=path, fix="use .png or .jpg")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging downscale (bilinear upscale), keeping [H, W, C]."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR
    out = cv2.resize(img, (width, height), interpolation=interp)
    return out[..., None] if out.ndim == 2 else out
