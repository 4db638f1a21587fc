"""The 18 VRM 1.0 preset expressions as combinations of the 52 ARKit shapes (a documented table).

VRM 1.0 (vrm-c/vrm-specification, ``VRMC_vrm-1.0/expressions.md``) names the presets and says
nothing about how a face should move for them ("There are no specific specifications for facial
deformation"); the choices below are ours, each with its reason. Weights are in [0, 1] (VRM 1.0
morph-target bind weights, 1 = the full shape). Sides follow both conventions' shared meaning:
ARKit's ``Left`` is the subject's own left (``headforge.representations.rig.arkit``) and VRM's
``blinkLeft`` closes the model's left eyelid; the model faces +z, so its left is +x in both.

Emotions follow the Facial Action Coding System prototypes (Ekman & Friesen), translated to the
ARKit shapes that carry each action unit; visemes follow the vowel's jaw opening and lip shape.
Gaze (``look*``) presets bind the ``eyeLook*`` shapes: the VRM file's ``lookAt`` is of type
``bone`` (the rig has real eye joints, rotated rigidly by the application), so these presets are
never driven by the look-at system; they exist so a user can still pose the gaze, lids included,
by expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from headforge.representations.rig.arkit import ArkitShape as A


class VrmPreset(StrEnum):
    """VRM 1.0's preset expression names (``expressions.preset``), in the specification's order."""

    HAPPY = "happy"
    ANGRY = "angry"
    SAD = "sad"
    RELAXED = "relaxed"
    SURPRISED = "surprised"
    AA = "aa"
    IH = "ih"
    OU = "ou"
    EE = "ee"
    OH = "oh"
    BLINK = "blink"
    BLINK_LEFT = "blinkLeft"
    BLINK_RIGHT = "blinkRight"
    LOOK_UP = "lookUp"
    LOOK_DOWN = "lookDown"
    LOOK_LEFT = "lookLeft"
    LOOK_RIGHT = "lookRight"
    NEUTRAL = "neutral"


class OverrideType(StrEnum):
    """How an active expression treats the procedural blink / look-at / mouth ones."""

    NONE = "none"
    BLOCK = "block"
    BLEND = "blend"


@dataclass(frozen=True)
class PresetExpression:
    binds: tuple[tuple[A, float], ...]  # (ARKit shape, weight in [0, 1]); empty: the expression moves nothing
    why: str  # one sentence: the reason for this combination
    override_blink: OverrideType = OverrideType.NONE


def _both(left: A, right: A, weight: float) -> tuple[tuple[A, float], ...]:
    return ((left, weight), (right, weight))


_EYES_CLOSING = OverrideType.BLEND  # emotions that narrow the eyes fade a procedural blink so lids do not overshoot

PRESET_EXPRESSIONS: dict[VrmPreset, PresetExpression] = {
    VrmPreset.HAPPY: PresetExpression(
        _both(A.MOUTH_SMILE_LEFT, A.MOUTH_SMILE_RIGHT, 1.0) + _both(A.CHEEK_SQUINT_LEFT, A.CHEEK_SQUINT_RIGHT, 0.6)
        + _both(A.EYE_SQUINT_LEFT, A.EYE_SQUINT_RIGHT, 0.3),
        "a Duchenne smile: lip-corner pull (AU12) with the cheek raiser (AU6) that narrows the eyes.",
        _EYES_CLOSING),
    VrmPreset.ANGRY: PresetExpression(
        _both(A.BROW_DOWN_LEFT, A.BROW_DOWN_RIGHT, 1.0) + _both(A.EYE_SQUINT_LEFT, A.EYE_SQUINT_RIGHT, 0.5)
        + _both(A.MOUTH_PRESS_LEFT, A.MOUTH_PRESS_RIGHT, 0.6) + _both(A.NOSE_SNEER_LEFT, A.NOSE_SNEER_RIGHT, 0.3),
        "FACS anger: brows lowered and drawn together (AU4), lids tightened (AU7), lips pressed (AU24).",
        _EYES_CLOSING),
    VrmPreset.SAD: PresetExpression(
        ((A.BROW_INNER_UP, 1.0),) + _both(A.BROW_DOWN_LEFT, A.BROW_DOWN_RIGHT, 0.3)
        + _both(A.MOUTH_FROWN_LEFT, A.MOUTH_FROWN_RIGHT, 0.8) + _both(A.EYE_BLINK_LEFT, A.EYE_BLINK_RIGHT, 0.2),
        "FACS sadness: inner brows raised (AU1) against a slight frown (AU4), lip corners down (AU15), "
        "lids drooping a little.", _EYES_CLOSING),
    VrmPreset.RELAXED: PresetExpression(
        _both(A.MOUTH_SMILE_LEFT, A.MOUTH_SMILE_RIGHT, 0.5) + _both(A.EYE_BLINK_LEFT, A.EYE_BLINK_RIGHT, 0.3)
        + _both(A.CHEEK_SQUINT_LEFT, A.CHEEK_SQUINT_RIGHT, 0.2),
        "contentment (VRM 0.x 'fun'): a soft closed-mouth smile with heavy, relaxed lids.", _EYES_CLOSING),
    VrmPreset.SURPRISED: PresetExpression(
        ((A.BROW_INNER_UP, 1.0),) + _both(A.BROW_OUTER_UP_LEFT, A.BROW_OUTER_UP_RIGHT, 1.0)
        + _both(A.EYE_WIDE_LEFT, A.EYE_WIDE_RIGHT, 1.0) + ((A.JAW_OPEN, 0.5),),
        "FACS surprise: whole brow raised (AU1+2), upper lids raised (AU5), jaw dropped (AU26)."),
    VrmPreset.AA: PresetExpression(
        ((A.JAW_OPEN, 0.7),),
        "'a' (as in father) is the open vowel: the jaw alone drops, lips relaxed."),
    VrmPreset.IH: PresetExpression(
        ((A.JAW_OPEN, 0.15),) + _both(A.MOUTH_STRETCH_LEFT, A.MOUTH_STRETCH_RIGHT, 0.6),
        "'i' (as in see) is close and unrounded: lips spread sideways, jaw nearly closed."),
    VrmPreset.OU: PresetExpression(
        ((A.JAW_OPEN, 0.1), (A.MOUTH_PUCKER, 0.9), (A.MOUTH_FUNNEL, 0.3)),
        "'u' (as in food) is close and rounded: lips pushed forward into a small opening."),
    VrmPreset.EE: PresetExpression(
        ((A.JAW_OPEN, 0.35),) + _both(A.MOUTH_STRETCH_LEFT, A.MOUTH_STRETCH_RIGHT, 0.3),
        "'e' (as in bed) is mid-open and unrounded: jaw half open, lips slightly spread."),
    VrmPreset.OH: PresetExpression(
        ((A.JAW_OPEN, 0.4), (A.MOUTH_FUNNEL, 0.8)),
        "'o' (as in go) is mid-open and rounded: the lips form a funnel around an open jaw."),
    VrmPreset.BLINK: PresetExpression(
        _both(A.EYE_BLINK_LEFT, A.EYE_BLINK_RIGHT, 1.0), "both lids closed: ARKit's two blink shapes in full."),
    VrmPreset.BLINK_LEFT: PresetExpression(
        ((A.EYE_BLINK_LEFT, 1.0),), "the model's left lid: ARKit's left is the subject's own left, as VRM's."),
    VrmPreset.BLINK_RIGHT: PresetExpression(
        ((A.EYE_BLINK_RIGHT, 1.0),), "the model's right lid, likewise."),
    VrmPreset.LOOK_UP: PresetExpression(
        _both(A.EYE_LOOK_UP_LEFT, A.EYE_LOOK_UP_RIGHT, 1.0), "both eyes up."),
    VrmPreset.LOOK_DOWN: PresetExpression(
        _both(A.EYE_LOOK_DOWN_LEFT, A.EYE_LOOK_DOWN_RIGHT, 1.0), "both eyes down."),
    VrmPreset.LOOK_LEFT: PresetExpression(
        ((A.EYE_LOOK_OUT_LEFT, 1.0), (A.EYE_LOOK_IN_RIGHT, 1.0)),
        "gaze to the model's left (+x, VRM's positive yaw): the left eye looks out, the right eye in."),
    VrmPreset.LOOK_RIGHT: PresetExpression(
        ((A.EYE_LOOK_IN_LEFT, 1.0), (A.EYE_LOOK_OUT_RIGHT, 1.0)),
        "gaze to the model's right: the left eye looks in, the right eye out."),
    VrmPreset.NEUTRAL: PresetExpression(
        (), "the rest face is neutral (all 52 weights 0), so 'neutral' binds nothing (kept for VRM 0.x tools)."),
}
