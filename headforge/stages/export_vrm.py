"""VRM 1.0 (``VRMC_vrm``) from the rigged head GLB, for VTuber and social-VR tools.

Facts from the VRM 1.0 specification (vrm-c/vrm-specification, ``specification/VRMC_vrm-1.0``): a
VRM is a GLB with ``extensions.VRMC_vrm`` = {specVersion "1.0", meta, humanoid, expressions, lookAt};
metres, +y up, the model faces +z standing on y = 0 (``tpose.md``); humanoid bones map bone names to
node indices and must nest as the spec's tree (non-humanoid nodes may sit between them); ``meta``
needs name, authors and licenseUrl (``https://vrm.dev/licenses/1.0/`` is the VRM Public License 1.0
URL the spec accepts); expression morph-target binds are (node, target index, weight in [0, 1]).

What this module adds to the rigged GLB (``stages/rig_export.py``, joints "root" <- "neck" <- "head"
<- {"jaw", "left_eye", "right_eye"}), without touching a vertex, texture or animation:
- a BODY SKELETON WITHOUT GEOMETRY. VRM 1.0 requires a whole humanoid (hips, spine, upper/lower
  legs, feet, upper/lower arms, hands); a head scan has none of it, so these bones are bare nodes in
  the T-pose (arms along x, legs straight) at the proportions of :data:`SEGMENTS` (fractions of
  stature, after Drillis & Contini's segment table), stature = eye height / 0.936. Nothing is drawn
  below the neck: the asset stays a floating head on an invisible body;
- a translation-only node "head_mount" under upperChest that carries the rig's "root" joint, so the
  midpoint of the eye joints lands at ``VrmConfig.eye_height_m`` above the ground and the neck joint
  at x = z = 0. Skinned vertices follow their joints, the other meshes are children of joints, so
  the mesh data is unchanged and the whole head moves up;
- humanoid bones: the new body nodes, and neck/head/jaw/leftEye/rightEye on the rig's joints
  ("left" is the subject's own left, +x, in both conventions);
- expressions: the 18 presets of :mod:`headforge.stages.vrm_expressions` and all 52 ARKit shapes as
  custom expressions named as ARKit names them, each bound on every mesh node whose
  ``extras.targetNames`` holds that shape;
- lookAt of type "bone" (the application rotates the eye joints): offsetFromHeadBone = the eye
  midpoint in the head joint's frame; range maps from :class:`VrmConfig` (input = output angle up
  to the limit, so the eyes follow a target exactly inside the range);
- meta from :class:`VrmMeta`. Its usage defaults are permissive (anyone may use it as an avatar,
  commercially, with no credit, modified and redistributed) and the user narrows them; the four
  content flags (excessively violent or sexual, political/religious, antisocial/hate use) keep the
  spec's default ``false`` because the asset is the likeness of a real person: they are opt-in.

The glTF ``animations`` (clips) stay in the file: VRM 1.0 lists animations as unused, viewers ignore
them and plain glTF tools (Blender) still import them. An avatar's ``hair_splats`` / ``clothing_splats``
(``KHR_gaussian_splatting``, not required) ride along under their joints; a VRM viewer that does not know
the extension draws their POINTS fallback. No ``firstPerson`` and no thumbnail are written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import numpy as np

from headforge.errors import InputError
from headforge.io.glb import pack_glb, read_glb
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.head_rig import Joint
from headforge.stages.rig_export_eval import world_matrices
from headforge.stages.rig_export_parts import HEAD_MESH
from headforge.stages.vrm_expressions import PRESET_EXPRESSIONS
from headforge.validation import Checked

EXTENSION = "VRMC_vrm"
VRM_PUBLIC_LICENSE_1_0 = "https://vrm.dev/licenses/1.0/"
MOUNT = "head_mount"
_FIX = "export the head with headforge's rigged GLB writer (stages/rig_export.py) and convert that file"


class AvatarPermission(StrEnum):
    ONLY_AUTHOR = "onlyAuthor"
    ONLY_SEPARATELY_LICENSED_PERSON = "onlySeparatelyLicensedPerson"
    EVERYONE = "everyone"


class CommercialUsage(StrEnum):
    PERSONAL_NON_PROFIT = "personalNonProfit"
    PERSONAL_PROFIT = "personalProfit"
    CORPORATION = "corporation"


class CreditNotation(StrEnum):
    REQUIRED = "required"
    UNNECESSARY = "unnecessary"


class Modification(StrEnum):
    PROHIBITED = "prohibited"
    ALLOW_MODIFICATION = "allowModification"
    ALLOW_MODIFICATION_REDISTRIBUTION = "allowModificationRedistribution"


Text = Annotated[str, at.Predicate(lambda s: bool(s.strip()))]  # not empty, not only blanks
Angle = Annotated[float, at.Gt(0), at.Le(90)]  # degrees


@dataclass(frozen=True)
class VrmMeta(Checked):
    """``VRMC_vrm.meta``: who made the model and what others may do with it (see the module note)."""

    name: Text
    authors: Annotated[tuple[Text, ...], at.MinLen(1)]
    license_url: Text = VRM_PUBLIC_LICENSE_1_0
    version: str = ""
    copyright_information: str = ""
    contact_information: str = ""
    references: tuple[Text, ...] = ()
    other_license_url: str = ""
    avatar_permission: AvatarPermission = AvatarPermission.EVERYONE
    commercial_usage: CommercialUsage = CommercialUsage.CORPORATION
    credit_notation: CreditNotation = CreditNotation.UNNECESSARY
    allow_redistribution: bool = True
    modification: Modification = Modification.ALLOW_MODIFICATION_REDISTRIBUTION
    allow_excessively_violent_usage: bool = False
    allow_excessively_sexual_usage: bool = False
    allow_political_or_religious_usage: bool = False
    allow_antisocial_or_hate_usage: bool = False

    def to_json(self) -> dict:
        out: dict = {"name": self.name, "authors": list(self.authors), "licenseUrl": self.license_url,
                     "avatarPermission": self.avatar_permission.value, "commercialUsage": self.commercial_usage.value,
                     "creditNotation": self.credit_notation.value, "allowRedistribution": self.allow_redistribution,
                     "modification": self.modification.value,
                     "allowExcessivelyViolentUsage": self.allow_excessively_violent_usage,
                     "allowExcessivelySexualUsage": self.allow_excessively_sexual_usage,
                     "allowPoliticalOrReligiousUsage": self.allow_political_or_religious_usage,
                     "allowAntisocialOrHateUsage": self.allow_antisocial_or_hate_usage}
        for key, value in (("version", self.version), ("copyrightInformation", self.copyright_information),
                           ("contactInformation", self.contact_information),
                           ("otherLicenseUrl", self.other_license_url)):
            if value:
                out[key] = value
        if self.references:
            out["references"] = list(self.references)
        return out


@dataclass(frozen=True)
class VrmConfig(Checked):
    eye_height_m: Annotated[float, at.Ge(1.0), at.Le(2.5)] = 1.60  # eye midpoint above the ground (stature ~1.71 m)
    look_outer_deg: Angle = 40.0  # eye rotation limits of the lookAt range maps
    look_inner_deg: Angle = 35.0
    look_up_deg: Angle = 25.0
    look_down_deg: Angle = 35.0


# Body bone -> (VRM parent bone, x, y as fractions of stature H). x is the subject's left (+x); the right
# side mirrors it. Heights after Drillis & Contini (shoulder 0.818 H, hip joint 0.530 H, knee 0.285 H,
# ankle 0.039 H; shoulder width 0.259 H, upper arm 0.186 H, forearm 0.146 H); spine/chest split the torso.
SEGMENTS: dict[str, tuple[str | None, float, float]] = {
    "hips": (None, 0.0, 0.530),
    "spine": ("hips", 0.0, 0.600),
    "chest": ("spine", 0.0, 0.700),
    "upperChest": ("chest", 0.0, 0.770),
    "leftShoulder": ("upperChest", 0.020, 0.800),
    "leftUpperArm": ("leftShoulder", 0.1295, 0.818),
    "leftLowerArm": ("leftUpperArm", 0.1295 + 0.186, 0.818),
    "leftHand": ("leftLowerArm", 0.1295 + 0.186 + 0.146, 0.818),
    "leftUpperLeg": ("hips", 0.055, 0.500),
    "leftLowerLeg": ("leftUpperLeg", 0.055, 0.285),
    "leftFoot": ("leftLowerLeg", 0.055, 0.039),
}
EYE_HEIGHT_OVER_STATURE = 0.936
# VRM humanoid bone -> the rig joint that is that bone
RIG_BONES: dict[str, Joint] = {"neck": Joint.NECK, "head": Joint.HEAD, "jaw": Joint.JAW,
                               "leftEye": Joint.LEFT_EYE, "rightEye": Joint.RIGHT_EYE}
REQUIRED_BONES = ("hips", "spine", "head", "leftUpperLeg", "leftLowerLeg", "leftFoot", "rightUpperLeg",
                  "rightLowerLeg", "rightFoot", "leftUpperArm", "leftLowerArm", "leftHand", "rightUpperArm",
                  "rightLowerArm", "rightHand")


_ARMS = ("Shoulder", "UpperArm", "LowerArm", "Hand")
_TORSO = ("upperChest", "chest", "spine")  # from the top


def body_layout(stature: float, neck_y: float) -> dict[str, tuple[str | None, np.ndarray]]:
    """Body bone -> (parent bone, T-pose position [3] in metres, model space, feet on y = 0), parents first.
    :data:`SEGMENTS` scaled by ``stature``; the torso and arms are kept below the rig's neck joint (at
    height ``neck_y``) whatever the rig's neck length: upperChest, chest, spine at least 5, 10, 15 cm
    below it, the arms 3 cm."""
    out: dict[str, tuple[str | None, np.ndarray]] = {}
    for bone, (parent, fx, fy) in _body_segments().items():
        y = fy * stature
        if bone.endswith(_ARMS):
            y = min(y, neck_y - 0.03)
        elif bone in _TORSO:
            y = min(y, neck_y - 0.05 * (1 + _TORSO.index(bone)))
        out[bone] = (parent, np.array([fx * stature, y, 0.0]))
    return out


def _body_segments() -> dict[str, tuple[str | None, float, float]]:
    out = dict(SEGMENTS)
    for bone, (parent, x, y) in SEGMENTS.items():
        if bone.startswith("left"):
            out["right" + bone[4:]] = (parent.replace("left", "right", 1) if parent else parent, -x, y)
    return out


# ------------------------------------------------------------------------------------------ reading the rig
def node_parents(doc: dict) -> list[int]:
    """Parent index of every node (-1 for a root)."""
    parents = [-1] * len(doc.get("nodes", []))
    for i, node in enumerate(doc.get("nodes", [])):
        for c in node.get("children", []):
            parents[c] = i
    return parents


def _rig_joints(doc: dict) -> dict[Joint, int]:
    by_name: dict[str, list[int]] = {}
    for i, node in enumerate(doc.get("nodes", [])):
        by_name.setdefault(node.get("name", ""), []).append(i)
    missing = [str(j) for j in Joint if j not in by_name]
    if missing:
        raise InputError(f"the GLB has no joint node named {missing} (it needs {[str(j) for j in Joint]})", fix=_FIX)
    repeated = [str(j) for j in Joint if len(by_name[j]) > 1]
    if repeated:
        raise InputError(f"joint names {repeated} name more than one node", fix=_FIX)
    joints = {j: by_name[j][0] for j in Joint}
    parents = node_parents(doc)
    for j, want in ((Joint.NECK, Joint.ROOT), (Joint.HEAD, Joint.NECK), (Joint.JAW, Joint.HEAD),
                    (Joint.LEFT_EYE, Joint.HEAD), (Joint.RIGHT_EYE, Joint.HEAD)):
        if parents[joints[j]] != joints[want]:
            raise InputError(f"joint '{j}' is not a child of '{want}'", fix=_FIX)
    if parents[joints[Joint.ROOT]] != -1:
        raise InputError("joint 'root' is not a root node of the scene", fix=_FIX)
    taken = sorted(set(by_name) & (set(_body_segments()) | {MOUNT}))
    if taken:
        raise InputError(f"the GLB already has nodes named {taken}, the names of the VRM body bones", fix=_FIX)
    return joints


def morph_targets(doc: dict) -> dict[int, dict[str, int]]:
    """Mesh node index -> {target name: target index} from ``meshes[*].extras.targetNames``."""
    out: dict[int, dict[str, int]] = {}
    for i, node in enumerate(doc.get("nodes", [])):
        if "mesh" not in node:
            continue
        names = doc["meshes"][node["mesh"]].get("extras", {}).get("targetNames")
        if names:
            out[i] = {str(n): k for k, n in enumerate(names)}
    return out


# ------------------------------------------------------------------------------------------ building
def _binds(targets: dict[int, dict[str, int]], shapes: tuple[tuple[str, float], ...]) -> list[dict]:
    return [{"node": node, "index": names[str(shape)], "weight": float(weight)}
            for shape, weight in shapes for node, names in sorted(targets.items()) if str(shape) in names]


def _expression(binds: list[dict], override_blink: str = "none") -> dict:
    out: dict = {"isBinary": False, "overrideBlink": override_blink, "overrideLookAt": "none",
                 "overrideMouth": "none"}
    if binds:  # the schema wants at least one bind when the list is present
        out["morphTargetBinds"] = binds
    return out


def vrm_expressions(doc: dict) -> dict:
    """``VRMC_vrm.expressions``: the 18 presets and the 52 ARKit shapes as custom expressions."""
    targets = morph_targets(doc)
    head_nodes = [i for i, n in enumerate(doc["nodes"]) if n.get("name") == HEAD_MESH and i in targets]
    if not head_nodes:
        raise InputError(f"no mesh node named '{HEAD_MESH}' with morph target names (mesh.extras.targetNames)",
                         fix=_FIX)
    missing = [n for n in ARKIT_NAMES if n not in targets[head_nodes[0]]]
    if missing:
        raise InputError(f"'{HEAD_MESH}' lacks {len(missing)} of the 52 ARKit targets: {missing[:6]}", fix=_FIX)
    preset = {str(name): _expression(_binds(targets, e.binds), e.override_blink.value)
              for name, e in PRESET_EXPRESSIONS.items()}
    custom = {name: _expression(_binds(targets, ((name, 1.0),))) for name in ARKIT_NAMES}
    return {"preset": preset, "custom": custom}


def _default_scene(doc: dict, root: int) -> dict:
    scenes, index = doc.get("scenes", []), doc.get("scene", 0)
    if not 0 <= index < len(scenes) or root not in scenes[index].get("nodes", []):
        raise InputError("joint 'root' is not a root node of the default scene", fix=_FIX)
    return scenes[index]


def _add_node(doc: dict, node: dict) -> int:
    doc["nodes"].append(node)
    return len(doc["nodes"]) - 1


def vrm_from_rigged_glb(glb: bytes, meta: VrmMeta, config: VrmConfig = VrmConfig()) -> bytes:
    """The rigged head GLB -> a VRM 1.0 GLB (same buffers; nodes and the extension added)."""
    source = read_glb(glb)
    doc = copy.deepcopy(source.document)
    if EXTENSION in doc.get("extensions", {}):
        raise InputError("the GLB already carries a VRMC_vrm extension", fix="convert the rigged GLB, not a VRM")
    joints = _rig_joints(doc)
    meta_json = meta.to_json()  # VrmMeta checked its fields when it was built
    expressions = vrm_expressions(doc)
    scene = _default_scene(doc, joints[Joint.ROOT])
    world = world_matrices(doc)  # [N, 4, 4] rest world matrices
    pos = {j: world[i][:3, 3] for j, i in joints.items()}
    eyes = (pos[Joint.LEFT_EYE] + pos[Joint.RIGHT_EYE]) / 2
    lift = np.array([-pos[Joint.NECK][0], config.eye_height_m - eyes[1], -pos[Joint.NECK][2]])
    stature = config.eye_height_m / EYE_HEIGHT_OVER_STATURE
    neck_y = pos[Joint.NECK][1] + lift[1]
    if neck_y < 0.75 * stature:
        raise InputError(f"the neck joint lies {config.eye_height_m - neck_y:.2f} m below the eyes; a head rig "
                         "has it within a few tens of centimetres", fix=_FIX)

    layout = body_layout(stature, neck_y)
    bones: dict[str, int] = {}
    for bone, (parent, at_) in layout.items():  # parents come first
        local = at_ - (layout[parent][1] if parent else 0.0)
        bones[bone] = _add_node(doc, {"name": bone, "translation": [float(v) for v in local]})
        if parent:
            doc["nodes"][bones[parent]].setdefault("children", []).append(bones[bone])
    mount = _add_node(doc, {"name": MOUNT, "translation": [float(v) for v in lift - layout["upperChest"][1]],
                            "children": [joints[Joint.ROOT]]})
    doc["nodes"][bones["upperChest"]].setdefault("children", []).append(mount)
    scene["nodes"] = [n for n in scene["nodes"] if n != joints[Joint.ROOT]] + [bones["hips"]]

    human = {bone: {"node": index} for bone, index in bones.items()}
    human.update({bone: {"node": joints[j]} for bone, j in RIG_BONES.items()})
    head_inv = np.linalg.inv(world[joints[Joint.HEAD]])
    offset = (head_inv @ np.append(eyes, 1.0))[:3]

    def range_map(deg: float) -> dict:
        return {"inputMaxValue": float(deg), "outputScale": float(deg)}

    doc.setdefault("extensions", {})[EXTENSION] = {
        "specVersion": "1.0", "meta": meta_json, "humanoid": {"humanBones": human}, "expressions": expressions,
        "lookAt": {"type": "bone", "offsetFromHeadBone": [float(v) for v in offset],
                   "rangeMapHorizontalInner": range_map(config.look_inner_deg),
                   "rangeMapHorizontalOuter": range_map(config.look_outer_deg),
                   "rangeMapVerticalDown": range_map(config.look_down_deg),
                   "rangeMapVerticalUp": range_map(config.look_up_deg)}}
    used = doc.setdefault("extensionsUsed", [])
    if EXTENSION not in used:
        used.append(EXTENSION)
    return pack_glb(doc, source.binary)
