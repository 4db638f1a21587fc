"""One neural-field interface over hash grids, tri-planes and tri-grids, with density or SDF (VolSDF) geometry.

Coordinates are world points (the canonical head frame: metres, default box [-0.2, 0.2]^3). The box maps
per axis to [-1, 1]^3 for the plane encodings and to [0, 1]^3 for the hash grid; the SDF network's coordinate
input uses one isotropic scale (the largest half extent) so its SDF stays metric. Points outside the box get
density 0 (their features come from the clamped box face).

:class:`RadianceField` holds parameters only; the maths lives in the encoding/decoder functions. Normals are
``-grad sigma / |grad sigma|`` for density fields and ``grad sdf / |grad sdf|`` for SDF fields, by autograd
(double backward works for all three encodings, so the eikonal loss can train them) or by central differences
(``gradient="finite_difference"``, Neuralangelo's numerical gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import Tensor, nn

from headforge.representations.fields.decoders import ColorConfig, ColorDecoder, DensityConfig, DensityDecoder
from headforge.representations.fields.hash_grid import HashGridConfig, make_hash_grid
from headforge.representations.fields.planes import PlaneConfig, TriGridEncoding, TriPlaneEncoding
from headforge.representations.fields.sdf import SDFConfig, SDFNetwork, VolSDFDensity
from headforge.validation import Checked, OptionError, Positive


class EncodingKind(StrEnum):
    HASHGRID = "hashgrid"
    TRIPLANE = "triplane"
    TRIGRID = "trigrid"


class GradientMode(StrEnum):
    AUTOGRAD = "autograd"
    FINITE_DIFFERENCE = "finite_difference"


Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class FieldConfig(Checked):
    encoding: EncodingKind = EncodingKind.HASHGRID
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    planes: PlaneConfig = field(default_factory=PlaneConfig)  # triplane / trigrid (depth used by trigrid only)
    density: DensityConfig = field(default_factory=DensityConfig)  # used when sdf is False
    sdf: bool = False
    sdf_net: SDFConfig = field(default_factory=SDFConfig)  # used when sdf is True
    color: ColorConfig = field(default_factory=ColorConfig)
    bounds_min: Vec3 = (-0.2, -0.2, -0.2)  # metres, head frame
    bounds_max: Vec3 = (0.2, 0.2, 0.2)
    gradient: GradientMode = GradientMode.AUTOGRAD
    fd_step: Positive = 5e-4  # metres, central-difference step when gradient == "finite_difference"
    prefer_tcnn: bool = True  # use tiny-cuda-nn's hash grid when it and CUDA are available

    def __post_init__(self):
        super().__post_init__()
        if any(hi <= lo for lo, hi in zip(self.bounds_min, self.bounds_max, strict=True)):
            raise OptionError("bounds_max", self.bounds_max, f"greater than bounds_min {self.bounds_min} on every axis")


@dataclass(frozen=True)
class FieldOutput:
    density: Tensor  # [..., 1] sigma >= 0 (per metre)
    rgb: Tensor  # [..., 3] in (0, 1)
    sdf: Tensor | None = None  # [..., 1] metres, SDF fields only
    normals: Tensor | None = None  # [..., 3] unit, when requested
    gradients: Tensor | None = None  # [..., 3] raw grad of sdf (or density) -> eikonal loss


def normalize_points(points: Tensor, lo: Tensor, hi: Tensor) -> Tensor:  # [..., 3] -> [..., 3] in [-1, 1] inside
    return (points - lo) / (hi - lo) * 2 - 1


def inside_box(points: Tensor, lo: Tensor, hi: Tensor) -> Tensor:  # [..., 3] -> [..., 1] bool
    return ((points >= lo) & (points <= hi)).all(-1, keepdim=True)


class RadianceField(nn.Module):
    def __init__(self, cfg: FieldConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("bounds_lo", torch.tensor(cfg.bounds_min, dtype=torch.float32))
        self.register_buffer("bounds_hi", torch.tensor(cfg.bounds_max, dtype=torch.float32))
        half = [(hi - lo) / 2 for lo, hi in zip(cfg.bounds_min, cfg.bounds_max, strict=True)]
        self.sdf_scale = max(half)  # metres per SDF-network unit
        if cfg.encoding is EncodingKind.HASHGRID:
            self.encoding = make_hash_grid(cfg.hashgrid, prefer_cuda=cfg.prefer_tcnn)
        elif cfg.encoding is EncodingKind.TRIPLANE:
            self.encoding = TriPlaneEncoding(cfg.planes)
        else:
            self.encoding = TriGridEncoding(cfg.planes)
        enc_dim = self.encoding.output_dim
        if cfg.sdf:
            self.sdf_net = SDFNetwork(enc_dim, cfg.sdf_net, self.sdf_scale)
            self.volsdf = VolSDFDensity(cfg.sdf_net.volsdf)
            geo_dim = cfg.sdf_net.geo_features
        else:
            self.density_net = DensityDecoder(enc_dim, cfg.density)
            geo_dim = cfg.density.geo_features
        self.color_net = ColorDecoder(geo_dim, cfg.color)

    # ------------------------------------------------------------------ geometry
    @property
    def bounds(self) -> tuple[Tensor, Tensor]:  # ([3], [3]) metres
        return self.bounds_lo, self.bounds_hi

    def encode(self, points: Tensor) -> Tensor:  # [..., 3] world -> [..., E]
        u = normalize_points(points, self.bounds_lo.to(points), self.bounds_hi.to(points))
        if self.cfg.encoding is EncodingKind.HASHGRID:
            return self.encoding((u + 1) / 2)
        return self.encoding(u)

    def _geometry(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points [..., 3] -> (density [..., 1] or sdf [..., 1] metres, geometry features [..., G])."""
        feats = self.encode(points)
        if self.cfg.sdf:
            centre = (self.bounds_lo + self.bounds_hi).to(points) / 2
            s, geo = self.sdf_net((points - centre) / self.sdf_scale, feats)
            return s * self.sdf_scale, geo
        return self.density_net(feats)

    def _to_density(self, points: Tensor, value: Tensor) -> Tensor:
        sigma = self.volsdf(value) if self.cfg.sdf else value
        inside = inside_box(points, self.bounds_lo.to(points), self.bounds_hi.to(points))
        return torch.where(inside, sigma, torch.zeros_like(sigma))

    def density(self, points: Tensor) -> Tensor:  # [..., 3] -> [..., 1]
        return self._to_density(points, self._geometry(points)[0])

    def sdf(self, points: Tensor) -> Tensor:  # [..., 3] -> [..., 1] metres
        if not self.cfg.sdf:
            raise RuntimeError("this field predicts density (FieldConfig.sdf is False); it has no SDF")
        return self._geometry(points)[0]

    def color(self, points: Tensor, directions: Tensor) -> Tensor:  # [..., 3], [..., 3] -> [..., 3]
        return self.color_net(self._geometry(points)[1], directions)

    def _scalar(self, points: Tensor) -> Tensor:  # the quantity whose gradient gives normals
        value = self._geometry(points)[0]
        return value if self.cfg.sdf else self._to_density(points, value)

    def gradient(self, points: Tensor, create_graph: bool = False) -> Tensor:
        """grad of the SDF (SDF fields) or of the density [..., 3], w.r.t. world points."""
        if self.cfg.gradient is GradientMode.FINITE_DIFFERENCE:
            h = self.cfg.fd_step
            offsets = torch.eye(3, dtype=points.dtype, device=points.device) * h  # [3, 3]
            pts = torch.cat([points[..., None, :] + offsets, points[..., None, :] - offsets], -2)  # [..., 6, 3]
            v = self._scalar(pts)[..., 0]  # [..., 6]
            return (v[..., :3] - v[..., 3:]) / (2 * h)
        with torch.enable_grad():
            pts = points if points.requires_grad else points.detach().requires_grad_(True)
            v = self._scalar(pts)
            (g,) = torch.autograd.grad(v.sum(), pts, create_graph=create_graph)
        return g

    # ------------------------------------------------------------------ everything at once
    def query(self, points: Tensor, directions: Tensor, normals: bool | None = None) -> FieldOutput:
        """Density, colour, SDF and (when ``normals``; default: SDF fields) normals and raw gradients.

        Gradients keep their graph when grad mode is on (so an eikonal loss trains the field).
        """
        want = self.cfg.sdf if normals is None else normals
        create_graph = torch.is_grad_enabled()
        grad = None
        if want and self.cfg.gradient is GradientMode.AUTOGRAD:
            with torch.enable_grad():
                pts = points if points.requires_grad else points.detach().requires_grad_(True)
                value, geo = self._geometry(pts)
                scalar = value if self.cfg.sdf else self._to_density(pts, value)
                (grad,) = torch.autograd.grad(scalar.sum(), pts, create_graph=create_graph)
            if not create_graph:
                value, geo = value.detach(), geo.detach()
        else:
            value, geo = self._geometry(points)
            if want:
                grad = self.gradient(points)
        density = self._to_density(points, value)
        rgb = self.color_net(geo, directions)
        unit = None
        if grad is not None:
            unit = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            unit = unit if self.cfg.sdf else -unit
        return FieldOutput(density, rgb, value if self.cfg.sdf else None, unit, grad)
