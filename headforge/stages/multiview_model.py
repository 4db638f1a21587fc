"""The ``model`` multi-view generator: a small diffusers-style pipeline loaded from a local folder (CPU or CUDA).

The folder (nothing is downloaded: every component loads with ``local_files_only``; needs the ``gen`` extra):

    model_index.json       {"_class_name": "HeadforgeMultiViewPipeline", "unet": ["diffusers", "UNet2DModel"],
                            "scheduler": ["diffusers", "DDIMScheduler"]}   (other "_" keys are ignored)
    unet/config.json       a diffusers UNet2DModel: in_channels 8, out_channels 4, sample_size S, num_class_embeds V
    unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json   a DDIM scheduler (its prediction_type: epsilon, v_prediction or sample)
    views.json             {"convention": "facelift" | "panohead" | "face-box" | null,
                            "frames": [{"name", "w", "h", "fx", "fy", "cx", "cy", "w2c"}]}  (V frames, all S x S)

The model denoises each view's RGBA image in pixel space (no autoencoder), scaled to [-1, 1]. It is conditioned on
the aligned photo by channel concatenation (the photo's RGB and person mask, resized to S and scaled to [-1, 1]:
4 channels after the 4 noisy ones) and on the view by a camera embedding: view v is the UNet's class label v (its
learned embedding of that fixed camera, as FaceLift's fixed six views). The loop is ours: DDIM with
``ModelConfig.steps`` steps and eta 0 from Gaussian noise drawn on the CPU from ``ModelConfig.seed`` (the same
draws on CPU and CUDA); the output's fourth channel is the alpha. ``views.json`` cameras are in the rig frame
(the canonical head frame: metres, +y up, face +z, the head centre at the origin); with a fitted head they move
into the photo's world by its similarity, as the prior's view sets do. A ``convention`` must match the photo's
alignment (the model was trained on crops of that convention).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from torch import Tensor

from headforge.captures.capture import Capture
from headforge.captures.images import resize_image
from headforge.errors import InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import transform_cameras
from headforge.stages.avatar import Avatar
from headforge.stages.multiview_base import GeneratorKind, generated_capture, head_geometry, write_generated
from headforge.stages.photo_types import AlignConvention, AlignedPhoto
from headforge.validation import Checked, NonNegativeInt

__all__ = ["PIPELINE_CLASS", "Device", "LoadedModel", "ModelConfig", "ModelGenerator", "denoise_views",
           "load_model"]

PIPELINE_CLASS = "HeadforgeMultiViewPipeline"
COMPONENTS = {"unet": ("diffusers", "UNet2DModel"), "scheduler": ("diffusers", "DDIMScheduler")}
WEIGHTS = "diffusion_pytorch_model.safetensors"
IMAGE_CHANNELS = 4  # RGBA
CONDITION_CHANNELS = 4  # the photo's RGB and person mask


class Device(StrEnum):
    AUTO = "auto"  # CUDA when available
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class ModelConfig(Checked):
    steps: Annotated[int, at.Ge(1), at.Le(1000)] = 25  # DDIM steps
    seed: NonNegativeInt = 0
    device: Device = Device.AUTO
    overwrite: bool = False


@dataclass(frozen=True, eq=False)
class LoadedModel:
    unet: torch.nn.Module  # diffusers UNet2DModel
    scheduler: object  # diffusers DDIMScheduler
    cameras: Cameras  # [V] rig frame, S x S
    convention: AlignConvention | None
    folder: Path

    @property
    def size(self) -> int:
        return int(self.cameras.width[0])


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise InputError("the model generator needs the diffusers package (the 'gen' extra)",
                         fix="pip install 'headforge[gen]'") from None
    return diffusers


def _json(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise InputError(f"the model folder lacks {path.name}", path=path, fix=fix)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path.name} is not valid JSON: {e}", path=path, fix=fix) from None
    if not isinstance(data, dict):
        raise InputError(f"{path.name} must hold a JSON object", path=path, fix=fix)
    return data


def _views(path: Path) -> tuple[Cameras, AlignConvention | None]:
    fix = 'views.json: {"convention": ..., "frames": [{"name", "w", "h", "fx", "fy", "cx", "cy", "w2c": 4x4}]}'
    data = _json(path, fix)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError("views.json has no frames", path=path, fix=fix)
    conv = data.get("convention")
    try:
        convention = None if conv is None else AlignConvention(conv)
    except ValueError:
        raise InputError(f"views.json convention {conv!r} is unknown (known: {', '.join(AlignConvention)})",
                         path=path, fix=fix) from None
    try:
        w2c = np.array([f["w2c"] for f in frames], dtype=np.float64)
        intr = np.array([[f[k] for k in ("fx", "fy", "cx", "cy")] for f in frames], dtype=np.float64)
        sizes = np.array([[f["w"], f["h"]] for f in frames], dtype=np.int64)
        names = [str(f.get("name", f"view_{i:02d}")) for i, f in enumerate(frames)]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"views.json frames are malformed ({type(e).__name__}: {e})", path=path, fix=fix) from None
    if w2c.shape[1:] != (4, 4):
        raise InputError(f"views.json w2c must be 4x4 matrices (got {list(w2c.shape[1:])})", path=path, fix=fix)
    cams = Cameras.create(torch.from_numpy(w2c), intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3], sizes[:, 0],
                          sizes[:, 1], names=names).validate(source=path)
    return cams, convention


def load_model(folder: str | Path, device: Device = Device.AUTO) -> LoadedModel:
    """Check and load a model folder (see the module doc); every problem names the file and the fix."""
    folder = Path(folder)
    fix = f"a model folder holds model_index.json ({PIPELINE_CLASS}), unet/, scheduler/ and views.json"
    if not folder.is_dir():
        raise InputError("the model folder does not exist" if not folder.exists() else "the model path is not a folder",
                         path=folder, fix=fix)
    index = _json(folder / "model_index.json", fix)
    if index.get("_class_name") != PIPELINE_CLASS:
        raise InputError(f"model_index.json names the pipeline class {index.get('_class_name')!r}, not "
                         f"{PIPELINE_CLASS!r}", path=folder / "model_index.json",
                         fix=f"headforge runs only {PIPELINE_CLASS} folders (see stages/multiview_model.py)")
    for name, expected in COMPONENTS.items():
        if list(index.get(name) or []) != list(expected):
            raise InputError(f"model_index.json: {name} must be {list(expected)} (got {index.get(name)!r})",
                             path=folder / "model_index.json", fix=fix)
    for rel in ("unet/config.json", f"unet/{WEIGHTS}", "scheduler/scheduler_config.json"):
        if not (folder / rel).is_file():
            raise InputError(f"the model folder lacks {rel}", path=folder / rel, fix=fix)
    unet_cfg = _json(folder / "unet" / "config.json", fix)
    cameras, convention = _views(folder / "views.json")
    _check_unet_config(unet_cfg, cameras, folder / "unet" / "config.json")
    diffusers = _diffusers()
    dev = _device(device)
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(folder / "unet"), local_files_only=True,
                                                     use_safetensors=True, low_cpu_mem_usage=False)
        scheduler = diffusers.DDIMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise InputError(f"the model's components cannot be loaded: {type(e).__name__}: {e}", path=folder,
                         fix="re-save the UNet and scheduler with save_pretrained (safetensors)") from None
    return LoadedModel(unet.to(dev).eval(), scheduler, cameras, convention, folder)


def _check_unet_config(cfg: dict, cameras: Cameras, path: Path) -> None:
    w, h = cameras.same_size()
    size = cfg.get("sample_size")
    want = {"in_channels": IMAGE_CHANNELS + CONDITION_CHANNELS, "out_channels": IMAGE_CHANNELS,
            "num_class_embeds": len(cameras)}
    for key, value in want.items():
        if cfg.get(key) != value:
            raise InputError(f"unet config {key} is {cfg.get(key)!r}, the pipeline needs {value}", path=path,
                             fix="in_channels 8 (noisy RGBA + photo RGB + mask), out_channels 4, one class "
                                 "embedding per views.json frame")
    if w != h or size not in (w, [w, w], (w, w)):
        raise InputError(f"unet sample_size {size!r} does not match the {w}x{h} views of views.json", path=path,
                         fix="square views whose side is the UNet's sample_size")


def _device(device: Device) -> torch.device:
    if device is Device.CUDA and not torch.cuda.is_available():
        raise InputError("the model generator was asked to run on CUDA, and no CUDA device is available",
                         fix="use device cpu (or auto), or install a CUDA build of torch")
    if device is Device.CPU or (device is Device.AUTO and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def photo_condition(photo: AlignedPhoto, size: int) -> Tensor:  # -> [4, S, S] in [-1, 1]
    img = torch.cat([photo.image, photo.person_mask[..., None]], -1).numpy()
    small = torch.from_numpy(resize_image(img, size, size).copy()).float()
    return small.permute(2, 0, 1) * 2 - 1


def denoise_views(model: LoadedModel, condition: Tensor, steps: int, seed: int) -> Tensor:
    """DDIM (eta 0) from noise drawn on the CPU -> RGBA [V, S, S, 4] in [0, 1]; ``condition`` [4, S, S]."""
    unet, sched = model.unet, model.scheduler
    dev = next(unet.parameters()).device
    V, S = len(model.cameras), model.size
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(V, IMAGE_CHANNELS, S, S, generator=g) * sched.init_noise_sigma).to(dev)
    cond = condition.to(dev)[None].expand(V, -1, -1, -1)
    labels = torch.arange(V, device=dev)
    sched.set_timesteps(steps)
    with torch.no_grad():
        for t in sched.timesteps:
            inp = torch.cat([sched.scale_model_input(x, t), cond], 1)
            out = unet(inp, t, class_labels=labels).sample
            x = sched.step(out, t, x, eta=0.0).prev_sample
    if not bool(torch.isfinite(x).all()):
        raise InputError("the model produced non-finite images", path=model.folder,
                         fix="check the model's weights (a diverged or corrupted checkpoint)")
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).float().cpu()


@dataclass(frozen=True)
class ModelGenerator:
    path: Path
    config: ModelConfig = ModelConfig()
    kind: GeneratorKind = GeneratorKind.MODEL

    def generate(self, photo: AlignedPhoto, head: Avatar | None, out_dir: Path) -> Capture:
        model = load_model(self.path, self.config.device)
        if model.convention is not None and model.convention != photo.convention:
            raise InputError(f"the model was trained on {model.convention} crops; the photo is aligned to "
                             f"{photo.convention}", path=self.path / "views.json",
                             fix=f"align the photo to the {model.convention} convention")
        rgba = denoise_views(model, photo_condition(photo, model.size), self.config.steps, self.config.seed)
        cameras = model.cameras
        if head is not None:
            cameras = transform_cameras(cameras, head_geometry(head).world_from_rig)
        capture = generated_capture(cameras.to(dtype=torch.float32), rgba)
        return write_generated(capture, out_dir, overwrite=self.config.overwrite)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
