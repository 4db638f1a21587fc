"""The one bilinear image sampler (textures, UV maps, images at projected points).

Texel convention: ``st`` = (0, 0) is the outer corner of the first texel in memory, (1, 1) the far corner of
the last; texel i's centre is at (i + 0.5) / size. (OBJ uvs convert with ``representations.mesh.uv_to_texel``.)
Out-of-range taps wrap around (``wrap=True``, repeating textures) or clamp to the edge texel.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bilinear_flat(flat: Tensor, st: Tensor, size_h: Tensor, size_w: Tensor, offset: Tensor, *,
                  wrap: bool) -> Tensor:
    """Bilinear taps from images stored flat, one after another (e.g. the levels of a mip pyramid).

    flat [B, N, C] row-major texels; st [B, P, 2]; size_h, size_w, offset [B, P] int64 per point: the height
    and width of the image it samples and the index of that image's first texel in ``flat`` -> [B, P, C].
    Differentiable w.r.t. ``flat`` and ``st``.
    """
    x = st[..., 0] * size_w - 0.5  # [B, P] continuous texel coordinate (centre of texel i -> i)
    y = st[..., 1] * size_h - 0.5
    x0f, y0f = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0f)[..., None], (y - y0f)[..., None]  # [B, P, 1]
    x0, y0 = x0f.long(), y0f.long()

    def fix(i: Tensor, n: Tensor) -> Tensor:
        return torch.remainder(i, n) if wrap else torch.minimum(torch.maximum(i, torch.zeros_like(i)), n - 1)

    xs, ys = (fix(x0, size_w), fix(x0 + 1, size_w)), (fix(y0, size_h), fix(y0 + 1, size_h))

    def tap(yy: Tensor, xx: Tensor) -> Tensor:  # -> [B, P, C]
        idx = offset + yy * size_w + xx  # [B, P]
        return torch.gather(flat, 1, idx[..., None].expand(-1, -1, flat.shape[-1]))

    top = tap(ys[0], xs[0]) * (1 - fx) + tap(ys[0], xs[1]) * fx
    bottom = tap(ys[1], xs[0]) * (1 - fx) + tap(ys[1], xs[1]) * fx
    return top * (1 - fy) + bottom * fy


def bilinear_image(image: Tensor, st: Tensor, *, wrap: bool = False) -> Tensor:
    """Sample one image [H, W, C] at points st [P, 2] (texel convention) -> [P, C]; clamps unless ``wrap``."""
    h, w, c = image.shape
    zeros = torch.zeros(1, st.shape[0], dtype=torch.int64, device=st.device)
    out = bilinear_flat(image.reshape(1, h * w, c), st[None].to(image.dtype), zeros + h, zeros + w, zeros,
                        wrap=wrap)
    return out[0]
