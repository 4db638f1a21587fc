"""rig_fit.json (pipeline/rig_fit_file.py) round trip and refusals; the overlay sheet (viz/fit_overlay.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headforge.errors import InputError
from headforge.pipeline.rig_fit_file import OFFSETS_FILE, RigFitRecord, read_rig_fit, write_rig_fit
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.deform import RigPose, axis_angle_to_matrix
from headforge.representations.rig.head_rig import JOINTS, LandmarkSet
from headforge.stages.rig_params import RigParams, Similarity
from headforge.viz.fit_overlay import DETECTED, FITTED, OverlayView, edge_map, overlay_panel, overlay_sheet

D = torch.float64


def record(frames: int = 2, offsets: bool = True, V: int = 40, K: int = 5) -> RigFitRecord:
    g = torch.Generator().manual_seed(3)
    sim = Similarity(torch.tensor(1.1, dtype=D), axis_angle_to_matrix(torch.randn(3, generator=g, dtype=D)),
                     torch.randn(3, generator=g, dtype=D))
    params = RigParams(sim, torch.randn(K, generator=g, dtype=D), torch.rand(frames, NUM_ARKIT, generator=g, dtype=D),
                       RigPose(torch.randn(frames, len(JOINTS), 3, generator=g, dtype=D) * 0.1,
                               torch.zeros(frames, 3, dtype=D)),
                       torch.randn(V, 3, generator=g, dtype=D) * 1e-3 if offsets else None)
    return RigFitRecord("builtin", "test rig", "MIT", V, params, tuple(range(0, 5 * frames, 5)),
                        tuple(("cam_0", "cam_1") for _ in range(frames)), LandmarkSet.MEDIAPIPE_478,
                        {"landmark_median_px": 1.0})


@pytest.mark.parametrize("offsets", [True, False])
def test_round_trip(tmp_path, offsets):
    rec = record(offsets=offsets)
    write_rig_fit(rec, tmp_path)
    back = read_rig_fit(tmp_path / "rig_fit.json")
    p, q = rec.params, back.params
    assert torch.allclose(p.similarity.rotation, q.similarity.rotation) and float(q.similarity.scale) == 1.1
    assert torch.equal(p.identity, q.identity) and torch.equal(p.expression, q.expression)
    assert torch.equal(p.pose.rotations, q.pose.rotations)
    assert back.frames == (0, 5) and back.views == rec.views and back.rig_spec == "builtin"
    if offsets:
        assert torch.allclose(q.offsets, p.offsets.float().double())
    else:
        assert q.offsets is None and not (tmp_path / OFFSETS_FILE).exists()


def _edit(tmp_path, change):
    write_rig_fit(record(), tmp_path)
    path = tmp_path / "rig_fit.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(format="something"), "format"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d["frames"][0]["expression"].pop("jawOpen"), "missing ['jawOpen']"),
    (lambda d: d["frames"][1]["expression"].update(jawWide=0.5), "unknown ['jawWide']"),
    (lambda d: d["frames"][0]["pose"].pop("jaw"), "frames[0].pose"),
    (lambda d: d["similarity"].update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "not a rotation"),
    (lambda d: d["similarity"].update(scale=-1), "positive"),
    (lambda d: d.update(identity=[0.0, 1.0]), "identity: has shape [2], expected [5]"),
    (lambda d: d["frames"][0]["expression"].update(jawOpen="x"), "frames[0].expression"),
    (lambda d: d.update(frames=[]), "non-empty"),
    (lambda d: d.update(landmark_set="dlib5"), "landmark_set"),
    (lambda d: d.pop("rig"), "rig"),
])
def test_bad_files_are_refused_naming_the_key(tmp_path, change, words):
    path = _edit(tmp_path, change)
    with pytest.raises(InputError, match="rig_fit.json") as err:
        read_rig_fit(path)
    assert words in str(err.value)


def test_non_finite_and_missing_offsets(tmp_path):
    path = _edit(tmp_path, lambda d: None)
    text = path.read_text().replace(str(json.loads(path.read_text())["identity"][0]), "NaN", 1)
    path.write_text(text)
    with pytest.raises(InputError, match="non-finite"):
        read_rig_fit(path)
    path = _edit(tmp_path, lambda d: None)
    np.save(tmp_path / OFFSETS_FILE, np.zeros((7, 3), np.float32))
    with pytest.raises(InputError, match=r"offsets: has shape \[7, 3\], expected \[40, 3\]"):
        read_rig_fit(path)
    (tmp_path / OFFSETS_FILE).unlink()
    with pytest.raises(InputError, match=OFFSETS_FILE):
        read_rig_fit(path)


def test_overlay_draws_landmarks_edges_and_errors():
    H = W = 64
    tri = torch.full((H, W), -1, dtype=torch.int64)
    tri[16:48, 16:32], tri[16:48, 32:48] = 0, 1
    edges = edge_map(tri)
    assert bool(edges[20, 32]) and bool(edges[16, 20]) and not bool(edges[30, 24]) and not bool(edges[5, 5])
    err = torch.full((H, W), float("nan"))
    err[20:40, 20:40] = 0.2
    v = OverlayView("cam_0", torch.full((H, W, 3), 0.5), tri, torch.tensor([[10.0, 10.0], [float("nan"), 0.0]]),
                    torch.tensor([[50.0, 50.0], [30.0, 30.0]]), err, 1.5)
    panel = overlay_panel(v)
    assert np.allclose(panel[10, 10] * 255, DETECTED, atol=2) and np.allclose(panel[50, 50] * 255, FITTED, atol=2)
    assert np.allclose(panel[30, 24], 0.5, atol=0.01)  # inside a triangle: untouched
    assert not np.allclose(panel[20, 32], 0.5, atol=0.05)  # on the edge between the two triangles
    sheet = overlay_sheet("title", [v, v, v])
    assert sheet.ndim == 3 and sheet.shape[1] >= 2 * 3 * W and 0 <= sheet.min() and sheet.max() <= 1
    with pytest.raises(ValueError):
        overlay_sheet("title", [])


def test_arkit_names_are_the_expression_keys(tmp_path):
    write_rig_fit(record(frames=1), tmp_path)
    doc = json.loads((tmp_path / "rig_fit.json").read_text())
    assert list(doc["frames"][0]["expression"]) == list(ARKIT_NAMES)
    assert list(doc["frames"][0]["pose"]) == [str(j) for j in JOINTS]
