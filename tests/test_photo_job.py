"""`headforge photo` end to end on scikit-image's portrait with a small preset (every output there, the GLB valid,
the landmarks where the face is), and the refusals: a photo without a face, an undecodable file, an external
generator that fails (nothing final-looking left, a previous output kept)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from gltf_validator import extension_semantic_errors, require_validator, validate_glb
from photo_fixtures import require_mediapipe
from PIL import Image

from headforge.cli import main
from headforge.errors import HeadforgeError
from headforge.io.glb import load_glb
from headforge.pipeline.photo_job import PhotoJobConfig, run_photo_job
from headforge.representations.rig.arkit import ARKIT_NAMES

SMALL = ["--resolution", "48", "--steps", "12", "--face-points", "400"]


@pytest.fixture(scope="module")
def astronaut_run(tmp_path_factory):
    require_mediapipe()
    out = tmp_path_factory.mktemp("photo") / "astronaut"
    assert main(["photo", "--out", str(out), *SMALL]) == 0
    return out


def test_photo_writes_every_output(astronaut_run):
    out = astronaut_run
    m = json.loads((out / "metrics.json").read_text())
    for name in m["outputs"] + ["report.html", "metrics.json"]:
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    assert set(m["seconds"]) >= {"align", "fit", "generate", "train", "export", "total"}
    # the fit sits on the face: MediaPipe's landmarks and the rig's agree to a few pixels of the 512 px portrait
    assert m["landmark_median_photo_px"] < 5.0
    assert m["num_views"] == 7  # FaceLift's six views and the photo
    assert np.isfinite(m["views_psnr"]) and m["views_psnr"] > 15
    with Image.open(out / "photo_sheet.png") as im:
        assert im.width > 4 * im.height // 3  # rows of views, not one tile


def test_photo_glb_is_rigged_and_valid(astronaut_run):
    require_validator()
    doc = load_glb(astronaut_run / "head.glb").document
    head = next(m for m in doc["meshes"] if m.get("extras", {}).get("targetNames"))
    assert head["extras"]["targetNames"] == list(ARKIT_NAMES)
    assert {a["name"] for a in doc["animations"]} == {"blink", "smile", "talk", "head_turn"}
    report = validate_glb(astronaut_run / "head.glb")
    assert report.num_errors == len(extension_semantic_errors(report))  # only the splat semantics it predates


def test_photo_without_a_face_is_refused_and_leaves_nothing(tmp_path):
    require_mediapipe()
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((256, 256, 3), 200, np.uint8)).save(blank)
    out = tmp_path / "out"
    with pytest.raises(HeadforgeError, match="(?i)no face"):
        run_photo_job(PhotoJobConfig(photo=str(blank), out=out, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wall.png"]


def test_undecodable_photo_is_refused_naming_it(tmp_path, capsys):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    assert main(["photo", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "photo.jpg" in err and "Fix:" in err
    assert not (tmp_path / "out").exists()


def test_failing_external_generator_keeps_the_previous_output(tmp_path, astronaut_run):
    require_mediapipe()
    import shutil

    out = tmp_path / "kept"
    shutil.copytree(astronaut_run, out)
    before = (out / "metrics.json").read_bytes()
    script = tmp_path / "gen.py"
    script.write_text("import sys\nprint('no model here', file=sys.stderr)\nsys.exit(3)\n")
    cmd = f"external:{sys.executable} {script} {{input}} {{output}}"
    with pytest.raises(HeadforgeError, match="no model here"):
        run_photo_job(PhotoJobConfig(out=out, generator=cmd, resolution=48, steps=12, face_points=400,
                                     overwrite=True, progress=False))
    assert (out / "metrics.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.py", "kept"]
