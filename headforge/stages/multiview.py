"""Multi-view generation: one aligned photo (and the completed head fitted to it) -> a multi-view ``Capture``.

One interface, :class:`MultiViewGenerator` (``generate(photo, head, out_dir) -> Capture``), three kinds chosen by
the CLI value ``prior | external:CMD | model:PATH`` (:func:`parse_generator_spec`, :func:`make_generator`):

- ``prior`` (:class:`PriorGenerator`, the default): renders the completed head (``PhotoFit.avatar()``: the rig
  mesh with its completed texture under the hair Gaussians, ``avatar_layers.composite_render``) from a view set,
  the rendered coverage as alpha; the input photo is added as the last view (see ``PriorConfig.include_photo``);
- ``external`` (``multiview_external.ExternalGenerator``): a user's command writes views and an
  ``opencv_cameras.json``; read back and checked;
- ``model`` (``multiview_model.ModelGenerator``): a small diffusers-style pipeline in a local folder.

Every generator writes its views into ``out_dir`` as an ``opencv_cameras.json`` capture (RGBA PNGs, straight
colour, the mask in alpha; atomically: the folder appears complete or not at all) and returns the same views as
an in-memory capture, all of them train views (a generator holds nothing out; the reconstruction may).

Frames. The photo's camera lives in the head frame of the rig it was solved against (metres, +y up, face +z);
``PhotoFit`` states its similarity in that world. The view sets are built in the *rig frame* around its origin
(the head centre, about eye/ear level, see geometry/head_frame.py) and moved into the world by the fit's
similarity, so azimuth 0 always faces the fitted face and distances follow the fitted head's size.

The kinds, specs, the interface and the view sets with their documented facts: ``multiview_base.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor

from headforge.captures.capture import Capture
from headforge.captures.images import resize_image
from headforge.errors import InputError
from headforge.geometry.cameras import Cameras
from headforge.stages.avatar import Avatar
from headforge.stages.avatar_layers import composite_render
from headforge.stages.multiview_base import (
    FACELIFT_AZIMUTHS_DEG,
    FACELIFT_FOV_DEG,
    GeneratorKind,
    GeneratorSpec,
    MultiViewGenerator,
    ViewSet,
    ViewSpec,
    facelift_cameras,
    generated_capture,
    head_geometry,
    parse_generator_spec,
    parse_view_spec,
    straight_colour,
    view_cameras,
    write_generated,
)
from headforge.stages.multiview_external import ExternalConfig, ExternalGenerator
from headforge.stages.multiview_model import ModelConfig, ModelGenerator
from headforge.stages.photo_types import AlignedPhoto
from headforge.validation import Checked

__all__ = ["FACELIFT_AZIMUTHS_DEG", "FACELIFT_FOV_DEG", "ExternalConfig", "ExternalGenerator", "GeneratorKind",
           "GeneratorSpec", "ModelConfig", "ModelGenerator", "MultiViewGenerator", "PriorConfig", "PriorGenerator",
           "ViewSet", "ViewSpec", "facelift_cameras", "head_geometry", "make_generator", "parse_generator_spec",
           "parse_view_spec", "photo_view", "render_views", "view_cameras"]


def photo_view(photo: AlignedPhoto, resolution: int, head_alpha: Tensor | None) -> tuple[Cameras, Tensor]:
    """The aligned photo as a view at ``resolution``: its camera resized and RGBA [H, W, 4] whose alpha is the
    person mask, times ``head_alpha`` [H, W] (the head rendered from the photo's camera) when given."""
    cam = photo.camera.resize(resolution, resolution)
    img = torch.cat([photo.image, photo.person_mask[..., None]], -1).numpy()
    rgba = torch.from_numpy(resize_image(img, resolution, resolution).copy()).float()
    if head_alpha is not None:
        rgba[..., 3] = rgba[..., 3] * head_alpha
    return cam, rgba


@dataclass(frozen=True)
class PriorConfig(Checked):
    views: ViewSpec = field(default_factory=ViewSpec)
    resolution: Annotated[int, at.Ge(16), at.Le(4096)] = 512  # square views of the built-in view sets
    # FaceLift conditions on the input and learns to reproduce it; here the photo is the only observed view, so
    # it is added (last) with its own pixels. Its alpha is the person mask times the head rendered from the
    # photo's camera: the torso and background the completed head does not model are cut away.
    include_photo: bool = True
    overwrite: bool = False


@dataclass(frozen=True)
class PriorGenerator:
    """Renders the completed head (the photo's expression and pose: the fit's first frame) from the view set."""

    config: PriorConfig = field(default_factory=PriorConfig)
    kind: GeneratorKind = GeneratorKind.PRIOR

    def generate(self, photo: AlignedPhoto, head: Avatar | None, out_dir: Path) -> Capture:
        if head is None:
            raise InputError("the prior generator renders the completed head, and none was given",
                             fix="fit the rig to the photo first (PhotoFit.avatar()) or choose another generator")
        cfg = self.config
        cameras = view_cameras(cfg.views, cfg.resolution, head_geometry(head))
        rgba = render_views(head, cameras)
        if cfg.include_photo:
            w, h = cameras.same_size()
            if w != h:
                raise InputError(f"the view set's images are {w}x{h}; the square photo view needs square views",
                                 fix="use square cameras or PriorConfig(include_photo=False)")
            pcam = photo.camera.resize(w, w)
            head_alpha = render_views(head, pcam)[0, ..., 3]
            cam, view = photo_view(photo, w, head_alpha)
            cameras = Cameras.cat([cameras.to(dtype=torch.float32), cam.to(dtype=torch.float32)])
            rgba = torch.cat([rgba, view[None]])
        return write_generated(generated_capture(cameras, rgba), out_dir, overwrite=cfg.overwrite)


def render_views(head: Avatar, cameras: Cameras, batch: int = 8) -> Tensor:  # -> [N, H, W, 4] straight RGBA
    """The completed head under its first frame from ``cameras`` (the photo's world), coverage as alpha."""
    params = head.params.frame(0)
    black = torch.zeros(3)
    out = []
    for s in range(0, len(cameras), batch):
        rgb, alpha = composite_render(head, params, cameras[list(range(s, min(s + batch, len(cameras))))], black)
        out.append(torch.cat([straight_colour(rgb, alpha), alpha], -1))
    return torch.cat(out)


def make_generator(spec: GeneratorSpec, *, prior: PriorConfig | None = None, external: ExternalConfig | None = None,
                   model: ModelConfig | None = None) -> MultiViewGenerator:
    """The generator a spec names, with its config (the defaults where None)."""
    if spec.kind is GeneratorKind.PRIOR:
        return PriorGenerator(prior or PriorConfig())
    if spec.kind is GeneratorKind.EXTERNAL:
        return ExternalGenerator(spec.command, external or ExternalConfig())
    return ModelGenerator(spec.path, model or ModelConfig())
