"""Blender (bpy 5.0.1, a real glTF client) imports the rigged head GLB and its VRM: shape keys, bones,
actions, the texture, and a front render in which opening the jaw changes the mouth and little else; and the same
head with quantized morph targets (KHR_mesh_quantization), whose shape keys match the float file's.

One bpy subprocess (tests/blender/check_glb.py) does everything and writes a JSON report; the tests
read it. The bpy venv is installed by tools/install_clients.sh into .cache/clients/blender; without
it these tests skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from export_fixtures import small_export_head, small_rigged_glb
from test_vrm import META

from headforge.io.glb import read_glb
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.clips import builtin_clip_names, read_clip
from headforge.representations.rig.head_rig import JOINTS
from headforge.stages.export_vrm import SEGMENTS, VrmConfig, vrm_from_rigged_glb
from headforge.stages.rig_export import RigGlbConfig, build_rigged_glb
from headforge.stages.rig_export_parts import QUANT_STEP

REPO = Path(__file__).resolve().parents[1]
BLENDER_PYTHON = REPO / ".cache" / "clients" / "blender" / "bin" / "python"
SCRIPT = Path(__file__).resolve().parent / "blender" / "check_glb.py"
INSTALL = "tools/install_clients.sh"
TIMEOUT_S = 240


def missing_reason() -> str | None:
    if not BLENDER_PYTHON.is_file():
        return f"the Blender (bpy) venv is not installed at {BLENDER_PYTHON.parent.parent} (run {INSTALL})"
    return None


def require_blender() -> None:
    """Skip (fail under CI=true) the calling test when bpy cannot run."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and Blender cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def rigged() -> bytes:
    return small_rigged_glb()


