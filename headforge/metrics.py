"""Image-quality metrics: PSNR, SSIM (differentiable, also used as a loss), masked PSNR, LPIPS if present.

Images are [..., H, W, 3] float in [0, 1]. SSIM uses the standard 11x11 Gaussian window (sigma 1.5),
C1 = 0.01^2, C2 = 0.03^2, 'valid' convolution as in the reference implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB per image. pred/target [B, H, W, 3]; mask [B, H, W] selects the pixels counted."""
    err = (pred - target).pow(2).mean(-1)  # [B, H, W]
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = (mask > 0.5).to(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM per image, pred/target [B, H, W, 3] -> [B]. Differentiable."""
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    gx = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    gy = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


@dataclass(frozen=True)
class LpipsStatus:
    available: bool
    reason: str


def lpips_status() -> LpipsStatus:
    """LPIPS needs the `lpips` package and its backbone weights already on disk; never downloads."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return LpipsStatus(False, "the lpips package is not installed (pip install lpips); LPIPS not computed")
    hub = torch.hub.get_dir()
    import glob
    import os

    if not glob.glob(os.path.join(hub, "checkpoints", "alexnet-*.pth")):
        return LpipsStatus(False, f"AlexNet backbone weights are not in {hub}/checkpoints and are never "
                                  "downloaded at run time; LPIPS not computed")
    return LpipsStatus(True, "lpips (alex) with local weights")


def lpips_alex(pred: Tensor, target: Tensor) -> Tensor:  # [B, H, W, 3] -> [B]
    import lpips

    model = lpips.LPIPS(net="alex", verbose=False, pretrained=True).to(pred.device).eval()
    with torch.no_grad():
        d = model(pred.permute(0, 3, 1, 2) * 2 - 1, target.permute(0, 3, 1, 2) * 2 - 1)
    return d.flatten()


def mse_to_psnr(mse: float) -> float:
    return -10 * math.log10(max(mse, 1e-12))
