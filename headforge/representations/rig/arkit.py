"""The 52 ARKit blendshape names, in Apple's documented order, and how ICT-FaceKit's names map onto them.

Facts, not code, from two public sources:
- Apple's ``ARFaceAnchor.BlendShapeLocation`` documentation groups the 52 locations as left eye, right eye,
  mouth and jaw, eyebrows, cheeks, nose, tongue; that order (the one Unreal's ``EARFaceBlendShape`` and
  Unity's ARKit face capture also follow) is :data:`ARKIT_NAMES`. The names are the Swift case names
  (``eyeBlinkLeft``) that glTF/FBX exporters, Unity, Unreal and Blender add-ons use; ARKit's own string raw
  values spell the sides ``eyeBlink_L`` / ``eyeBlink_R``.
- "Left" is the subject's own left (Apple: a closed *right* eye appears on the left of the captured image and
  is reported as the right-eye shape). In the headforge head frame the subject's left is +x.

ICT-FaceKit (MIT, USC ICT) names its expression shapes with ARKit's raw values, so the map is a suffix
rule plus two merges, checked against the kit's data in ``tests/test_rig_ict.py``:
- ``<name>_L`` / ``<name>_R`` -> ``<name>Left`` / ``<name>Right`` (the kit's ``_L`` shapes move +x vertices,
  the subject's left, as ARKit's do); ``jawLeft``, ``jawRight``, ``mouthLeft``, ``mouthRight`` name a
  direction, not a side, and keep their names (:data:`DIRECTIONAL`);
- ``browInnerUp`` and ``cheekPuff`` are single ARKit shapes that the kit splits into halves: the ARKit shape
  is the sum of the kit's ``_L`` and ``_R`` deltas (:data:`ICT_MERGED`);
- ``tongueOut`` has no ICT shape: a rig built from the kit holds an all-zero row for it, flagged missing
  (``HeadRig.expression_present``), never a made-up shape (:data:`ICT_MISSING`);
- the kit's extra shapes ``cheekRaiser_L/_R`` (in its packed data, not in its expression list) and
  ``PupilDilate_L/_R`` have no ARKit name and are not used (:data:`ICT_UNUSED`).
"""

from __future__ import annotations

from enum import StrEnum


class ArkitShape(StrEnum):
    """The 52 ARKit blendshapes; iteration order is Apple's documented order."""

    # left eye
    EYE_BLINK_LEFT = "eyeBlinkLeft"
    EYE_LOOK_DOWN_LEFT = "eyeLookDownLeft"
    EYE_LOOK_IN_LEFT = "eyeLookInLeft"
    EYE_LOOK_OUT_LEFT = "eyeLookOutLeft"
    EYE_LOOK_UP_LEFT = "eyeLookUpLeft"
    EYE_SQUINT_LEFT = "eyeSquintLeft"
    EYE_WIDE_LEFT = "eyeWideLeft"
    # right eye
    EYE_BLINK_RIGHT = "eyeBlinkRight"
    EYE_LOOK_DOWN_RIGHT = "eyeLookDownRight"
    EYE_LOOK_IN_RIGHT = "eyeLookInRight"
    EYE_LOOK_OUT_RIGHT = "eyeLookOutRight"
    EYE_LOOK_UP_RIGHT = "eyeLookUpRight"
    EYE_SQUINT_RIGHT = "eyeSquintRight"
    EYE_WIDE_RIGHT = "eyeWideRight"
    # mouth and jaw
    JAW_FORWARD = "jawForward"
    JAW_LEFT = "jawLeft"
    JAW_RIGHT = "jawRight"
    JAW_OPEN = "jawOpen"
    MOUTH_CLOSE = "mouthClose"
    MOUTH_FUNNEL = "mouthFunnel"
    MOUTH_PUCKER = "mouthPucker"
    MOUTH_LEFT = "mouthLeft"
    MOUTH_RIGHT = "mouthRight"
    MOUTH_SMILE_LEFT = "mouthSmileLeft"
    MOUTH_SMILE_RIGHT = "mouthSmileRight"
    MOUTH_FROWN_LEFT = "mouthFrownLeft"
    MOUTH_FROWN_RIGHT = "mouthFrownRight"
    MOUTH_DIMPLE_LEFT = "mouthDimpleLeft"
    MOUTH_DIMPLE_RIGHT = "mouthDimpleRight"
    MOUTH_STRETCH_LEFT = "mouthStretchLeft"
    MOUTH_STRETCH_RIGHT = "mouthStretchRight"
    MOUTH_ROLL_LOWER = "mouthRollLower"
    MOUTH_ROLL_UPPER = "mouthRollUpper"
    MOUTH_SHRUG_LOWER = "mouthShrugLower"
    MOUTH_SHRUG_UPPER = "mouthShrugUpper"
    MOUTH_PRESS_LEFT = "mouthPressLeft"
    MOUTH_PRESS_RIGHT = "mouthPressRight"
    MOUTH_LOWER_DOWN_LEFT = "mouthLowerDownLeft"
    MOUTH_LOWER_DOWN_RIGHT = "mouthLowerDownRight"
    MOUTH_UPPER_UP_LEFT = "mouthUpperUpLeft"
    MOUTH_UPPER_UP_RIGHT = "mouthUpperUpRight"
    # eyebrows
    BROW_DOWN_LEFT = "browDownLeft"
    BROW_DOWN_RIGHT = "browDownRight"
    BROW_INNER_UP = "browInnerUp"
    BROW_OUTER_UP_LEFT = "browOuterUpLeft"
    BROW_OUTER_UP_RIGHT = "browOuterUpRight"
    # cheeks
    CHEEK_PUFF = "cheekPuff"
    CHEEK_SQUINT_LEFT = "cheekSquintLeft"
    CHEEK_SQUINT_RIGHT = "cheekSquintRight"
    # nose
    NOSE_SNEER_LEFT = "noseSneerLeft"
    NOSE_SNEER_RIGHT = "noseSneerRight"
    # tongue
    TONGUE_OUT = "tongueOut"


