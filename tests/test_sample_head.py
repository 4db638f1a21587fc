"""The built-in sample head: a closed, plausible, labelled, landmarked, textured head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

import headforge.assets.sample_head as sample_head_module
from headforge.assets.sample_head import LABELS, VERSION, SampleHead, generate_sample_head, load_sample_head
from headforge.geometry.head_frame import measure_head


@pytest.fixture(scope="module")
def head() -> SampleHead:
    return generate_sample_head()


def test_closed_outward_single_component(head):
    m = head.mesh
    tm = trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward normals
    assert len(tm.split(only_watertight=False)) == 1
    assert 20_000 <= m.num_faces <= 40_000


def test_proportions_in_head_frame(head):
    v = head.mesh.vertices
    m = measure_head(v)
    assert float(m.centre.abs().max()) < 1e-6  # already in the canonical frame
    assert 0.14 < m.cranium_width < 0.17  # ear to ear skull width ~15 cm
    face = head.mesh.label_mask("face")
    chin_y = float(v[face, 1].min())
    assert 0.21 < float(v[:, 1].max()) - chin_y < 0.25  # chin to crown ~23 cm
    nose_tip = v[head.landmark_vertex_ids[30]]
    beside = (v[:, 0].abs() - 0.03).abs() < 0.004
    beside &= (v[:, 1] - nose_tip[1]).abs() < 0.004
    cheek_z = float(v[beside & (v[:, 2] > 0), 2].max())
    assert 0.015 < float(nose_tip[2]) - cheek_z < 0.035  # nose protrudes ~2 cm beyond the cheeks beside it
    ears = v[head.mesh.label_mask("ears")]
    eye_y = float(v[head.landmark_vertex_ids[36:48], 1].mean())
    nose_y = float(v[head.landmark_vertex_ids[33], 1])
    assert nose_y - 0.01 < float(ears[:, 1].mean()) < eye_y + 0.01  # ears between eye and nose height


def test_labels(head):
    m = head.mesh
    for name in ("face", "scalp", "ears", "neck", "eyes", "lips", "nose"):
        assert int(m.label_mask(name).sum()) > 20, name
    assert m.label_names == LABELS
    assert float(m.vertices[m.label_mask("face"), 2].mean()) > 0.03  # face on the +z side
    assert float(m.vertices[m.label_mask("scalp"), 1].mean()) > 0.0
    assert float(m.vertices[m.label_mask("neck"), 1].mean()) < -0.08


def test_landmarks_ordered(head):
    ids = head.landmark_vertex_ids
    assert ids.shape == (68,) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < head.mesh.num_vertices
    p = head.mesh.vertices[ids]
    assert int(p[:, 2].argmax()) == 30  # nose tip is the most forward landmark
    assert float(p[0, 0]) < -0.05 and float(p[16, 0]) > 0.05  # jaw from the subject's right to left
    assert float(p[8, 1]) == float(p[:17, 1].min())  # chin is the lowest jaw point
    assert bool((p[17:22, 0] < 0).all()) and bool((p[22:27, 0] > 0).all())  # brows
    assert bool((p[36:42, 0] < 0).all()) and bool((p[42:48, 0] > 0).all())  # right eye -x, left eye +x
    assert float(p[36, 0]) < float(p[39, 0]) and float(p[42, 0]) < float(p[45, 0])  # outer/inner corners
    mouth_y, nose_y, eye_y = float(p[48:68, 1].mean()), float(p[31:36, 1].mean()), float(p[36:48, 1].mean())
    assert mouth_y < nose_y < eye_y < float(p[17:27, 1].mean())
    assert float(p[27, 1]) > float(p[28, 1]) > float(p[29, 1]) > float(p[30, 1])  # bridge runs down
    assert float(p[51, 1]) > float(p[62, 1]) > float(p[66, 1]) > float(p[57, 1])  # lips top to bottom


def test_uvs_and_texture(head):
    m = head.mesh
    assert m.has_texture and m.texture.shape == (1024, 1024, 3)
    assert float(m.uvs.min()) >= 0 and float(m.uvs.max()) <= 1
    tri = m.uvs[m.faces_uv]  # [F, 3, 2]
    span = (tri.max(1).values - tri.min(1).values).max(-1).values
    assert float(span.max()) < 0.05  # no triangle smeared across a seam
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert bool((area >= 0).all()) or bool((area <= 0).all())  # no folded triangles
    # visible detail: hair darker than skin, some texture variation
    tex = m.texture
    assert float(tex.std()) > 0.05
    assert float(tex[..., 0].min()) < 0.15 and float(tex.max()) > 0.8


def test_deterministic(head):
    again = generate_sample_head()
    assert torch.equal(again.mesh.vertices, head.mesh.vertices)
    assert torch.equal(again.mesh.faces, head.mesh.faces)
    assert torch.equal(again.mesh.uvs, head.mesh.uvs) and torch.equal(again.mesh.texture, head.mesh.texture)
    assert torch.equal(again.landmark_vertex_ids, head.landmark_vertex_ids)


def test_cache_round_trip(head, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADFORGE_CACHE", str(tmp_path))
    first = load_sample_head()
    assert [p.name for p in tmp_path.iterdir()] == [f"sample_head-{VERSION}.npz"]

    def no_regeneration(*args, **kwargs):
        raise AssertionError("the cached sample head was regenerated")

    monkeypatch.setattr(sample_head_module, "generate_sample_head", no_regeneration)
    cached = load_sample_head()
    for name in ("vertices", "faces", "uvs", "faces_uv", "vertex_labels"):
        assert torch.equal(getattr(cached.mesh, name), getattr(first.mesh, name)), name
    assert np.allclose(cached.mesh.texture.numpy(), first.mesh.texture.numpy(), atol=1e-6)
    assert cached.mesh.label_names == first.mesh.label_names
    assert torch.equal(cached.landmark_vertex_ids, head.landmark_vertex_ids)
