"""The MediaPipe-478 embedding generated for ICT-FaceKit: the exact closest-point maths against brute force, the
shipped npz on the shared ICT rig (all points on face/eye triangles, eye corners on the right sides), and a
topology mismatch that gives no embedding and a warning. The generation itself (MediaPipe on 15 renders: 20 s
to 90 s on this 2-core machine, by load) is not a test: it runs through tools/generate_landmark_embedding.py,
and rerunning it reproduced the shipped triangles, barycentrics and reliable flags exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA  # the ../shared/data locator every real-data test uses

from headforge.representations.rig.head_rig import LandmarkSet, Region
from headforge.representations.rig.ict_facekit import (
    MEDIAPIPE_NPZ,
    PACKED_NPZ,
    load_ict_facekit,
    read_mediapipe_embedding,
    topology_sha256,
)
from headforge.stages.face_landmarks import (
    LEFT_EYE_INNER,
    LEFT_EYE_OUTER,
    LEFT_IRIS_CENTER,
    RIGHT_EYE_INNER,
    RIGHT_EYE_OUTER,
    RIGHT_IRIS_CENTER,
)
from headforge.stages.landmark_embedding import closest_points_on_triangles, snap_faces, snap_to_surface

ICT = SHARED_DATA / "ict_facekit"


def brute_force_distance(points: torch.Tensor, tri: torch.Tensor, n: int = 300) -> torch.Tensor:
    """[P, 3], [3, 3] -> [P]: distance to the nearest point of a dense barycentric grid on the triangle (float64)."""
    i, j = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = (i + j) <= n
    a, b = i[keep].double() / n, j[keep].double() / n
    samples = torch.stack([1 - a - b, a, b], -1) @ tri  # [S, 3]
    return torch.cdist(points, samples).min(1).values


def grid_slack(tri: torch.Tensor, n: int) -> float:  # how far a grid of step 1/n can miss a surface point
    return float((tri - tri.roll(1, 0)).norm(dim=-1).max()) / n


def test_closest_point_on_triangle_against_brute_force():
    g = torch.Generator().manual_seed(3)
    tris = torch.randn(6, 3, 3, generator=g, dtype=torch.float64)
    tris[5, 2] = (tris[5, 0] + tris[5, 1]) / 2  # degenerate: a segment
    points = torch.randn(40, 3, generator=g, dtype=torch.float64) * 1.5
    q, bary = closest_points_on_triangles(points, tris)  # [P, T, 3]
    assert torch.allclose(bary.sum(-1), torch.ones(40, 6, dtype=torch.float64))
    assert bool((bary >= -1e-12).all())
    assert torch.allclose(torch.einsum("ptk,tkc->ptc", bary, tris), q, atol=1e-12)  # the point is its barycentrics
    d = (q - points[:, None]).norm(dim=-1)  # [P, T]
    for t in range(6):
        d_bf = brute_force_distance(points, tris[t])
        assert bool((d[:, t] <= d_bf + 1e-12).all())  # never farther than any sampled surface point
        assert bool((d_bf - d[:, t] <= grid_slack(tris[t], 300)).all())
    assert {int(k) for k in (bary > 1e-9).sum(-1).flatten()} == {1, 2, 3}  # vertex, edge and interior cases


def test_snap_to_surface_picks_the_nearest_triangle():
    g = torch.Generator().manual_seed(4)
    vertices = torch.randn(30, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 30, (25, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    points = torch.randn(10, 3, generator=g, dtype=torch.float64)
    tri, bary, dist = snap_to_surface(points, vertices, faces, chunk=3)
    d_bf = torch.stack([brute_force_distance(points, vertices[f], 200) for f in faces], 1)  # [P, F]
    slack = max(grid_slack(vertices[f], 200) for f in faces)
    assert bool((dist <= d_bf.min(1).values + 1e-12).all())
    assert bool((d_bf.min(1).values - dist <= slack).all())
    on = (bary[..., None] * vertices[faces[tri]]).sum(1)  # [P, 3]
    assert torch.allclose((on - points).norm(dim=-1), dist, atol=1e-12)


@pytest.fixture(scope="module")
def rig():
    if not (ICT / PACKED_NPZ).is_file():
        pytest.skip(f"ICT-FaceKit packed copy not found at {ICT} (the ../shared/data folder beside the repo)")
    return load_ict_facekit(ICT)


def test_shipped_embedding_on_the_ict_rig(rig):
    emb = rig.landmarks[LandmarkSet.MEDIAPIPE_478]
    assert emb.triangles.shape == (478,)
    assert bool(snap_faces(rig)[emb.triangles].all())  # every point on a face-skin or eyeball triangle
    points = (rig.template[rig.faces[emb.triangles]] * emb.barycentrics[..., None]).sum(1)  # [478, 3]
    x = points[:, 0]
    assert float(x[RIGHT_EYE_OUTER]) < float(x[RIGHT_EYE_INNER]) < 0  # +x is the subject's left
    assert 0 < float(x[LEFT_EYE_INNER]) < float(x[LEFT_EYE_OUTER])
    eyes = rig.region_mask(Region.EYES)
    centres = rig.faces[emb.triangles[[RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER]]]  # the iris centres on the eyeballs
    assert bool(eyes[centres].all())
    assert float(x[RIGHT_IRIS_CENTER]) < 0 < float(x[LEFT_IRIS_CENTER])
    with np.load(MEDIAPIPE_NPZ, allow_pickle=False) as z:
        meta = json.loads(str(z["metadata"]))
        reliable = z["reliable"]
        assert "MIT" in meta["attribution"] and meta["command"].startswith("python tools/generate_landmark_embedding")
        assert meta["summary"]["reliable"] == int(reliable.sum()) >= 0.95 * 478
        assert float(z["surface_mm"][reliable].max()) <= meta["config"]["max_surface_mm"]


def test_topology_mismatch_gives_no_embedding(rig):
    faces = rig.faces.numpy()
    assert read_mediapipe_embedding(MEDIAPIPE_NPZ, faces) is not None
    swapped = faces.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # same counts, another topology
    assert topology_sha256(swapped) != topology_sha256(faces)
    with pytest.warns(UserWarning, match="another topology"):
        assert read_mediapipe_embedding(MEDIAPIPE_NPZ, swapped) is None
    with pytest.warns(UserWarning, match="another topology"):
        assert read_mediapipe_embedding(MEDIAPIPE_NPZ, faces[:-1]) is None



def test_missing_file_gives_no_embedding(rig, tmp_path):
    with pytest.warns(UserWarning, match="is missing"):
        assert read_mediapipe_embedding(tmp_path / "absent.npz", rig.faces.numpy()) is None
