"""A synthetic aligned photo with ground truth: the built-in rig (identity, expression and head pose known),
textured with the sample head's albedo, optionally under a hair shell (the scalp pushed out along its normals),
rendered from one front camera; landmarks are the rig's own MediaPipe embedding projected (exact)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.assets.sample_head import load_sample_head
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.deform import RigPose, landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.photo_types import AlignConvention, AlignedPhoto, CropBox
from headforge.stages.rig_evaluate import rig_mesh
from headforge.stages.rig_params import RigParams, Similarity, rig_vertices

D = torch.float64
HAIR_RGB = (0.25, 0.16, 0.10)


@dataclass(frozen=True, eq=False)
class SyntheticPhoto:
    photo: AlignedPhoto
    rig: HeadRig
    truth: RigParams  # the rendered state (world = head frame, similarity identity)
    template_texture: Tensor  # the sample head's albedo (the built-in rig's template)
    hair_thickness: float  # metres the scalp was pushed out (0: bald)


def front_camera(size: int, distance: float = 0.75, focal: float = 1100.0) -> Cameras:
    """A camera on +z looking at the head frame's origin (OpenCV: x right, y down, looking along -z world)."""
    w2c = torch.eye(4)
    w2c[1, 1] = w2c[2, 2] = -1.0
    w2c[2, 3] = distance
    w2c[1, 3] = -0.0  # the head frame's origin at the image centre
    return Cameras.create(w2c, focal, focal, size / 2, size / 2 + 40 * size / 512, size, size)


def truth_params(rig: HeadRig) -> RigParams:
    expr = torch.zeros(1, len(ARKIT_NAMES), dtype=D)
    for name, w in {"jawOpen": 0.25, "mouthSmileLeft": 0.5, "mouthSmileRight": 0.5, "browInnerUp": 0.4}.items():
        expr[0, ARKIT_NAMES.index(name)] = w
    ident = torch.zeros(rig.num_identity, dtype=D)
    ident[:4] = torch.tensor([0.8, -0.6, 0.5, 0.4], dtype=D)[:rig.num_identity]
    rot = torch.zeros(1, 6, 3, dtype=D)
    rot[0, 2] = torch.tensor([0.06, -0.10, 0.02], dtype=D)  # the head joint: a small nod and turn
    return RigParams(Similarity(torch.tensor(1.0, dtype=D), torch.eye(3, dtype=D), torch.zeros(3, dtype=D)),
                     ident, expr, RigPose(rot, torch.zeros(1, 3, dtype=D)))


def hair_shell(rig: HeadRig, verts: Tensor, thickness: float) -> TexturedMesh:
    """The scalp triangles with their vertices pushed ``thickness`` metres out along the vertex normals."""
    normals = TexturedMesh(verts, rig.faces).vertex_normals()
    scalp = rig.region_mask(Region.SCALP)
    faces = rig.faces[scalp[rig.faces].all(1)]
    shell = verts + thickness * normals
    return TexturedMesh(shell.float(), faces, vertex_colors=torch.tensor(HAIR_RGB).expand(len(verts), 3).clone())


def synthetic_photo(size: int = 512, hair_thickness: float = 0.015, shading: bool = False) -> SyntheticPhoto:
    """``shading``: Lambert shading from the camera (a photo's darker grazing skin; the albedo otherwise)."""
    rig = load_builtin_rig()
    tex = load_sample_head().mesh.texture
    truth = truth_params(rig)
    verts = rig_vertices(rig, truth)[0].float()
    cam = front_camera(size)
    head = render_mesh(rig_mesh(rig, verts, tex), cam, supersample=2, shading=shading)
    labels = torch.zeros(rig.num_vertices, 3)
    labels[rig.region_mask(Region.FACE_SKIN), 0] = 1.0
    lab = render_mesh(TexturedMesh(verts, rig.faces, vertex_colors=labels), cam, antialiased=False)
    rgb, alpha, depth = head.rgb[0], head.alpha[0], head.depth[0]
    face = (lab.rgb[0, ..., 0] > 0.5) & (lab.alpha[0] > 0.5)
    hair = torch.zeros(size, size, dtype=torch.bool)
    if hair_thickness > 0:
        h = render_mesh(hair_shell(rig, verts, hair_thickness), cam, supersample=2)
        front = (h.alpha[0] > 0) & ((depth <= 0) | (h.depth[0] < depth))
        a = torch.where(front, h.alpha[0], torch.zeros(()))
        rgb = rgb * (1 - a[..., None]) + h.rgb[0] * a[..., None]
        alpha = alpha + a * (1 - alpha)
        hair = front & (h.alpha[0] > 0.5)
        face &= ~front
    pts = landmarks(rig, verts.double()[None], LandmarkSet.MEDIAPIPE_478)[0]
    uv, _ = project_points(cam.to(dtype=D), pts)
    photo = AlignedPhoto(rgb.clamp(0, 1), alpha.clamp(0, 1), face, hair, uv[0].float(), cam,
                         CropBox(0.0, 0.0, float(size), (size, size)), AlignConvention.FACE_BOX,
                         "synthetic: known camera")
    return SyntheticPhoto(photo, rig, truth, tex, hair_thickness)
