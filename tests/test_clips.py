"""Animation clips: the keyframe format sampled at hand-computed times, dense frames round-trip, MediaPipe
recordings, every malformed file refused naming the file and key, built-in clips, clips against a rig."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import SHARED_DATA  # the ../shared/data locator every real-data test uses

from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT, arkit_index
from headforge.representations.rig.clips import (
    Clip,
    Interpolation,
    builtin_clip_names,
    check_clip_for_rig,
    read_clip,
    resample,
    sample_keys,
    write_clip,
)
from headforge.representations.rig.head_rig import JOINTS, Joint

JAW, HEAD = arkit_index("jawOpen"), JOINTS.index(Joint.HEAD)


def clip_file(tmp_path, doc, name="clip.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def keyframes(keys, interpolation="linear", fps=4, **extra):
    return {"format": "headforge.clip", "version": 1, "fps": fps, "interpolation": interpolation, "keys": keys,
            **extra}


KEYS = [{"t": 0.5, "expression": {"jawOpen": 0.2}},
        {"t": 1.5, "expression": {"jawOpen": 1.0}, "pose": {"head": [0, 90, 0]}},
        {"t": 2.0}]  # jawOpen left out: 0 at t = 2


@pytest.mark.parametrize("interpolation", ["linear", "smooth"])
def test_keyframes_sampled_at_hand_computed_times(tmp_path, interpolation):
    clip = read_clip(clip_file(tmp_path, keyframes(KEYS, interpolation)))
    assert clip.num_frames == 9 and clip.fps == 4 and clip.name == "clip"  # t = 0, 0.25, ..., 2.0
    jaw, yaw = clip.weights[:, JAW], clip.rotations[:, HEAD, 1]
    ease = (lambda u: u) if interpolation == "linear" else (lambda u: (1 - math.cos(math.pi * u)) / 2)
    # before the first key its values hold; t = 1.0 is half way from 0.5 to 1.5; t = 1.75 half way to t = 2
    expected_jaw = [0.2, 0.2, 0.2, 0.2 + 0.8 * ease(0.25), 0.2 + 0.8 * ease(0.5), 0.2 + 0.8 * ease(0.75), 1.0,
                    1.0 - ease(0.5), 0.0]
    torch.testing.assert_close(jaw, torch.tensor(expected_jaw, dtype=torch.float64), rtol=0, atol=1e-12)
    expected_yaw = [0, 0, 0, ease(0.25) * 90, ease(0.5) * 90, ease(0.75) * 90, 90, 90 * (1 - ease(0.5)), 0]
    torch.testing.assert_close(yaw, torch.deg2rad(torch.tensor(expected_yaw, dtype=torch.float64)), rtol=0,
                               atol=1e-12)
    others = torch.ones(NUM_ARKIT, dtype=torch.bool)
    others[JAW] = False
    assert not clip.weights[:, others].any() and not clip.rotations[:, :HEAD].any()


def test_sample_keys_matches_a_per_sample_loop():
    g = torch.Generator().manual_seed(3)
    times = torch.cumsum(torch.rand(6, generator=g, dtype=torch.float64) + 0.1, 0)
    values = torch.rand(6, 4, generator=g, dtype=torch.float64)
    at = torch.linspace(0, float(times[-1]) + 0.5, 37, dtype=torch.float64)
    for mode in Interpolation:
        fast = sample_keys(times, values, at, mode)
        for n, t in enumerate(at.tolist()):
            if t <= times[0]:
                want = values[0]
            elif t >= times[-1]:
                want = values[-1]
            else:
                k = max(i for i in range(6) if times[i] <= t)
                u = (t - times[k]) / (times[k + 1] - times[k])
                s = u if mode is Interpolation.LINEAR else (1 - math.cos(math.pi * u)) / 2
                want = values[k] + (values[k + 1] - values[k]) * s
            torch.testing.assert_close(fast[n], want, rtol=0, atol=1e-12)


def test_dense_frames_round_trip_exactly(tmp_path):
    g = torch.Generator().manual_seed(1)
    rotations = (torch.rand(5, len(JOINTS), 3, generator=g, dtype=torch.float64) - 0.5)
    rotations[:, 0] = 0
    clip = Clip("mine", 24.0, torch.rand(5, NUM_ARKIT, generator=g, dtype=torch.float64), rotations, "test")
    back = read_clip(write_clip(clip, tmp_path / "frames.json"))
    assert back.name == "mine" and back.fps == 24.0 and back.source == str(tmp_path / "frames.json")
    assert torch.equal(back.weights, clip.weights) and torch.equal(back.rotations, clip.rotations)
    keyed = read_clip("builtin:talk")  # a keyframe clip, written dense and read back
    again = read_clip(write_clip(keyed, tmp_path / "talk.json"))
    assert torch.equal(again.weights, keyed.weights) and torch.equal(again.rotations, keyed.rotations)


def test_resample_spans_the_clip():
    clip = read_clip("builtin:head_turn")  # 4 s at 30 fps
    five = resample(clip, 5)
    assert five.num_frames == 5 and five.duration == pytest.approx(clip.duration) and five.fps == pytest.approx(1.0)
    for n, t in enumerate([0, 1, 2, 3, 4]):  # the seconds fall on the clip's frames 0, 30, 60, 90, 120
        torch.testing.assert_close(five.rotations[n], clip.rotations[30 * t], rtol=0, atol=1e-12)
    mid = resample(clip, 3 * 40 + 2)  # sample t = k * 4 / 121: between frames
    k = 7
    t = k * clip.duration / 121
    i, u = int(t * 30), t * 30 - int(t * 30)
    want = clip.rotations[i] * (1 - u) + clip.rotations[i + 1] * u
    torch.testing.assert_close(mid.rotations[k], want, rtol=0, atol=1e-12)
    assert torch.equal(resample(clip, 1).rotations, clip.rotations[:1])


def test_mediapipe_recording(tmp_path):
    def frame(jaw, blink):
        return [{"index": 0, "categoryName": "_neutral", "score": 0.9, "displayName": ""},
                {"index": 9, "categoryName": "eyeBlinkLeft", "score": blink, "displayName": ""},
                {"index": 25, "categoryName": "jawOpen", "score": jaw, "displayName": ""}]

    clip = read_clip(clip_file(tmp_path, [frame(0.1, 0.0), frame(0.6, 0.95)], "rec.json"))
    assert clip.num_frames == 2 and clip.fps == 30.0 and clip.name == "rec"
    assert clip.weights[1, JAW] == 0.6 and clip.weights[1, arkit_index("eyeBlinkLeft")] == 0.95
    assert float(clip.weights.sum()) == pytest.approx(0.1 + 0.6 + 0.95)  # _neutral dropped, the rest 0
    assert not clip.rotations.any()
    snake = [[{"category_name": "jawOpen", "score": 0.3}]]
    clip = read_clip(clip_file(tmp_path, {"fps": 25, "frames": snake}, "rec2.json"))
    assert clip.fps == 25 and clip.weights[0, JAW] == 0.3


def test_mediapipe_names_are_arkit_names():
    """The 51 names MediaPipe's blendshape model reports besides _neutral (its documented list; no tongueOut)."""
    mediapipe = ["browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
                 "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
                 "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
                 "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
                 "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
                 "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
                 "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
                 "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
                 "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
                 "noseSneerLeft", "noseSneerRight"]
    assert len(set(mediapipe)) == 51 and set(mediapipe) | {"tongueOut"} == set(ARKIT_NAMES)


