"""A fitted rig or avatar as one rigged, animated GLB for game engines and viewers (issue 13).

Scene (node names are a contract: VRM, Blender and the report find parts by them):

    root ─ neck ─ head ─┬─ jaw ─ lower_teeth_mesh          joints, named by ``Joint``; translations only at rest
                        ├─ left_eye ─ left_eye_mesh
                        ├─ right_eye ─ right_eye_mesh
                        ├─ upper_teeth_mesh
                        └─ hair_splats                       (KHR_gaussian_splatting, an avatar's hair layer)
           neck ─ clothing_splats                            (the clothing layer)
    head_mesh                                                skinned by the 6 joints (a scene root, as glTF wants)

Everything is in the rig frame (metres; the head frame is glTF's axes). ``head_mesh`` holds the subject's neutral
vertices (identity + offsets: exactly ``rig_vertices`` at rest), the 52 ARKit morph targets (ARKit order,
``extras.targetNames``, default weights 0; sparse accessors, float32 or, with ``quantize_targets``, normalized
SHORT under the required KHR_mesh_quantization) and JOINTS_0/WEIGHTS_0 (top ``max_influences``).
Eyes and teeth bound rigidly to one joint are their own meshes, children of that joint, in its local frame; a
rigid part carries the 52 targets when an expression moves it (ICT's teeth), else none. Clips become animations:
``weights`` on every mesh node with targets, ``rotation`` on the joints the clip turns. See stages/DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import numpy as np
import torch

from headforge.errors import InputError
from headforge.io.gaussian_splatting import add_gaussian_splats
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import (
    AccessorType,
    AnimationChannel,
    AnimationPath,
    BufferTarget,
    Material,
    MinFilter,
    Node,
    Primitive,
    Sampler,
    Wrap,
)
from headforge.representations.bound_gaussians import Layer, pose_bound
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.clips import Clip, check_clip_for_rig
from headforge.representations.rig.head_rig import JOINT_PARENTS, JOINTS, HeadRig, Joint
from headforge.stages.avatar import Avatar, BoundSplats
from headforge.stages.rig_export_parts import (
    HEAD_MESH,
    PartGeometry,
    axis_angle_to_quat_xyzw,
    continuous_quats,
    face_parts,
    normal_deltas,
    part_geometry,
    quantize_delta,
    rest_joints,
    sparse_delta,
    top_influences,
    vertex_normals,
)
from headforge.stages.rig_params import RigParams, rig_vertices
from headforge.stages.rig_texture import RigTexture
from headforge.validation import Checked, Fraction, NonNegative

__all__ = ["ExportHead", "ExportedRig", "HairExport", "RigGlbConfig", "build_rigged_glb", "export_rig"]

STAGE = "rigged GLB export"
VERTEX = BufferTarget.ARRAY_BUFFER
QUANTIZATION = "KHR_mesh_quantization"
SPLAT_NODES = {Layer.HAIR: ("hair_splats", Joint.HEAD), Layer.CLOTHING: ("clothing_splats", Joint.NECK)}


class HairExport(StrEnum):
    SPLATS = "splats"  # the hair (and clothing) layers as KHR_gaussian_splatting nodes
    NONE = "none"  # mesh only


@dataclass(frozen=True, eq=False)
class ExportHead:
    rig: HeadRig
    params: RigParams  # identity + offsets used; its expression/pose are ignored (the export is neutral)
    texture: RigTexture  # the baked face texture in its atlas layout
    gaussians: BoundSplats | None = None  # an avatar's bound Gaussians; None for a rig fit

    @staticmethod
    def of_avatar(avatar: Avatar) -> ExportHead:
        return ExportHead(avatar.rig, avatar.params, avatar.texture, avatar.gaussians)


@dataclass(frozen=True)
class RigGlbConfig(Checked):
    sparse_targets: bool = True  # False writes dense targets (the size comparison of the bench)
    max_influences: Annotated[int, at.Ge(1), at.Le(len(JOINTS))] = 4  # joints per vertex (glTF sets of 4)
    hair: HairExport = HairExport.SPLATS
    # eyes and teeth as rigid meshes under their joints (the node contract); False keeps them in the skinned head
    # mesh, for engines that play morph targets only on skinned meshes (Unreal: ICT's teeth have targets)
    split_parts: bool = True
    target_epsilon: NonNegative = 1e-7  # metres: a sparse target stores the vertices moving more than this
    # NORMAL deltas in the morph targets (shading follows the expression in engines that do not recompute normals,
    # three.js among them; about doubles the targets' size)
    normal_targets: bool = False
    normal_epsilon: NonNegative = 1e-4  # unit-normal change below which a sparse NORMAL target leaves a vertex out
    # morph deltas as normalized SHORT (c / 32767 m, step 30.5 um; entries that round to 0 dropped) under
    # KHR_mesh_quantization, which goes into extensionsRequired: viewers without the extension refuse the file
    quantize_targets: bool = False
    roughness: Fraction = 0.6
    plain_color: tuple[float, float, float] = (0.45, 0.25, 0.25)  # linear RGB of faces outside the atlas


@dataclass(frozen=True)
class ExportedRig:
    """What the GLB holds, for tests and reports: the parts (with their rig-vertex maps) and the rest joints."""

    glb: bytes
    parts: tuple[PartGeometry, ...]
    joints: np.ndarray  # [J, 3] rest joints, rig frame
    neutral: np.ndarray  # [V, 3] neutral vertices (identity + offsets), rig frame, float64


def _check(head: ExportHead) -> None:
    rig, p = head.rig, head.params
    if not p.is_finite():
        raise InputError(f"{STAGE}: the fit's parameters hold NaN or infinite values",
                         fix="fit the rig again (the saved rig_fit.json or offsets are damaged)")
    if p.identity.shape != (rig.num_identity,):
        raise InputError(f"{STAGE}: the fit has {p.identity.shape[0]} identity coefficients, the rig "
                         f"({rig.source}) {rig.num_identity}", fix="export with the rig the fit was made with")
    if p.offsets is not None and p.offsets.shape != rig.template.shape:
        raise InputError(f"{STAGE}: offsets {list(p.offsets.shape)} do not match the rig's {rig.num_vertices} "
                         "vertices", fix="export with the rig the fit was made with")
    if rig.pose_correctives is not None:  # (its own expression components are zero at rest; clips drive ARKit)
        raise InputError(f"{STAGE}: the rig ({rig.source}) has pose correctives (shapes driven by joint "
                         "rotations), which glTF cannot play", fix="export an ICT-FaceKit or built-in rig fit; "
                         "FLAME's pose correctives are not exportable yet")
    if not bool(torch.isfinite(head.texture.texture).all()):
        raise InputError(f"{STAGE}: the texture holds non-finite values", fix="bake the texture again")


def _neutral(rig: HeadRig, params: RigParams) -> tuple[np.ndarray, np.ndarray]:
    """-> (neutral vertices [V, 3] with offsets, identity-only vertices [V, 3]), rig frame, float64."""
    rest = params.posed()
    full = rig_vertices(rig, rest)[0].numpy()
    bare = rig_vertices(rig, RigParams(rest.similarity, rest.identity, rest.expression, rest.pose))[0].numpy()
    return full, bare


class _Materials:
    """The face material (baked texture) and, made on first use, the plain one of faces outside the atlas."""

    def __init__(self, b: GltfBuilder, texture: RigTexture, config: RigGlbConfig):
        self._b, self._config, self._plain = b, config, None
        rgb = (texture.texture.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        sampler = Sampler(min_filter=MinFilter.LINEAR, wrap_s=Wrap.CLAMP_TO_EDGE, wrap_t=Wrap.CLAMP_TO_EDGE)
        tex = b.add_texture(b.add_image_png(rgb, name="face"), sampler)
        self.face = b.add_material(Material(name="face", base_color_texture=tex, metallic_factor=0.0,
                                            roughness_factor=config.roughness))

    @property
    def plain(self) -> int:
        if self._plain is None:
            c = self._config
            self._plain = self._b.add_material(Material(name="plain", base_color_factor=(*c.plain_color, 1.0),
                                                        metallic_factor=0.0, roughness_factor=c.roughness))
        return self._plain


def _target(b: GltfBuilder, delta: np.ndarray, epsilon: float, config: RigGlbConfig, position: bool,
            name: str) -> int:
    """One morph-target accessor of delta [N, 3] (float64), sparse or dense, float32 or (``quantize_targets``)
    normalized SHORT under KHR_mesh_quantization. POSITION (``position``) gets min/max; a POSITION delta beyond
    +-1 m is refused; a NORMAL delta with a component beyond +-1 (a normal turned far: closing eyelids, the opening
    jaw's inner mouth) stays float32, which the extension allows per accessor."""
    quantized = quantize_delta(delta, epsilon) if config.quantize_targets else None
    if config.quantize_targets and quantized is None and position:
        worst = float(np.abs(delta).max())
        raise InputError(f"{STAGE}: morph target {name} moves a vertex by {worst:.3g} m, beyond the +-1 m that "
                         "quantize_targets (normalized SHORT deltas) can hold", fix="export without quantize_targets "
                         "(float deltas), or check the rig's expression basis: a head's shapes move millimetres")
    if quantized is not None:
        b.use_extension(QUANTIZATION, required=True)
        idx, codes = quantized
        if config.sparse_targets:
            return b.add_sparse_accessor(len(delta), idx, codes, AccessorType.VEC3, normalized=True,
                                         min_max=position, name=name)
        dense = np.zeros(delta.shape, np.int16)
        dense[idx] = codes
        return b.add_accessor(dense, AccessorType.VEC3, target=VERTEX, normalized=True, min_max=position, name=name)
    if config.sparse_targets:
        idx, val = sparse_delta(delta, epsilon)
        return b.add_sparse_accessor(len(delta), idx, val, AccessorType.VEC3, min_max=position, name=name)
    return b.add_accessor(delta.astype(np.float32), AccessorType.VEC3, target=VERTEX, min_max=position, name=name)


def _add_part_mesh(b: GltfBuilder, part: PartGeometry, rig: HeadRig, neutral: np.ndarray, normals: np.ndarray,
                   dnormals: np.ndarray | None, origin: np.ndarray, materials: _Materials,
                   config: RigGlbConfig) -> tuple[int, bool]:
    """The part's mesh; positions relative to ``origin`` [3] (its joint, or 0 for the skinned head); ``dnormals``
    [52, V, 3] NORMAL deltas or None. -> (mesh index, has targets)."""
    src = part.source
    pos = (neutral[src] - origin).astype(np.float32)
    attrs = {"POSITION": b.add_accessor(pos, AccessorType.VEC3, target=VERTEX, min_max=True),
             "NORMAL": b.add_accessor(normals[src].astype(np.float32), AccessorType.VEC3, target=VERTEX),
             "TEXCOORD_0": b.add_accessor(part.uv, AccessorType.VEC2, target=VERTEX)}
    if part.joint is None:
        joints, weights = top_influences(rig.skin_weights.double().numpy()[src], config.max_influences)
        for s in range(joints.shape[1] // 4):
            attrs[f"JOINTS_{s}"] = b.add_accessor(np.ascontiguousarray(joints[:, 4 * s:4 * s + 4]), AccessorType.VEC4,
                                                  target=VERTEX)
            attrs[f"WEIGHTS_{s}"] = b.add_accessor(np.ascontiguousarray(weights[:, 4 * s:4 * s + 4]),
                                                   AccessorType.VEC4, target=VERTEX)
    basis = rig.expression_basis.double().numpy()[:, src]  # [52, N, 3]
    moves = np.abs(basis).max() > config.target_epsilon
    targets: tuple[dict[str, int], ...] = ()
    if part.joint is None or moves:
        tlist = []
        for k, name in enumerate(ARKIT_NAMES):
            t = {"POSITION": _target(b, basis[k], config.target_epsilon, config, True, name)}
            if dnormals is not None:
                t["NORMAL"] = _target(b, dnormals[k][src], config.normal_epsilon, config, False, f"{name}_normal")
            tlist.append(t)
        targets = tuple(tlist)
    prims = []
    if len(part.textured):
        prims.append(Primitive(attrs, indices=b.add_indices(part.textured), material=materials.face, targets=targets))
    if len(part.plain):  # untextured: no TEXCOORD_0 (the validator flags an attribute no material reads)
        plain_attrs = {k: v for k, v in attrs.items() if k != "TEXCOORD_0"}
        prims.append(Primitive(plain_attrs, indices=b.add_indices(part.plain), material=materials.plain,
                               targets=targets))
    names = list(ARKIT_NAMES) if targets else None
    mesh = b.add_mesh(prims, weights=[0.0] * NUM_ARKIT if targets else None, target_names=names, name=part.name)
    return mesh, bool(targets)


def _splat_mesh(b: GltfBuilder, g: BoundSplats, layer: Layer, rig: HeadRig, neutral: np.ndarray,
                origin: np.ndarray) -> int | None:
    """The layer's splats posed on the neutral vertices, relative to ``origin`` [3] (its joint). None: none."""
    keep = g.layer_mask(layer)
    if not bool(keep.any()):
        return None
    sel = g.select(keep)
    s = pose_bound(sel.local, sel.binding, torch.from_numpy(neutral).to(sel.local.means.dtype), rig.faces).detach()
    f32 = lambda t: np.ascontiguousarray(t.double().numpy(), dtype=np.float32)  # noqa: E731
    q = s.quats / s.quats.norm(dim=-1, keepdim=True)
    prim = add_gaussian_splats(b, (f32(s.means) - origin).astype(np.float32), f32(q[:, [1, 2, 3, 0]]),
                               f32(s.scales), np.clip(f32(s.opacities), 0, 1), f32(s.sh))
    return b.add_mesh([prim], name=SPLAT_NODES[layer][0])


def _animation(b: GltfBuilder, clip: Clip, morph_nodes: list[int], joint_nodes: list[int]) -> None:
    times = (np.arange(clip.num_frames, dtype=np.float64) / clip.fps).astype(np.float32)
    channels = [AnimationChannel(n, AnimationPath.WEIGHTS, times, clip.weights.numpy().astype(np.float32))
                for n in morph_nodes]
    rot = clip.rotations.numpy()  # [T, J, 3]
    for j, node in enumerate(joint_nodes):
        if np.abs(rot[:, j]).max() > 0:
            q = continuous_quats(axis_angle_to_quat_xyzw(rot[:, j]))
            channels.append(AnimationChannel(node, AnimationPath.ROTATION, times, q.astype(np.float32)))
    b.add_animation(channels, name=clip.name)


def export_rig(head: ExportHead, clips: Sequence[Clip] = (), config: RigGlbConfig = RigGlbConfig()) -> ExportedRig:
    """Build the GLB (see the module doc) and return it with the parts it holds."""
    _check(head)
    rig = head.rig
    names = [clip.name for clip in clips]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{STAGE}: two clips are named {', '.join(twice)}; each becomes the animation of that name",
                         fix="rename one of the clip files (the animation takes the file's name)")
    for clip in clips:
        check_clip_for_rig(clip, rig)
    neutral, bare = _neutral(rig, head.params)
    joints = rest_joints(rig, bare)  # [J, 3]
    parts_faces, dropped = face_parts(rig, config.split_parts)
    atlas_faces = head.texture.faces.numpy()
    atlas_uvs = head.texture.uvs.double().numpy()
    drawn = np.concatenate(list(parts_faces.values()))
    drawn = drawn[~dropped[drawn]]
    normals = vertex_normals(neutral, rig.faces.numpy()[drawn])
    dnormals = (normal_deltas(neutral, rig.expression_basis.double().numpy(), rig.faces.numpy()[drawn])
                if config.normal_targets else None)
    b = GltfBuilder()
    materials = _Materials(b, head.texture, config)
    parts, children = [], {j: [] for j in JOINTS}
    morph_nodes, head_node = [], None
    for name, faces in parts_faces.items():
        part = part_geometry(rig, name, faces, atlas_faces, atlas_uvs, dropped)
        if len(part.textured) + len(part.plain) == 0:
            continue
        origin = np.zeros(3) if part.joint is None else joints[JOINTS.index(part.joint)]
        mesh, morphs = _add_part_mesh(b, part, rig, neutral, normals, dnormals, origin, materials, config)
        parts.append(part)
        if part.joint is None:
            head_node = (mesh, morphs)
            continue
        node = b.add_node(Node(name=name, mesh=mesh))
        children[part.joint].append(node)
        if morphs:
            morph_nodes.append(node)
    if head_node is None:
        raise InputError(f"{STAGE}: the rig ({rig.source}) has no skinned faces to export", fix="check the rig")
    if head.gaussians is not None and config.hair is HairExport.SPLATS:
        for layer, (name, joint) in SPLAT_NODES.items():
            mesh = _splat_mesh(b, head.gaussians, layer, rig, neutral, joints[JOINTS.index(joint)])
            if mesh is not None:
                children[joint].append(b.add_node(Node(name=name, mesh=mesh)))
    joint_nodes = [0] * len(JOINTS)
    for j in reversed(range(len(JOINTS))):  # children before parents: node indices exist when referenced
        kids = [joint_nodes[c] for c in range(len(JOINTS)) if JOINT_PARENTS[c] == j] + children[JOINTS[j]]
        p = JOINT_PARENTS[j]
        t = joints[j] - (joints[p] if p >= 0 else 0.0)
        joint_nodes[j] = b.add_node(Node(name=str(JOINTS[j]), children=tuple(kids), translation=tuple(t.tolist())))
    ibm = np.stack([np.eye(4) for _ in JOINTS])
    ibm[:, :3, 3] = -joints
    skin = b.add_skin(joint_nodes, ibm.astype(np.float32), skeleton=joint_nodes[0], name="head")
    head_mesh_node = b.add_node(Node(name=HEAD_MESH, mesh=head_node[0], skin=skin))
    if head_node[1]:
        morph_nodes.insert(0, head_mesh_node)
    b.add_scene([joint_nodes[0], head_mesh_node], name="head")
    for clip in clips:
        _animation(b, clip, morph_nodes, joint_nodes)
    return ExportedRig(b.to_glb(), tuple(parts), joints, neutral)


def build_rigged_glb(head: ExportHead, clips: Sequence[Clip], config: RigGlbConfig = RigGlbConfig()) -> bytes:
    """The rigged GLB of a fitted rig or avatar with one animation per clip (see the module doc)."""
    return export_rig(head, clips, config).glb