ARKIT_NAMES: tuple[str, ...] = tuple(str(s) for s in ArkitShape)
NUM_ARKIT = len(ARKIT_NAMES)  # 52

# Shapes whose Left/Right is a direction of motion, not a side of the face (one shape each, same name in ICT).
DIRECTIONAL: tuple[ArkitShape, ...] = (ArkitShape.JAW_LEFT, ArkitShape.JAW_RIGHT, ArkitShape.MOUTH_LEFT,
                                       ArkitShape.MOUTH_RIGHT)
# ARKit shapes that ICT-FaceKit splits into a left and a right half: ARKit shape = _L delta + _R delta.
ICT_MERGED: tuple[ArkitShape, ...] = (ArkitShape.BROW_INNER_UP, ArkitShape.CHEEK_PUFF)
# ARKit shapes ICT-FaceKit does not have (an all-zero row flagged missing in the rig).
ICT_MISSING: tuple[ArkitShape, ...] = (ArkitShape.TONGUE_OUT,)
# ICT-FaceKit shapes without an ARKit name (not used).
ICT_UNUSED: tuple[str, ...] = ("cheekRaiser_L", "cheekRaiser_R", "PupilDilate_L", "PupilDilate_R")


def ict_sources(shape: ArkitShape) -> tuple[str, ...]:
    """The ICT-FaceKit expression names whose deltas sum to the ARKit ``shape`` (empty when it has none)."""
    if shape in ICT_MISSING:
        return ()
    name = str(shape)
    if shape in ICT_MERGED:
        return (f"{name}_L", f"{name}_R")
    if shape in DIRECTIONAL:
        return (name,)
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if name.endswith(side):
            return (name[: -len(side)] + suffix,)
    return (name,)


# ARKit shape -> the ICT-FaceKit names summed into it, for all 52 shapes in ARKIT_NAMES order.
ICT_TO_ARKIT: dict[ArkitShape, tuple[str, ...]] = {shape: ict_sources(shape) for shape in ArkitShape}


def ict_expression_names() -> tuple[str, ...]:
    """Every ICT-FaceKit expression name the map uses (53: the kit's list in its vertex_indices.json)."""
    return tuple(sorted({n for names in ICT_TO_ARKIT.values() for n in names}))


def arkit_index(name: str | ArkitShape) -> int:
    """Row of an ARKit name in a rig's expression basis (accepts ``eyeBlinkLeft`` or ``eyeBlink_L``)."""
    text = str(name)
    for side, suffix in (("Left", "_L"), ("Right", "_R")):
        if text.endswith(suffix):
            text = text[: -len(suffix)] + side
    try:
        return ARKIT_NAMES.index(str(ArkitShape(text)))
    except ValueError:
        raise KeyError(f"{name!r} is not one of the 52 ARKit blendshape names") from None
