"""Small hand-made layered avatars for the tests (no training): face Gaussians sampled on a rig's face-skin
triangles and coloured from a procedural atlas texture, hair Gaussians a few millimetres above its upper scalp
triangles, the rig's neutral with a similarity, and a RigTexture from the image (``texture_from_image``)."""

from __future__ import annotations

import math

import torch

from headforge.geometry.rotations import rotmat_to_quat
from headforge.geometry.sh import rgb_to_sh0
from headforge.pipeline.fitted_rig import texture_from_image
from headforge.pipeline.rig_fit_file import RigFitRecord
from headforge.representations.bound_gaussians import LayerCode, bind_world_splats, triangle_frames
from headforge.representations.gaussians import Splats
from headforge.representations.rig.arkit import NUM_ARKIT
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.avatar import Avatar, BoundSplats
from headforge.stages.rig_params import RigParams, Similarity, rig_vertices

HAIR_HEIGHT = 0.004  # metres above the scalp (on the rig's template size)
TEXTURE_SIZE = 128


def procedural_texture(size: int = TEXTURE_SIZE, hue: float = 0.0) -> torch.Tensor:
    """[S, S, 3] a skin-like colour with smooth stripes over the atlas (so every texel's colour differs)."""
    t = torch.linspace(0, 1, size)
    u, v = t[None, :], t[:, None]
    base = torch.tensor([0.78, 0.58, 0.48])
    wave = 0.12 * torch.sin(2 * math.pi * (3 * u + 2 * v) + hue)[..., None] * torch.tensor([1.0, 0.6, 0.4])
    return (base + wave + 0.05 * torch.cos(2 * math.pi * 5 * v)[..., None]).clamp(0, 1)


def similarity(scale: float = 1.3) -> Similarity:
    angle = 0.4
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
    return Similarity(torch.tensor(scale, dtype=torch.float64), R, torch.tensor([0.1, -0.05, 0.3], dtype=torch.float64))


def neutral_params(rig: HeadRig, identity: torch.Tensor | None = None, scale: float = 1.3) -> RigParams:
    ident = torch.zeros(rig.num_identity, dtype=torch.float64) if identity is None else identity.double()
    return RigParams(similarity(scale), ident, torch.zeros(1, NUM_ARKIT, dtype=torch.float64),
                     RigPose.rest(1, dtype=torch.float64))


def region_faces(rig: HeadRig, region: Region) -> torch.Tensor:
    return rig.region_mask(region)[rig.faces].all(1).nonzero().squeeze(1)


def upper_scalp_faces(rig: HeadRig) -> torch.Tensor:
    """Scalp triangles above the eyes and behind the forehead's hairline (keeps hair off the face region)."""
    tris = region_faces(rig, Region.SCALP)
    c = rig.template[rig.faces[tris]].mean(1)
    face = rig.template[rig.region_mask(Region.FACE_SKIN)]
    top = float(face[:, 1].max())
    return tris[(c[:, 1] > top - 0.03) & (c[:, 2] < float(face[:, 2].max()) - 0.06)]


def _barycentrics(n: int, g: torch.Generator) -> torch.Tensor:  # [n, 3] uniform over the triangle (Dirichlet(1))
    e = -torch.log(torch.rand(n, 3, generator=g, dtype=torch.float64).clamp_min(1e-12))
    return e / e.sum(1, keepdim=True)


def _frame_splats(verts: torch.Tensor, faces: torch.Tensor, tris: torch.Tensor, bary: torch.Tensor, height: float,
                  scales: tuple[float, float, float], colors: torch.Tensor, opacity: float) -> Splats:
    R, _, _ = triangle_frames(verts, faces)
    corners = verts[faces[tris]]  # [N, 3, 3]
    p = (bary[:, :, None] * corners).sum(1) + height * R[tris][:, :, 1]
    n = len(tris)
    quats = rotmat_to_quat(R[tris])
    return Splats(p, quats, torch.tensor(scales, dtype=verts.dtype).expand(n, 3).clone(),
                  torch.full((n,), opacity, dtype=verts.dtype), rgb_to_sh0(colors.to(verts.dtype))[:, None])


def make_avatar(rig: HeadRig, rig_spec: str, *, identity: torch.Tensor | None = None, n_face: int = 2500,
                n_hair: int = 300, seed: int = 0, hair_rgb: tuple[float, float, float] = (0.3, 0.18, 0.1),
                texture: torch.Tensor | None = None, sh_degree: int = 0) -> Avatar:
    g = torch.Generator().manual_seed(seed)
    params = neutral_params(rig, identity)
    verts = rig_vertices(rig, params)[0]  # [V, 3] rig frame, float64
    tex = texture_from_image(rig, procedural_texture() if texture is None else texture)
    row = torch.full((rig.faces.shape[0],), -1, dtype=torch.long)
    row[tex.faces] = torch.arange(len(tex.faces))
    face_tris = region_faces(rig, Region.FACE_SKIN)
    face_tris = face_tris[row[face_tris] >= 0]
    ft = face_tris[torch.randint(len(face_tris), (n_face,), generator=g)]
    fb = _barycentrics(n_face, g)
    uv = (fb[:, :, None] * tex.uvs[row[ft]].double()).sum(1)
    col = tex.texture[((1 - uv[:, 1]) * TEXTURE_SIZE).long().clamp(0, TEXTURE_SIZE - 1),
                      (uv[:, 0] * TEXTURE_SIZE).long().clamp(0, TEXTURE_SIZE - 1)]
    face = _frame_splats(verts, rig.faces, ft, fb, 0.0, (0.0015, 0.0003, 0.0015), col, 0.9)
    scalp = upper_scalp_faces(rig)
    ht = scalp[torch.randint(len(scalp), (n_hair,), generator=g)]
    hb = _barycentrics(n_hair, g)
    hair_col = torch.tensor(hair_rgb).expand(n_hair, 3) * (0.85 + 0.3 * torch.rand(n_hair, 1, generator=g))
    hair = _frame_splats(verts, rig.faces, ht, hb, HAIR_HEIGHT, (0.003, 0.0015, 0.003), hair_col, 0.85)
    binding = torch.cat([ft, ht])
    world = Splats(*(torch.cat([getattr(face, n), getattr(hair, n)]) for n in ("means", "quats", "scales",
                                                                               "opacities", "sh")))
    local = bind_world_splats(world, binding, verts, rig.faces)
    if sh_degree:
        k = (sh_degree + 1) ** 2
        rest = 0.02 * torch.randn(len(binding), k - 1, 3, generator=g, dtype=torch.float64)
        local = Splats(local.means, local.quats, local.scales, local.opacities, torch.cat([local.sh, rest], 1))
    layer = torch.cat([torch.full((n_face,), int(LayerCode.FACE)), torch.full((n_hair,), int(LayerCode.HAIR))])
    local = Splats(*(t.float() for t in (local.means, local.quats, local.scales, local.opacities, local.sh)))
    return Avatar(rig, rig_spec, params, tex, BoundSplats(local, binding, layer), sh_degree)


def fit_record(avatar: Avatar) -> RigFitRecord:
    rig = avatar.rig
    return RigFitRecord(avatar.rig_spec, rig.source, rig.licence, rig.num_vertices, avatar.params, (0,), ((),),
                        LandmarkSet.MEDIAPIPE_478, {})
