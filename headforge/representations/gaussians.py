"""3D Gaussian splats: raw trainable parameters, their activation, and the activated value type.

Raw parameters (what the optimiser sees): ``means`` [N, 3], ``quats`` [N, 4] wxyz (any length),
``log_scales`` [N, 3], ``logit_opacities`` [N], ``sh0`` [N, 1, 3] (DC) and ``shN`` [N, K-1, 3]
(higher SH bands, K = (max_degree + 1)^2). Activation: scales = exp, opacities = sigmoid, quats
normalised. Units are the capture's world units (metres in the head frame).

A model may also carry *side tensors*: per-Gaussian values that are not trained (a parent triangle id,
a layer id), [N, ...] of any dtype, held as buffers. :meth:`GaussianModel.per_gaussian` lists every
per-Gaussian tensor and :meth:`GaussianModel.param_groups` says which are trained at which learning
rate, so densification keeps all of them row-aligned (subclasses may add trained tensors too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from headforge.geometry.sh import num_sh_bases, rgb_to_sh0, sh_degree_from_bases


@dataclass(frozen=True)
class GaussianLearningRates:
    """Adam learning rates of the raw parameters (``means`` already multiplied by the scene scale)."""

    means: float
    quats: float
    scales: float  # of log_scales
    opacities: float  # of logit_opacities
    sh0: float
    shN: float


@dataclass(frozen=True)
class Splats:
    """Activated Gaussians, the form renderers and exporters take."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz, unit
    scales: Tensor  # [N, 3] linear, > 0
    opacities: Tensor  # [N] in (0, 1)
    sh: Tensor  # [N, K, 3] SH coefficients (sh[:, 0] is the DC term)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_bases(self.sh.shape[1])

    def detach(self) -> Splats:
        return Splats(*(t.detach() for t in (self.means, self.quats, self.scales, self.opacities, self.sh)))

    def validate(self, source=None) -> Splats:
        from headforge.errors import InputError

        n = len(self)
        shapes = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        for name, shape in shapes.items():
            t = getattr(self, name)
            if tuple(t.shape) != shape:
                raise InputError(f"splat {name} has shape {tuple(t.shape)}, expected {shape}", path=source,
                                 fix="the file is corrupt or not a Gaussian-splat file")
        for name in ("means", "quats", "scales", "opacities", "sh"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise InputError(f"splat {name} contain non-finite values", path=source,
                                 fix="the file is corrupt; re-export it")
        return self


class GaussianModel(nn.Module):
    """Trainable raw parameters and untrained side tensors only; see :func:`activate` for the maths."""

    def __init__(self, means: Tensor, quats: Tensor, log_scales: Tensor, logit_opacities: Tensor,
                 sh0: Tensor, shN: Tensor, side: dict[str, Tensor] | None = None):
        super().__init__()
        self.means = nn.Parameter(means)
        self.quats = nn.Parameter(quats)
        self.log_scales = nn.Parameter(log_scales)
        self.logit_opacities = nn.Parameter(logit_opacities)
        self.sh0 = nn.Parameter(sh0)
        self.shN = nn.Parameter(shN)
        self.side_names: tuple[str, ...] = ()
        for name, value in (side or {}).items():
            self.add_side_tensor(name, value)

    def add_side_tensor(self, name: str, value: Tensor) -> None:
        """Attach an untrained per-Gaussian tensor [N, ...]; densification keeps it row-aligned."""
        if value.shape[:1] != (len(self),):
            raise ValueError(f"side tensor {name!r} has {tuple(value.shape)[:1]} rows, the model {len(self)}")
        if hasattr(self, name):
            raise ValueError(f"side tensor name {name!r} is taken")
        self.register_buffer(name, value.to(self.means.device))
        self.side_names = (*self.side_names, name)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def max_sh_degree(self) -> int:
        return sh_degree_from_bases(1 + self.shN.shape[1])

    @staticmethod
    def from_splats(splats: Splats, max_sh_degree: int | None = None) -> GaussianModel:
        degree = splats.sh_degree if max_sh_degree is None else max_sh_degree
        k = num_sh_bases(degree)
        sh = splats.sh
        if sh.shape[1] < k:
            sh = torch.cat([sh, sh.new_zeros(len(splats), k - sh.shape[1], 3)], 1)
        sh = sh[:, :k]
        opac = splats.opacities.clamp(1e-6, 1 - 1e-6)
        return GaussianModel(splats.means.clone(), splats.quats.clone(), splats.scales.clamp_min(1e-12).log(),
                             torch.log(opac / (1 - opac)), sh[:, :1].clone(), sh[:, 1:].clone())

    def param_groups(self, lrs: GaussianLearningRates) -> dict[str, tuple[Tensor, float | None]]:
        """Every per-Gaussian tensor by name with its learning rate (None: not trained), in a fixed order."""
        trained = {"means": lrs.means, "quats": lrs.quats, "log_scales": lrs.scales,
                   "logit_opacities": lrs.opacities, "sh0": lrs.sh0, "shN": lrs.shN}
        groups: dict[str, tuple[Tensor, float | None]] = {n: (getattr(self, n), lr) for n, lr in trained.items()}
        groups.update({n: (getattr(self, n), None) for n in self.side_names})
        return groups

    def per_gaussian(self) -> dict[str, Tensor]:
        """Every per-Gaussian tensor (parameters first, then side tensors), rows aligned."""
        names = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN", *self.side_names)
        return {n: getattr(self, n) for n in names}

    def parameter_dict(self) -> dict[str, nn.Parameter]:
        """The trained per-Gaussian tensors by name."""
        return {n: t for n, t in self.per_gaussian().items() if isinstance(t, nn.Parameter)}

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor]) -> GaussianModel:
        """Inverse of :meth:`per_gaussian` for this class (a checkpoint's tensors): the six parameters, every
        other tensor as an untrained side tensor. Subclasses with more trained tensors provide their own."""
        core = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")
        return GaussianModel(*(tensors[n] for n in core), side={n: t for n, t in tensors.items() if n not in core})