GOOD_KEY = {"t": 0.0}
BAD_FILES = {  # name -> (document, words the message must hold)
    "not json": ('{"format": "headforge.clip",', ["not JSON"]),
    "unknown expression": (keyframes([{"t": 0, "expression": {"jawOpn": 0.5}}]),
                           ["keys[0].expression.jawOpn", "did you mean 'jawOpen'", "eyeBlinkLeft", "tongueOut"]),
    "unknown joint": (keyframes([{"t": 0, "pose": {"skull": [0, 1, 0]}}]), ["keys[0].pose.skull", "neck, head"]),
    "root joint": (keyframes([{"t": 0, "pose": {"root": [0, 1, 0]}}]), ["keys[0].pose.root", "stays at rest"]),
    "half turn": (keyframes([{"t": 0, "pose": {"head": [0, 181, 0]}}]), ["keys[0].pose.head", "half a turn"]),
    "short rotation": (keyframes([{"t": 0, "pose": {"head": [0, 1]}}]), ["keys[0].pose.head", "[x, y, z]"]),
    "weight above 1": (keyframes([GOOD_KEY, {"t": 1, "expression": {"jawOpen": 1.5}}]),
                       ["keys[1].expression.jawOpen", "outside [0, 1]"]),
    "negative weight": (keyframes([{"t": 0, "expression": {"eyeBlinkLeft": -0.1}}]), ["eyeBlinkLeft", "[0, 1]"]),
    "nan weight": ('{"format": "headforge.clip", "version": 1, "fps": 30, "keys": [{"t": 0, "expression": '
                   '{"jawOpen": NaN}}]}', ["keys[0].expression.jawOpen", "not finite"]),
    "infinite time": ('{"format": "headforge.clip", "version": 1, "fps": 30, "keys": [{"t": Infinity}]}',
                      ["keys[0].t", "not finite"]),
    "boolean weight": (keyframes([{"t": 0, "expression": {"jawOpen": True}}]), ["jawOpen", "must be a number"]),
    "unsorted": (keyframes([GOOD_KEY, {"t": 2}, {"t": 1}]), ["keys[2].t", "sorted"]),
    "duplicate time": (keyframes([GOOD_KEY, {"t": 1}, {"t": 1}]), ["keys[2].t", "repeats"]),
    "negative time": (keyframes([{"t": -1}]), ["keys[0].t", "negative"]),
    "empty keys": (keyframes([]), ["keys", "empty"]),
    "misspelt field": (keyframes([{"t": 0, "expresion": {}}]), ["keys[0].expresion", "t, expression, pose"]),
    "wrong format": ({**keyframes([GOOD_KEY]), "format": "headforge.clips"}, ["format", "headforge.clip_frames"]),
    "no format": ({"fps": 30, "keys": [GOOD_KEY]}, ["format", "is missing"]),
    "wrong version": ({**keyframes([GOOD_KEY]), "version": 2}, ["version", "2"]),
    "no fps": ({"format": "headforge.clip", "version": 1, "keys": [GOOD_KEY]}, ["fps", "is missing"]),
    "zero fps": (keyframes([GOOD_KEY], fps=0), ["fps", "outside"]),
    "bad interpolation": (keyframes([GOOD_KEY], interpolation="cubic"), ["interpolation", "linear, smooth"]),
    "too long": (keyframes([GOOD_KEY, {"t": 1e7}]), ["keys[1].t", "frames"]),
    "a number": ("3", ["JSON object or list"]),
    "empty recording": ([], ["frames", "empty"]),
    "frame without face": ([[{"categoryName": "jawOpen", "score": 0.1}], []], ["frames[1]", "no face"]),
    "score above 1": ([[{"categoryName": "jawOpen", "score": 1.2}]], ["frames[0][0].score", "outside [0, 1]"]),
    "unknown category": ([[{"categoryName": "mouthOpen", "score": 0.1}]], ["frames[0][0].categoryName",
                                                                           "mouthOpen", "jawOpen"]),
    "repeated category": ([[{"categoryName": "jawOpen", "score": 0.1}, {"categoryName": "jawOpen", "score": 0.2}]],
                          ["frames[0][1].categoryName", "twice"]),
    "dense frame out of order": ({"format": "headforge.clip_frames", "version": 1, "fps": 30,
                                  "frames": [{"frame": 1, "t": 0}]}, ["frames[0].frame", "expected 0"]),
    "dense frame time": ({"format": "headforge.clip_frames", "version": 1, "fps": 10,
                          "frames": [{"frame": 0, "t": 0}, {"frame": 1, "t": 0.2}]}, ["frames[1].t", "0.1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_clip_files_are_refused(tmp_path, case):
    doc, words = BAD_FILES[case]
    path = clip_file(tmp_path, doc)
    with pytest.raises(InputError) as info:
        read_clip(path)
    text = str(info.value)
    assert str(path) in text, text
    for word in words:
        assert word in text, f"{word!r} not in:\n{text}"
    assert info.value.fix


def test_missing_and_unknown_clips(tmp_path):
    with pytest.raises(InputError, match="does not exist|not found|no such"):
        read_clip(tmp_path / "missing.json")
    with pytest.raises(InputError, match="built-in clips: blink, head_turn, smile, talk"):
        read_clip("builtin:wink")
    with pytest.raises(InputError, match="empty"):
        read_clip(clip_file(tmp_path, ""))


EXPECTED_CHANNELS = {  # built-in clip -> (ARKit names it moves, whether it turns joints)
    "blink": ({"eyeBlinkLeft", "eyeBlinkRight"}, False),
    "smile": ({"mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"}, False),
    "talk": ({"jawOpen", "mouthFunnel", "mouthPucker", "mouthClose"}, True),
    "head_turn": (set(), True),
}


@pytest.fixture(scope="module")
def builtin_rig():
    from headforge.assets.builtin_rig import load_builtin_rig

    return load_builtin_rig()


def test_builtin_clips_load_and_fit_the_builtin_rig(builtin_rig):
    assert builtin_clip_names() == tuple(sorted(EXPECTED_CHANNELS))
    for name, (names, turns) in EXPECTED_CHANNELS.items():
        clip = read_clip(f"builtin:{name}")
        assert clip.source == f"builtin:{name}" and clip.name == name and 2 <= clip.duration <= 5
        moved = {n for n, m in zip(ARKIT_NAMES, (clip.weights > 0).any(0).tolist(), strict=True) if m}
        assert names <= moved, (name, moved)
        assert bool(clip.rotations.abs().max() > 0) == turns, name
        assert not clip.weights[0].any() and not clip.weights[-1].any()  # starts and ends neutral
        check_clip_for_rig(clip, builtin_rig)
    yaw = read_clip("builtin:head_turn").rotations[:, HEAD, 1]
    assert math.degrees(float(yaw.max())) == pytest.approx(20) and math.degrees(float(yaw.min())) == pytest.approx(-20)


def _without(rig, names):
    present = rig.expression_present.clone()
    basis = rig.expression_basis.clone()
    for n in names:
        present[arkit_index(n)] = False
        basis[arkit_index(n)] = 0
    return dataclasses.replace(rig, expression_basis=basis, expression_present=present, source="test rig")


def _clip_using(*names):
    w = torch.zeros(3, NUM_ARKIT, dtype=torch.float64)
    for n in names:
        w[1, arkit_index(n)] = 0.5
    return Clip("uses", 30.0, w, torch.zeros(3, len(JOINTS), 3, dtype=torch.float64), "x.json")


def test_a_clip_using_shapes_the_rig_lacks_is_refused(builtin_rig):
    rig = _without(builtin_rig, ["tongueOut", "cheekPuff"])
    with pytest.raises(InputError) as info:
        check_clip_for_rig(_clip_using("jawOpen", "tongueOut", "cheekPuff"), rig)
    text = str(info.value)
    assert "lacks: cheekPuff, tongueOut." in text and "The rig has: eyeBlinkLeft" in text and "x.json" in text
    assert "The rig has:" in text and "tongueOut" not in text.split("The rig has:")[1]
    check_clip_for_rig(_clip_using("jawOpen"), rig)  # shapes it has: fine


def test_ict_facekit_lacks_tongue_out():
    from headforge.representations.rig.ict_facekit import PACKED_NPZ, load_ict_facekit

    folder = SHARED_DATA / "ict_facekit"
    if not (folder / PACKED_NPZ).is_file():
        pytest.skip(f"ICT-FaceKit packed copy not found at {folder}")
    rig = load_ict_facekit(folder)
    check_clip_for_rig(read_clip("builtin:talk"), rig)
    with pytest.raises(InputError, match="lacks: tongueOut"):
        check_clip_for_rig(_clip_using("tongueOut"), rig)
