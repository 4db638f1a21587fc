"""Small MLP heads on top of an encoding: density (or SDF, see sdf.py) + geometry features, and view-dependent colour.

- :class:`MLP`: Linear/ReLU stack (``hidden`` wide, ``layers`` hidden layers), the last layer linear.
- Density: ``sigma = trunc_exp(raw + density_bias)`` (Instant-NGP / nerfacto's truncated exponential: the
  gradient uses exp(min(raw, 15)) so a large raw value cannot blow up the update).
- Colour, two view-dependence modes (``ColorConfig.view``):
  ``"sh_input"``: the SH basis of the unit direction (degree <= 3, headforge.geometry.sh) is concatenated to the
  geometry features and an MLP predicts rgb = sigmoid(out) (Instant-NGP's colour network);
  ``"sh_output"``: the MLP sees the geometry features only and predicts (degree+1)^2 SH coefficients per channel,
  rgb = sigmoid(sum_k c_k Y_k(d)) (Plenoxels-style; degree 0 means view-independent colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor, nn

from headforge.geometry.sh import num_sh_bases, sh_basis
from headforge.validation import Checked, Count, NonNegativeInt


class ViewMode(StrEnum):
    SH_INPUT = "sh_input"  # SH basis of the direction concatenated to the colour MLP's input
    SH_OUTPUT = "sh_output"  # the MLP outputs SH coefficients, evaluated at the direction


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:  # exp with a gradient clamped at exp(15)
    return _TruncExp.apply(x)


@dataclass(frozen=True)
class MLPConfig(Checked):
    hidden: Count = 64
    layers: NonNegativeInt = 1  # hidden layers


class MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, cfg: MLPConfig, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        dims = [in_dim] + [cfg.hidden] * cfg.layers + [out_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = activation()

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < len(self.linears) - 1:
                x = self.act(x)
        return x


@dataclass(frozen=True)
class DensityConfig(Checked):
    mlp: MLPConfig = MLPConfig()
    geo_features: NonNegativeInt = 15  # features handed to the colour head
    density_bias: float = -1.0  # added to the raw output before trunc_exp (starts nearly empty)


class DensityDecoder(nn.Module):
    """Encoding features [..., E] -> (sigma [..., 1] >= 0, geometry features [..., G])."""

    def __init__(self, in_dim: int, cfg: DensityConfig):
        super().__init__()
        self.cfg = cfg
        self.mlp = MLP(in_dim, 1 + cfg.geo_features, cfg.mlp)

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        out = self.mlp(feats)
        return trunc_exp(out[..., :1] + self.cfg.density_bias), out[..., 1:]


@dataclass(frozen=True)
class ColorConfig(Checked):
    mlp: MLPConfig = MLPConfig(hidden=64, layers=2)
    view: ViewMode = ViewMode.SH_INPUT
    sh_degree: Annotated[int, at.Ge(0), at.Le(3)] = 3


def direction_encoding(directions: Tensor, degree: int) -> Tensor:  # [..., 3] -> [..., (degree+1)^2]
    d = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return sh_basis(degree, d)


class ColorDecoder(nn.Module):
    """Geometry features [..., G] + unit directions [..., 3] -> rgb [..., 3] in (0, 1)."""

    def __init__(self, geo_dim: int, cfg: ColorConfig):
        super().__init__()
        self.cfg = cfg
        k = num_sh_bases(cfg.sh_degree)
        if cfg.view is ViewMode.SH_INPUT:
            self.mlp = MLP(geo_dim + k, 3, cfg.mlp)
        else:
            self.mlp = MLP(geo_dim, 3 * k, cfg.mlp)

    def forward(self, geo: Tensor, directions: Tensor) -> Tensor:
        basis = direction_encoding(directions, self.cfg.sh_degree).to(geo.dtype)  # [..., K]
        if self.cfg.view is ViewMode.SH_INPUT:
            return torch.sigmoid(self.mlp(torch.cat([geo, basis], -1)))
        coeffs = self.mlp(geo).unflatten(-1, (3, -1))  # [..., 3, K]
        return torch.sigmoid((coeffs * basis[..., None, :]).sum(-1))
