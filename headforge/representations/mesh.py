"""The one textured-mesh type every stage uses.

Conventions:
- ``vertices`` [V, 3] float32 welded positions (a watertight mesh stays watertight at UV seams);
  ``faces`` [F, 3] int64 counter-clockwise seen from outside (outward normals by the right-hand rule).
- UVs are per face corner: ``uvs`` [T, 2] with ``faces_uv`` [F, 3] indexing them, in the OBJ
  convention (u right, v up, (0, 0) = bottom-left of the texture image).
- ``texture`` [H, W, 3] float32 in [0, 1], sRGB-encoded, row 0 = top of the image (as read from disk).
  :func:`uv_to_texel` converts OBJ uvs to the (0, 0) = first-texel convention the samplers use.
- ``vertex_labels`` [V] int64 indexes ``label_names`` (region labels such as face, scalp, ears, neck).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from headforge.errors import MeshError


@dataclass(frozen=True)
class TexturedMesh:
    vertices: Tensor  # [V, 3] float32
    faces: Tensor  # [F, 3] int64
    uvs: Tensor | None = None  # [T, 2] OBJ convention
    faces_uv: Tensor | None = None  # [F, 3] int64 into uvs
    texture: Tensor | None = None  # [H, W, 3] float32 sRGB in [0, 1]
    vertex_colors: Tensor | None = None  # [V, 3] float32 sRGB in [0, 1]
    vertex_labels: Tensor | None = None  # [V] int64 into label_names
    label_names: tuple[str, ...] = ()

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def has_texture(self) -> bool:
        return self.texture is not None and self.uvs is not None and self.faces_uv is not None

    def validate(self, source=None) -> TexturedMesh:
        if self.num_faces == 0 or self.num_vertices == 0:
            raise MeshError("mesh has no faces", path=source, fix="export the mesh with its triangles")
        if not bool(torch.isfinite(self.vertices).all()):
            raise MeshError("mesh has non-finite vertex positions", path=source,
                            fix="remove NaN/inf vertices in a DCC tool and re-export")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= self.num_vertices:
            raise MeshError("mesh faces index vertices that do not exist", path=source,
                            fix="the file is corrupt; re-export it")
        if self.faces_uv is not None and self.uvs is not None:
            if self.faces_uv.shape != self.faces.shape or int(self.faces_uv.max()) >= self.uvs.shape[0]:
                raise MeshError("mesh UV indices do not match its faces", path=source,
                                fix="re-export the mesh with its UVs")
        return self

    def face_normals(self) -> Tensor:  # [F, 3] unit
        v = self.vertices[self.faces]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)

    def vertex_normals(self) -> Tensor:  # [V, 3] unit, area-weighted
        v = self.vertices[self.faces]
        n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        acc = torch.zeros_like(self.vertices).index_add_(0, self.faces.reshape(-1), n.repeat_interleave(3, 0))
        return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-20)

    def bounds(self) -> tuple[Tensor, Tensor]:  # ([3], [3])
        return self.vertices.min(0).values, self.vertices.max(0).values

    def transformed(self, matrix: Tensor) -> TexturedMesh:
        """Apply a 4x4 similarity transform (rotation, uniform scale, translation) to the vertices."""
        m = matrix.to(self.vertices)
        verts = self.vertices @ m[:3, :3].T + m[:3, 3]
        faces = self.faces if float(torch.linalg.det(m[:3, :3])) > 0 else self.faces.flip(-1)
        faces_uv = self.faces_uv if faces is self.faces or self.faces_uv is None else self.faces_uv.flip(-1)
        return replace(self, vertices=verts, faces=faces, faces_uv=faces_uv)

    def label_mask(self, name: str) -> Tensor:  # [V] bool
        if self.vertex_labels is None or name not in self.label_names:
            raise KeyError(f"mesh has no region label {name!r} (labels: {self.label_names})")
        return self.vertex_labels == self.label_names.index(name)


def uv_to_texel(uv: Tensor) -> Tensor:  # [..., 2] OBJ uv -> [..., 2] with (0, 0) at the first texel
    return torch.stack([uv[..., 0], 1 - uv[..., 1]], -1)
