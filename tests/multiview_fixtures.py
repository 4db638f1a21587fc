"""Fixtures of the multi-view generator tests: an aligned photo rendered from a hand-made avatar (its front view,
so the photo's world is the avatar's world, as for a fitted photo), a tiny diffusers-style model folder built with
random weights, and external generator scripts."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import torch

from headforge.geometry.cameras import Cameras
from headforge.geometry.head_frame import transform_cameras
from headforge.geometry.rotations import look_at
from headforge.stages.avatar import Avatar
from headforge.stages.multiview import head_geometry, render_views
from headforge.stages.multiview_model import PIPELINE_CLASS
from headforge.stages.photo_types import AlignConvention, AlignedPhoto, CropBox


def front_camera(avatar: Avatar, size: int, distance: float = 0.5, fov_deg: float = 30.0) -> Cameras:
    """A camera in front of the avatar's face (rig frame +z), in its world."""
    eye = torch.tensor([[0.0, 0.02, distance]], dtype=torch.float64)
    w2c = look_at(eye, torch.zeros_like(eye), torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))
    f = size / 2 / math.tan(math.radians(fov_deg) / 2)
    cam = Cameras.create(w2c.float(), f, f, size / 2, size / 2, size, size, names=["photo"])
    return transform_cameras(cam, head_geometry(avatar).world_from_rig)


def rendered_photo(avatar: Avatar, size: int = 64, convention: AlignConvention = AlignConvention.FACELIFT
                   ) -> AlignedPhoto:
    """The avatar's front render on white as an aligned photo (person mask = coverage)."""
    cam = front_camera(avatar, size)
    rgba = render_views(avatar, cam)[0]
    a = rgba[..., 3:]
    image = rgba[..., :3] * a + (1 - a)
    return AlignedPhoto(image=image, person_mask=rgba[..., 3], face_mask=torch.zeros(size, size, dtype=torch.bool),
                        hair_mask=torch.zeros(size, size, dtype=torch.bool), landmarks=torch.zeros(478, 2),
                        camera=cam, crop=CropBox(0.0, 0.0, float(size), (size, size)), convention=convention,
                        focal_source="test render")


def tiny_model(folder: Path, cameras: Cameras, *, convention: str | None = "facelift", seed: int = 0) -> Path:
    """A HeadforgeMultiViewPipeline folder with a random tiny UNet (a few thousand parameters) and DDIM."""
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(seed)
    size = int(cameras.width[0])
    unet = UNet2DModel(sample_size=size, in_channels=8, out_channels=4, layers_per_block=1,
                       block_out_channels=(4, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=2, num_class_embeds=len(cameras))
    unet.save_pretrained(folder / "unet")
    DDIMScheduler(num_train_timesteps=100).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": PIPELINE_CLASS, "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"]}))
    frames = [{"name": cameras.name(i), "w": int(cameras.width[i]), "h": int(cameras.height[i]),
               "fx": float(cameras.fx[i]), "fy": float(cameras.fy[i]), "cx": float(cameras.cx[i]),
               "cy": float(cameras.cy[i]), "w2c": cameras.world_to_camera[i].double().tolist()}
              for i in range(len(cameras))]
    (folder / "views.json").write_text(json.dumps({"convention": convention, "frames": frames}))
    return folder


def script(path: Path, body: str) -> str:
    """Write a python script and return the external command running it with this interpreter."""
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path} --image {{input}} --out {{output}} --size {{size}}"
