"""Load a capture's views into memory as tensors for training and evaluation, with input checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from headforge.captures.capture import Capture
from headforge.errors import CaptureError
from headforge.geometry.cameras import Cameras


@dataclass(frozen=True)
class ViewBatch:
    indices: tuple[int, ...]  # view indices in the capture
    cameras: Cameras  # at the working resolution
    images: Tensor  # [N, H, W, 3] in [0, 1]
    alphas: Tensor | None  # [N, H, W] in [0, 1] or None when the capture has no masks

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device) -> ViewBatch:
        return ViewBatch(self.indices, self.cameras.to(device), self.images.to(device),
                         None if self.alphas is None else self.alphas.to(device))


def load_views(capture: Capture, indices: Sequence[int], *, progress: bool = False,
               min_coverage: float = 1e-4) -> ViewBatch:
    """Read ``indices`` at the capture's working resolution; all views must share one size.

    Fails, naming the image, for a view whose mask is empty (fully transparent) or whose image is
    constant (a blank frame), since neither can supervise anything.
    """
    if len(indices) == 0:
        raise CaptureError("no views selected (is the split empty?)", path=capture.source_path,
                           fix="check --test-every / test views leave views to train on")
    cams = capture.cameras[list(indices)]
    cams.same_size()
    images, alphas = [], []
    for i in tqdm(indices, desc="load views", unit="view", disable=not progress):
        view = capture.load(i)
        name = capture.views[i].image_path or f"view {i}"
        if view.alpha is not None and float((view.alpha > 0.5).float().mean()) < min_coverage:
            raise CaptureError("the view is fully transparent (its mask or alpha covers no pixel)", path=name,
                               fix="remove the view from the capture or fix its mask")
        if view.alpha is None and float(view.rgb.std()) < 1e-6:
            raise CaptureError("the view is a blank (constant) image", path=name,
                               fix="remove the view from the capture or replace the image")
        images.append(view.rgb)
        alphas.append(view.alpha)
    has_alpha = [a is not None for a in alphas]
    if any(has_alpha) and not all(has_alpha):
        missing = [capture.views[i].image_path for i, h in zip(indices, has_alpha, strict=True) if not h][:3]
        raise CaptureError(f"some views have masks and others do not (e.g. {missing})", path=capture.source_path,
                           fix="give every view a mask (or alpha channel), or none")
    return ViewBatch(tuple(indices), cams, torch.stack(images),
                     torch.stack(alphas) if all(has_alpha) else None)


def composite(images: Tensor, alphas: Tensor | None, background: Tensor) -> Tensor:
    """Ground truth over ``background``: [B, H, W, 3] (alpha [B, H, W] or None -> images unchanged)."""
    if alphas is None:
        return images
    a = alphas[..., None]
    return images * a + background * (1 - a)
