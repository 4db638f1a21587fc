"""Signed-distance geometry for neural fields: VolSDF density, eikonal loss, sphere initialisation.

- **VolSDF** (Yariv et al. 2021): ``sigma = alpha * Psi_beta(-sdf)`` with Psi_beta the CDF of a zero-mean Laplace
  distribution of scale beta and ``alpha = 1 / beta``; beta is learnable
  (``beta = min(beta_min + exp(log_beta), beta_max)``). SDF and beta are in metres (head frame), so sigma is per metre.
  Training may anneal an upper bound ``beta_max`` (``FieldTrainConfig.beta_final``): VolSDF's density is biased
  (rays grazing the surface gather opacity ~beta outside it, so silhouettes dilate and the zero level set shrinks
  inward by a few beta to compensate), and the learnt beta only falls as fast as the photometric loss asks.
- **Eikonal loss**: ``mean((|grad sdf| - 1)^2)``.
- **SDF network** (:class:`SDFNetwork`): input = normalised coordinates u in [-1, 1]^3 (the field's box) concatenated
  with encoding features; Softplus(beta=100) hidden layers; output = (sdf, geometry features). The SDF is
  ``half_extent * mlp(u)`` so it is in metres with unit gradient w.r.t. metric points. Geometric initialisation
  (Atzmon & Lipman's SAL, as in IDR/NeuS): hidden weights ~ N(0, 2 / fan_out), the encoding part of the first layer
  zero, last layer ~ N(sqrt(pi / fan_in), 1e-4) with bias ``-radius``: at initialisation sdf(p) ~ |p - c| - r,
  a sphere, before the encoding has learnt anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headforge.representations.fields.decoders import MLPConfig
from headforge.validation import Checked, NonNegativeInt, OptionError, Positive


@dataclass(frozen=True)
class VolSDFConfig(Checked):
    beta_init: Positive = 0.01  # metres: the width of the density transition around the surface
    beta_min: Positive = 1e-4  # metres

    def __post_init__(self):
        super().__post_init__()
        if not self.beta_init > self.beta_min:
            raise OptionError("beta_init", self.beta_init, f"> beta_min ({self.beta_min})")


@dataclass(frozen=True)
class SDFConfig(Checked):
    mlp: MLPConfig = MLPConfig(hidden=64, layers=2)
    geo_features: NonNegativeInt = 15
    init_radius: Positive = 0.1  # metres: radius of the initial sphere, centred on the box centre
    softplus_beta: Positive = 100.0
    volsdf: VolSDFConfig = VolSDFConfig()


def laplace_cdf(s: Tensor, beta: Tensor) -> Tensor:  # Psi_beta(s), zero mean, scale beta
    e = torch.exp(-s.abs() / beta)
    return torch.where(s <= 0, 0.5 * e, 1 - 0.5 * e)


def volsdf_density(sdf: Tensor, beta: Tensor) -> Tensor:  # [..., 1], scalar beta -> sigma [..., 1]
    return laplace_cdf(-sdf, beta) / beta


HEAD_CURVATURE_RADIUS = 0.05  # metres: a typical radius of curvature of a head, for volsdf_silhouette_offset


def volsdf_silhouette_offset(beta: float, radius: float) -> float:
    """How far outside a VolSDF zero level set the rendered silhouette lies (metres): the distance h from the
    surface at which a ray grazing a surface of curvature radius ``radius`` gathers opacity 1/2.

    Outside the surface sigma = exp(-d / beta) / (2 beta). Near its closest approach h a grazing ray sees
    d(t) ~ h + t^2 / (2 radius), so its optical depth is exp(-h / beta) sqrt(2 pi radius / beta) / 2; setting it to
    ln 2 gives h = beta ln(sqrt(2 pi radius / beta) / (2 ln 2)), about 3 beta for a head (radius 3-8 cm, beta
    0.1-1 mm) and only logarithmic in the radius. A field trained on silhouettes therefore sits about h inside the
    true surface, and the iso level h is the surface its renders show (``bench_field_quality`` reports both).
    Valid for radius >> beta; negative (the silhouette erodes) only when radius < 0.3 beta."""
    if not (beta > 0 and radius > 0):
        raise ValueError(f"volsdf_silhouette_offset needs beta > 0 and radius > 0, got {beta}, {radius}")
    return beta * math.log(math.sqrt(2 * math.pi * radius / beta) / (2 * math.log(2)))


def eikonal_loss(gradients: Tensor) -> Tensor:  # [..., 3] -> scalar
    return ((gradients.norm(dim=-1) - 1) ** 2).mean()


class VolSDFDensity(nn.Module):
    def __init__(self, cfg: VolSDFConfig):
        super().__init__()
        self.cfg = cfg
        self.log_beta = nn.Parameter(torch.tensor(math.log(cfg.beta_init - cfg.beta_min)))
        # an upper bound set by training's beta annealing (inf: none); a buffer so checkpoints keep it
        self.register_buffer("beta_max", torch.tensor(math.inf))

    @property
    def beta(self) -> Tensor:
        return torch.minimum(self.cfg.beta_min + self.log_beta.exp(), self.beta_max)

    def forward(self, sdf: Tensor) -> Tensor:
        return volsdf_density(sdf, self.beta)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # fields saved before beta annealing existed have no beta_max: they had no bound
        state_dict.setdefault(prefix + "beta_max", torch.tensor(math.inf))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def geometric_init_(linears: list[nn.Linear], n_coords: int, radius: float) -> None:
    """SAL geometric init in place; the first layer's inputs beyond ``n_coords`` (encoding features) start at 0."""
    with torch.no_grad():
        for i, lin in enumerate(linears):
            out_dim, in_dim = lin.weight.shape
            if i == len(linears) - 1:
                lin.weight.normal_(math.sqrt(math.pi) / math.sqrt(in_dim), 1e-4)
                lin.bias.fill_(-radius)
            else:
                lin.weight.normal_(0.0, math.sqrt(2) / math.sqrt(out_dim))
                lin.bias.zero_()
                if i == 0:
                    lin.weight[:, n_coords:] = 0.0


class SDFNetwork(nn.Module):
    """[u (3) + encoding features (E)] -> (sdf in normalised units [..., 1], geometry features [..., G])."""

    def __init__(self, enc_dim: int, cfg: SDFConfig, half_extent: float):
        super().__init__()
        self.cfg = cfg
        dims = [3 + enc_dim] + [cfg.mlp.hidden] * cfg.mlp.layers + [1 + cfg.geo_features]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = nn.Softplus(beta=cfg.softplus_beta)
        geometric_init_(list(self.linears), 3, cfg.init_radius / half_extent)

    def forward(self, u: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([u, feats.to(u.dtype)], -1)
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i < len(self.linears) - 1:
                x = self.act(x)
        return x[..., :1], x[..., 1:]
