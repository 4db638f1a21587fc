"""The reconstruction methods behind ``headforge reconstruct``: train one, get a renderer and its exports.

Each method returns a :class:`Trained`: a render function for evaluation and pictures, the evaluation
background, a typed summary of what was learnt (:class:`GaussianSummary` or :class:`FieldSummary`, the
method-specific part of ``metrics.json``) and a function that writes the method's own files into the
staged output directory (splats for Gaussians; ``field.pt`` for neural fields, which
``headforge extract-mesh`` reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path

import torch
from torch import Tensor

from headforge.atomic import atomic_path
from headforge.config_io import config_path, from_dict, load_config
from headforge.errors import InputError
from headforge.io.files import is_missing, load_torch, require_finite
from headforge.stages.evaluate import RenderFn
from headforge.stages.field_train import FieldTrainConfig, field_render_fn, train_field
from headforge.stages.gaussian_train import GaussianTrainConfig, render_splats, train_gaussians
from headforge.stages.views import ViewBatch
from headforge.validation import Checked, ImageSide, OptionError


class Method(StrEnum):
    GAUSSIANS = "gaussians"
    HASHGRID = "hashgrid"
    TRIPLANE = "triplane"
    TRIGRID = "trigrid"


class Device(StrEnum):
    AUTO = "auto"  # CUDA when torch sees a GPU, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


def resolve_device(device: Device | str) -> Device:
    """``auto`` -> CUDA or CPU; ``cuda`` without a visible GPU is a user error."""
    device = Device(device)
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device",
                         fix="use --device cpu (or auto), or install a CUDA build of torch")
    return device


@dataclass(frozen=True)
class GaussianSummary:
    num_gaussians: int
    sh_degree: int

    def describe(self) -> str:
        return f"{self.num_gaussians} Gaussians"

    def to_json(self) -> dict:
        return {"num_gaussians": self.num_gaussians, "sh_degree": self.sh_degree}


@dataclass(frozen=True)
class FieldSummary:
    encoding: str  # hashgrid | triplane | trigrid
    sdf: bool
    num_parameters: int
    occupied_fraction: float  # of the occupancy grid's cells

    def describe(self) -> str:
        return f"{self.num_parameters} parameters"

    def to_json(self) -> dict:
        return {"encoding": self.encoding, "sdf": self.sdf, "num_parameters": self.num_parameters,
                "occupied_fraction": round(self.occupied_fraction, 4)}


@dataclass(frozen=True)
class GaussianPreset(Checked):
    resolution: ImageSide = 512  # longest image side used for training and evaluation
    train: GaussianTrainConfig = field(default_factory=GaussianTrainConfig)


@dataclass(frozen=True)
class FieldPreset(Checked):
    resolution: ImageSide = 256
    train: FieldTrainConfig = field(default_factory=FieldTrainConfig)


@dataclass(frozen=True)
class Trained:
    render_fn: RenderFn
    background: Tensor  # [3]
    steps: int
    train_seconds: float
    summary: GaussianSummary | FieldSummary
    history: tuple[tuple[int | float, ...], ...]  # (step, loss, psnr[, gaussians]) at the logged steps
    write_exports: Callable[[Path], list[str]]  # staged directory -> names written


def load_preset(method: Method, name: str, *, resolution: int | None, steps: int | None,
                sdf: bool = False) -> GaussianPreset | FieldPreset:
    """``headforge/presets/<family>_<name>.toml`` (or a TOML path) with command-line overrides applied."""
    family, cls = ("gaussians", GaussianPreset) if method == Method.GAUSSIANS else ("fields", FieldPreset)
    source = name if name.endswith(".toml") else f"{family}_{name}"
    preset = load_config(cls, source)
    train = preset.train
    try:
        if steps is not None:
            train = replace(train, steps=steps)
        if method != Method.GAUSSIANS:
            train = replace(train, field=replace(train.field, encoding=method.value, sdf=sdf))
        return replace(preset, resolution=preset.resolution if resolution is None else resolution, train=train)
    except OptionError as e:
        raise InputError(f"the preset does not fit the command line: {e.problem}", path=config_path(source),
                         fix=f"{e.fix}; or pick options that match the preset (e.g. --sdf for an SDF preset), or "
                             "another preset") from None


def train_gaussian_method(train: ViewBatch, bounds, cfg: GaussianTrainConfig, *, checkpoint_dir: Path,
                          resume: bool, init_ply: Path | None, device: Device, progress: bool) -> Trained:
    init = None
    if init_ply is not None:
        from headforge.representations.splat_io import load_splats_ply

        init = load_splats_ply(init_ply)
    result = train_gaussians(train, bounds, cfg, checkpoint_dir=checkpoint_dir, resume=resume, init=init,
                             device=str(device), progress=progress)
    splats, degree = result.splats.detach(), result.sh_degree

    def render_fn(cams, background):
        r = render_splats(splats, cams, degree, background.to(splats.means))
        return r.rgb, r.alpha[..., 0]

    def write_exports(stage: Path) -> list[str]:
        from headforge.representations.splat_io import (
            SplatFrame,
            save_splats_dot_splat,
            save_splats_glb,
            save_splats_ply,
        )

        save_splats_ply(splats, stage / "splats.ply", frame=SplatFrame.OPENCV)  # what 3DGS viewers expect
        save_splats_dot_splat(splats, stage / "splats.splat", frame=SplatFrame.OPENCV)
        save_splats_glb(splats, stage / "splats.glb")
        return ["splats.ply", "splats.splat", "splats.glb"]

    return Trained(render_fn, result.background, result.steps, result.seconds,
                   GaussianSummary(len(splats), degree), result.history, write_exports)


FIELD_FORMAT = 1  # bumped when field.pt's layout changes


def save_field(path: Path, model, grid, cfg: FieldTrainConfig) -> None:
    """``field.pt``: format, method (the field encoding), config, the field's and grid's tensors, bounds."""
    payload = {"format": FIELD_FORMAT, "method": str(cfg.field.encoding), "config": asdict(cfg),
               "field": model.state_dict(), "grid": grid.state_dict(), "bounds_min": model.bounds[0].cpu(),
               "bounds_max": model.bounds[1].cpu()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


# What save_field writes; load_field refuses a field.pt without any of them.
FIELD_PAYLOAD_KEYS = ("format", "method", "config", "field", "grid", "bounds_min", "bounds_max")


def load_field(path: Path, device: str = "cpu"):
    """(RadianceField, OccupancyGrid, FieldTrainConfig) from a run's ``field.pt``."""
    from headforge.renderers.occupancy import OccupancyGrid
    from headforge.stages.field_train import make_field

    fix = "re-run the reconstruction (`headforge reconstruct --method hashgrid|triplane|trigrid` writes " \
          "field.pt at the end)"
    if is_missing(path):
        raise InputError("no field.pt in the run directory", path=path,
                         fix="point at the output of `headforge reconstruct --method hashgrid|triplane|trigrid` "
                             "that finished (field.pt is written at the end)")
    payload = load_torch(path, "field.pt", fix, device=device)  # random bytes, truncation, not a dict
    if payload.get("format") != FIELD_FORMAT:
        found = "no format version" if "format" not in payload else f"format {payload['format']!r}"
        raise InputError(f"field.pt has {found}; this headforge reads field format {FIELD_FORMAT}", path=path,
                         fix=fix)
    missing = [k for k in FIELD_PAYLOAD_KEYS if k not in payload]
    if missing:
        raise InputError(f"field.pt lacks {', '.join(missing)} (it is not a headforge field file)", path=path,
                         fix=fix)
    if not isinstance(payload["config"], dict):
        raise InputError("field.pt's config is not a table of settings", path=path, fix=fix)
    cfg = from_dict(FieldTrainConfig, payload["config"], path, "config.")
    fields = [str(m) for m in Method if m is not Method.GAUSSIANS]
    if payload["method"] not in fields or payload["method"] != str(cfg.field.encoding):
        raise InputError(f"field.pt's method {payload['method']!r} is not its config's field encoding "
                         f"{str(cfg.field.encoding)!r} (field methods: {', '.join(fields)})", path=path, fix=fix)
    try:
        bounds = [torch.as_tensor(payload[k]) for k in ("bounds_min", "bounds_max")]
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"field.pt's bounds are not numbers ({e})", path=path, fix=fix) from None
    for name, b in zip(("bounds_min", "bounds_max"), bounds, strict=True):
        if tuple(b.shape) != (3,):
            raise InputError(f"field.pt's {name} has shape {tuple(b.shape)}, not (3,)", path=path, fix=fix)
        require_finite(b, path, f"field.pt's {name}", fix=fix)
    model = make_field(cfg, bounds[0], bounds[1], margin=1.0).to(device)
    _load_state(model, payload, "field", path, fix)
    grid = OccupancyGrid(cfg.occupancy, *model.bounds).to(device)
    _load_state(grid, payload, "grid", path, fix)
    return model.eval(), grid, cfg


def _load_state(module: torch.nn.Module, payload: dict, key: str, path: Path, fix: str) -> None:
    try:
        module.load_state_dict(payload[key])
    except (RuntimeError, TypeError, AttributeError) as e:  # missing / unexpected keys, wrong shapes
        detail = str(e).splitlines()[0][:200]
        raise InputError(f"field.pt's {key} does not fit its config ({detail})", path=path, fix=fix) from None


def train_field_method(train: ViewBatch, bounds, cfg: FieldTrainConfig, *, checkpoint_dir: Path, resume: bool,
                       device: Device, progress: bool) -> Trained:
    result = train_field(train, bounds, cfg, checkpoint_dir=checkpoint_dir, resume=resume, device=str(device),
                         progress=progress)

    def write_exports(stage: Path) -> list[str]:
        save_field(stage / "field.pt", result.field, result.grid, cfg)
        return ["field.pt"]

    n_params = sum(p.numel() for p in result.field.parameters())
    summary = FieldSummary(str(cfg.field.encoding), cfg.field.sdf, n_params, result.grid.occupied_fraction())
    return Trained(field_render_fn(result.field, result.grid, cfg), result.background, result.steps,
                   result.seconds, summary, result.history, write_exports)
