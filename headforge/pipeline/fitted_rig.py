"""A fitted rig read back from a folder: the rig, its ``rig_fit.json`` record and its baked texture.

``fit-rig`` output folders and avatars' ``avatar/`` folders hold ``rig_fit.json`` (+ offsets .npy) and
``texture.png``, the texture in the atlas layout of ``stages/rig_texture.atlas_layout`` with the default regions
(the layout is a function of the rig alone, so only the image is stored). The rig itself is loaded again from
the spec the record names (``builtin``, ``ict-facekit:PATH``, ``flame:PATH``): its files are the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from headforge.captures.images import read_image
from headforge.errors import InputError
from headforge.pipeline.rig_fit_file import TEXTURE_FILE, RigFitRecord, read_rig_fit
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.rig_params import RigParams
from headforge.stages.rig_texture import RigTexture, RigTextureConfig, atlas_layout, rig_textured_mesh

__all__ = ["FittedRig", "load_fitted_rig", "texture_from_image"]


@dataclass(frozen=True, eq=False)
class FittedRig:
    rig: HeadRig
    record: RigFitRecord
    texture: RigTexture

    @property
    def params(self) -> RigParams:
        return self.record.params

    def mesh(self, vertices: Tensor) -> TexturedMesh:
        """The textured mesh of posed vertices [V, 3] (any frame: world or rig frame)."""
        return rig_textured_mesh(self.rig, vertices, self.texture)


def texture_from_image(rig: HeadRig, image: Tensor, source: Path | None = None) -> RigTexture:
    """A :class:`RigTexture` from an image [S, S, 3] in the rig's default atlas layout (confidence unknown: 1)."""
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 3:
        raise InputError(f"the rig texture must be a square RGB image, got {list(image.shape)}", path=source,
                         fix="restore the texture.png that fit-rig / avatar wrote")
    faces, atlas, _ = atlas_layout(rig, RigTextureConfig().regions)
    S = image.shape[0]
    ones = torch.ones(S, S)
    return RigTexture(image.float(), ones, faces, atlas.float(), ones.bool(), 1.0, 0.0, 0.0)


def load_fitted_rig(folder: str | Path) -> FittedRig:
    """Read ``rig_fit.json`` and ``texture.png`` from ``folder`` and load the rig they name."""
    from headforge.assets.rigs import load_rig, parse_rig_spec

    folder = Path(folder)
    fit_file = folder / "rig_fit.json" if folder.is_dir() or not folder.exists() else folder
    if not fit_file.is_file():
        raise InputError("no rig_fit.json here", path=fit_file,
                         fix="give a folder that `headforge fit-rig` or `headforge avatar` wrote")
    record = read_rig_fit(fit_file)
    if not record.rig_spec:
        raise InputError("the fit does not say which rig it used (rig.spec is empty)", path=fit_file,
                         fix="fit again with `headforge fit-rig`")
    rig = load_rig(parse_rig_spec(record.rig_spec))
    if rig.num_vertices != record.num_vertices:
        raise InputError(f"the rig {record.rig_spec} has {rig.num_vertices} vertices, the fit {record.num_vertices}",
                         path=fit_file, fix="load the fit with the rig files it was made with")
    tex_file = fit_file.parent / TEXTURE_FILE
    if not tex_file.is_file():
        raise InputError(f"the fit has no {TEXTURE_FILE}", path=tex_file,
                         fix="fit again with this headforge (older fit-rig folders did not keep the texture)")
    image = torch.from_numpy(read_image(tex_file, "rig texture")[..., :3].copy()).float()
    return FittedRig(rig, record, texture_from_image(rig, image, tex_file))
