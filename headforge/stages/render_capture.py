"""Stage: render a textured mesh into a multi-view capture (RGBA images, masks, depth, cameras).

Output layout (``out/``)::

    images/<name>.png   RGBA, straight (non-premultiplied) sRGB colour, alpha = coverage
    masks/<name>.png    8-bit coverage mask (same as alpha; for tools that want separate masks)
    depth/<name>.png    16-bit camera-space z in units of ``depth_unit`` metres (0 = background)
    transforms.json     nerfstudio (OpenGL camera-to-world, mask_path, depth_file_path)
    opencv_cameras.json GS-LRM / FaceLift layout (OpenCV world-to-camera)

The mesh is first brought into the canonical head frame (geometry/head_frame.py) unless
``head_frame`` is None, so every rig sees the head the same way. The mesh and the rig are checked
before anything is written; the folder is written under ``OUT.lock`` (headforge/locks.py) as one
staged directory, so ``overwrite`` replaces an earlier capture only once the new one is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from tqdm import tqdm

from headforge.atomic import atomic_directory
from headforge.captures.capture import Capture, Split, View
from headforge.captures.formats import CaptureFormat, write_camera_file
from headforge.captures.images import write_image
from headforge.geometry.camera_rigs import RigConfig, make_rig
from headforge.geometry.head_frame import HeadFrameSpec, to_head_frame
from headforge.locks import output_lock
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh import TexturedMesh
from headforge.validation import Checked, Count, NonNegativeInt, Positive

Supersample = Annotated[int, at.Ge(1), at.Le(8)]  # render at k x the resolution and filter down


@dataclass(frozen=True)
class RenderCaptureConfig(Checked):
    rig: RigConfig = field(default_factory=RigConfig)
    head_frame: HeadFrameSpec | None = field(default_factory=lambda: HeadFrameSpec(head_width_m=0.155))
    supersample: Supersample = 2  # render at k x resolution and box-filter (clean anti-aliased edges)
    shading: bool = False  # unlit albedo by default (what reconstruction is scored against)
    # Split of the returned capture (Split.spread: ceil(N / test_every) views spread over azimuth). Not written
    # into the files: whoever reads them chooses a split (reconstruct / inspect --test-every).
    test_every: NonNegativeInt = 8
    depth_unit: Positive = 1e-4  # metres per 16-bit depth unit (0.1 mm; up to 6.5 m)
    batch: Count = 4  # views rendered together (memory vs speed)


@dataclass(frozen=True)
class RenderedCapture:
    out_dir: Path
    capture: Capture  # reads back the written files
    mesh: TexturedMesh  # the mesh as rendered (in the head frame)
    to_head_frame: torch.Tensor  # [4, 4] similarity applied to the input mesh


def render_capture(mesh: TexturedMesh, cfg: RenderCaptureConfig, out_dir: str | Path, *,
                   overwrite: bool = False, progress: bool = True) -> RenderedCapture:
    out_dir = Path(out_dir)
    mesh.validate()
    transform = torch.eye(4)
    if cfg.head_frame is not None:
        mesh, transform = to_head_frame(mesh, cfg.head_frame)
    cameras = make_rig(cfg.rig)
    names = cameras.names
    far = float(cameras.centers().norm(dim=-1).max()) * 3
    with output_lock(out_dir), atomic_directory(out_dir, overwrite=overwrite) as stage:
        for sub in ("images", "masks", "depth"):
            (stage / sub).mkdir()
        views = []
        chunks = range(0, len(cameras), cfg.batch)
        for start in tqdm(chunks, desc="render views", unit="batch", disable=not progress):
            idx = list(range(start, min(start + cfg.batch, len(cameras))))
            out = render_mesh(mesh, cameras[idx], far=far, supersample=cfg.supersample, shading=cfg.shading)
            for j, i in enumerate(idx):
                rgba = torch.cat([out.rgb[j], out.alpha[j, ..., None]], -1).numpy()
                depth = np.round(out.depth[j].numpy() / cfg.depth_unit)
                if depth.max() >= 65535:
                    raise ValueError(f"depth exceeds the 16-bit range at depth_unit={cfg.depth_unit} m")
                write_image(stage / "images" / f"{names[i]}.png", rgba)
                write_image(stage / "masks" / f"{names[i]}.png", out.alpha[j].numpy())
                write_image(stage / "depth" / f"{names[i]}.png", depth[..., None] / 65535.0, bits=16)
                views.append(View(stage / "images" / f"{names[i]}.png", stage / "masks" / f"{names[i]}.png",
                                  stage / "depth" / f"{names[i]}.png"))
        capture = Capture(cameras, tuple(views), Split.spread(cameras, cfg.test_every),
                          source_path=stage, depth_unit=cfg.depth_unit)
        for fmt in (CaptureFormat.NERFSTUDIO, CaptureFormat.OPENCV_JSON):
            write_camera_file(capture, stage, fmt)
    from headforge.captures.formats import read_capture

    written = read_capture(out_dir / "transforms.json", test_every=cfg.test_every)
    return RenderedCapture(out_dir, written, mesh, transform)