def activate(model: GaussianModel, sh_degree: int | None = None) -> Splats:
    """Differentiable activation; ``sh_degree`` keeps only the first (d + 1)^2 SH bands."""
    sh = torch.cat([model.sh0, model.shN], 1)
    if sh_degree is not None:
        sh = sh[:, :num_sh_bases(sh_degree)]
    quats = model.quats / model.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return Splats(model.means, quats, torch.exp(model.log_scales), torch.sigmoid(model.logit_opacities), sh)


def init_splats(points: Tensor, colors: Tensor, *, max_sh_degree: int = 3, init_opacity: float = 0.1,
                scale_neighbours: int = 3) -> Splats:
    """Isotropic Gaussians at ``points`` [N, 3] with ``colors`` [N, 3] in [0, 1]; each scale is the mean
    distance to its nearest neighbours (as 3DGS initialises from SfM points)."""
    from scipy.spatial import cKDTree

    n = points.shape[0]
    if n == 0:
        raise ValueError("cannot initialise Gaussians from an empty point set")
    pts = points.detach().double().cpu().numpy()
    k = min(scale_neighbours + 1, n)
    dist, _ = cKDTree(pts).query(pts, k=k)
    mean_d = torch.as_tensor(dist[:, 1:].mean(1) if k > 1 else dist * 0 + 1e-2, dtype=points.dtype)
    scales = mean_d.clamp_min(1e-7)[:, None].expand(n, 3).clone()
    quats = torch.zeros(n, 4, dtype=points.dtype)
    quats[:, 0] = 1
    sh = torch.zeros(n, num_sh_bases(max_sh_degree), 3, dtype=points.dtype)
    sh[:, 0] = rgb_to_sh0(colors.to(points.dtype))
    return Splats(points.clone(), quats, scales, torch.full((n,), init_opacity, dtype=points.dtype), sh)