@pytest.fixture(scope="module")
def report(rigged, tmp_path_factory) -> dict:
    require_blender()
    folder = tmp_path_factory.mktemp("blender")
    glb, vrm, out = folder / "head.glb", folder / "head.vrm", folder / "report.json"
    quantized = folder / "quantized.glb"
    glb.write_bytes(rigged)
    vrm.write_bytes(vrm_from_rigged_glb(rigged, META))
    clips = [read_clip(f"builtin:{n}") for n in builtin_clip_names()]  # the same head as small_rigged_glb
    quantized.write_bytes(build_rigged_glb(small_export_head(offsets=True), clips, RigGlbConfig(quantize_targets=True)))
    done = subprocess.run([str(BLENDER_PYTHON), str(SCRIPT), "--glb", str(glb), "--vrm", str(vrm), "--out", str(out),
                           "--renders", str(folder / "renders"), "--quantized", str(quantized)],
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0 or not out.is_file():
        pytest.fail(f"the bpy script failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return json.loads(out.read_text())


def _head(scene: dict) -> dict:
    heads = [m for m in scene["meshes"].values() if m["mesh"] == "head_mesh"]
    assert len(heads) == 1, scene["meshes"]
    return heads[0]


def test_blender_sees_shape_keys_bones_actions_and_texture(report, rigged):
    doc = read_glb(rigged).document
    glb = report["glb"]
    assert glb["import"] == "FINISHED"
    assert _head(glb)["shape_keys"] == list(ARKIT_NAMES)
    for name, mesh in glb["meshes"].items():  # every other mesh with shape keys has the ARKit names too
        assert mesh["shape_keys"] in ([], list(ARKIT_NAMES)), name
    assert len(glb["armatures"]) == 1 and sorted(next(iter(glb["armatures"].values()))) == sorted(map(str, JOINTS))
    assert glb["actions"] == sorted(a["name"] for a in doc["animations"]) == sorted(builtin_clip_names())
    sizes = [i["size"] for i in glb["images"]]
    assert len(sizes) == len(doc["images"]) and all(w > 0 and h > 0 for w, h in sizes)


def test_each_action_keys_what_its_clip_animates(report, rigged):
    """Blender's F-curves carry the clips: per shape key the largest keyed weight equals the glTF animation's,
    and exactly the joints the animation turns have rotation keys that change."""
    g = read_glb(rigged)
    doc = g.document
    for animation in doc["animations"]:
        curves = report["glb"]["action_curves"][animation["name"]]
        weights, turned = None, set()
        for channel in animation["channels"]:
            sampler = animation["samplers"][channel["sampler"]]
            node = doc["nodes"][channel["target"]["node"]]
            if channel["target"]["path"] == "weights" and node["name"] == "head_mesh":
                weights = g.accessor(sampler["output"]).reshape(-1, len(ARKIT_NAMES)).max(0)
            elif channel["target"]["path"] == "rotation":
                turned.add(node["name"])
        assert weights is not None, animation["name"]
        got = [curves["shape_keys"].get(name, 0.0) for name in ARKIT_NAMES]
        assert got == pytest.approx(weights.tolist(), abs=1e-5), animation["name"]
        moving = {b for b, spread in curves["bone_rotation_range"].items() if spread > 1e-4}
        assert moving == turned, animation["name"]
    assert any(report["glb"]["action_curves"][c]["bone_rotation_range"] for c in report["glb"]["actions"])


def test_opening_the_jaw_changes_the_mouth_region(report):
    mouth = report["mouth"]
    assert mouth["engine"] == "CYCLES" and mouth["moved_vertices"] > 0
    inside, outside = mouth["changed_inside"], mouth["changed_outside"]
    assert inside > 0.02 * mouth["head_pixels"], mouth  # the jaw visibly moved
    assert inside >= 0.8 * (inside + outside), mouth  # ... and the change is around the mouth
    assert mouth["box_pixels"] < 0.6 * mouth["head_pixels"], mouth  # the box is a region, not the whole head
    # negative control: closing the left eye changes pixels too, but outside the mouth box
    c_in, c_out = mouth["control_changed_inside"], mouth["control_changed_outside"]
    assert c_out > 0.002 * mouth["head_pixels"] and c_in <= 0.2 * (c_in + c_out), mouth


def test_blender_reads_quantized_targets_like_float_ones(report):
    """KHR_mesh_quantization (normalized SHORT morph deltas, extensionsRequired): Blender's importer decodes them;
    each shape key's positions lie within half a quantisation step (+ float32) of the float file's."""
    q = report["quantized"]
    assert q["import"] == "FINISHED" and _head(q)["shape_keys"] == list(ARKIT_NAMES)
    assert q["vertices"] == q["reference_vertices"]
    diff = q["key_max_diff"]
    assert sorted(diff) == sorted([*ARKIT_NAMES, "Basis"])  # every key compared (the Basis is float in both)
    assert diff["Basis"] < 1e-7 and max(diff.values()) <= 0.5 * QUANT_STEP + 1e-7, diff
    assert max(diff.values()) > 1e-7  # lossy: really the quantized deltas, not a float copy


def test_the_vrm_opens_in_blender_as_gltf(report):
    vrm = report["vrm"]
    assert vrm["import"] == "FINISHED"  # no VRM add-on: Blender's glTF importer reads the .vrm as glTF
    assert _head(vrm)["shape_keys"] == list(ARKIT_NAMES)
    assert sorted(next(iter(vrm["armatures"].values()))) == sorted(map(str, JOINTS))
    body = set(SEGMENTS) | {b.replace("left", "right") for b in SEGMENTS}
    assert body <= set(vrm["empties"])  # the geometry-free body bones arrive as empties
    eye = VrmConfig().eye_height_m  # Blender is z up: the head hangs around eye height
    assert vrm["head_min"][2] < eye < vrm["head_max"][2] and vrm["head_min"][2] > 1.0


def test_missing_blender_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    import test_blender

    monkeypatch.setattr(test_blender, "BLENDER_PYTHON", tmp_path / "nowhere" / "bin" / "python")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        test_blender.require_blender()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        test_blender.require_blender()
