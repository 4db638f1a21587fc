"""The background a training image is composited over, and the one it is evaluated over.

``RANDOM`` draws a new colour every step (needs masks: the renderer then has to learn transparency),
``WHITE`` / ``BLACK`` are fixed, ``LEARNED`` optimises one colour with the model (captures without
masks). Colours are RGB in [0, 1], shape [3].
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor, nn


class Background(StrEnum):
    RANDOM = "random"  # a new random colour each step (needs masks): transparency is learned right
    WHITE = "white"
    BLACK = "black"
    LEARNED = "learned"  # one colour optimised with the model (captures without masks)


FIXED_LEVEL = {Background.WHITE: 1.0, Background.BLACK: 0.0}
LEARNED_LR = 1e-2  # Adam learning rate of the learned colour
LEARNED_INIT = 0.5


def effective_background(choice: Background, has_masks: bool) -> Background:
    """A random background teaches transparency only through masks: without them the colour is learned."""
    return Background.LEARNED if (choice == Background.RANDOM and not has_masks) else Background(choice)


@dataclass(frozen=True)
class TrainingBackground:
    """The background of one training run. ``learned`` [3] is a parameter even when unused, so that every
    checkpoint has the same layout."""

    choice: Background
    learned: nn.Parameter

    @staticmethod
    def create(choice: Background, has_masks: bool, device) -> TrainingBackground:
        return TrainingBackground(effective_background(choice, has_masks),
                                  nn.Parameter(torch.full((3,), LEARNED_INIT, device=device)))

    def param_group(self, **extra) -> dict | None:
        """The optimizer group of the learned colour (None when it is not learned)."""
        if self.choice != Background.LEARNED:
            return None
        return {"params": [self.learned], "lr": LEARNED_LR, **extra}

    def sample(self, generator: torch.Generator, device) -> Tensor:
        """This step's colour [3]; RANDOM draws three numbers from ``generator`` (on the CPU)."""
        if self.choice == Background.RANDOM:
            return torch.rand(3, generator=generator).to(device)
        if self.choice == Background.LEARNED:
            return self.learned.clamp(0, 1)
        return torch.full((3,), FIXED_LEVEL[self.choice], device=device)

    def for_evaluation(self) -> Tensor:
        """The colour [3] (CPU) held-out views are rendered over: the learned one, else white."""
        if self.choice == Background.LEARNED:
            return self.learned.detach().clamp(0, 1).cpu()
        return torch.ones(3)

    def state(self) -> Tensor:
        return self.learned.detach().cpu()

    def load_state(self, value: Tensor) -> None:
        with torch.no_grad():
            self.learned.copy_(value)
