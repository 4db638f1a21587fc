"""Measure and repair what makes a mesh unfit for engines: non-manifold edges, duplicate faces, pieces, holes.

Plain functions of numpy arrays (vertices [V, 3], faces [F, 3] int64, counter-clockwise seen from outside).

- :func:`edge_table`: every face corner's directed edge (a -> b), and per undirected edge how many faces use it.
- :func:`duplicate_face_mask`: faces whose vertex set repeats another face's. Two faces with the same three
  vertices are either copies (same winding: keep one) or back-to-back (opposite windings: a zero-volume sheet
  that decimation leaves where a part was thinner than the grid: both go, the hole closes later).
- :func:`non_manifold_face_mask`: faces on an edge that more than two faces use, or that two faces use in the
  same direction (inconsistent winding). Removing them opens holes that :func:`mesh_cleanup.fill_small_holes`
  closes again.
- :func:`uv_charts`: UV charts = faces connected through edges whose two corners share UV indices too.
- :func:`mesh_report` -> :class:`MeshReport`.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from headforge.representations.mesh import TexturedMesh
from headforge.stages.mesh_types import MeshReport


def edge_table(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[F, 3] -> (directed key [3F], undirected id [3F], faces per undirected edge [E], directed repeats [3F]).

    Corner k of face f gives the edge faces[f, k] -> faces[f, (k + 1) % 3] at row 3 f + k. ``directed repeats``
    counts how many corners carry the same directed edge (1 in a consistently wound manifold).
    """
    a = faces.reshape(-1).astype(np.int64)
    b = np.roll(faces, -1, axis=1).reshape(-1).astype(np.int64)
    n = int(faces.max()) + 1 if len(faces) else 1
    directed = a * n + b
    undirected = np.minimum(a, b) * n + np.maximum(a, b)
    _, uid, ucount = np.unique(undirected, return_inverse=True, return_counts=True)
    _, did, dcount = np.unique(directed, return_inverse=True, return_counts=True)
    return directed, uid.reshape(-1), ucount, dcount[did.reshape(-1)]


def duplicate_face_mask(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """[F, 3] -> (faces to drop [F] bool, number of faces that repeat an earlier face's vertex set).

    Same-winding copies keep their first face; a vertex set used with both windings loses all its faces.
    """
    if len(faces) == 0:
        return np.zeros(0, dtype=bool), 0
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    # the winding as a parity: a face is an even permutation of its sorted key or an odd one
    first_is_min = np.argmin(faces, axis=1)
    rolled = np.take_along_axis(faces, (first_is_min[:, None] + np.arange(3)) % 3, axis=1)  # min vertex first
    even = rolled[:, 1] < rolled[:, 2]  # [F] winding parity
    n_even = np.bincount(inverse, weights=even, minlength=len(counts))
    back_to_back = (n_even > 0) & (n_even < counts)  # [U]
    first = np.zeros(len(faces), dtype=bool)
    first[np.unique(inverse, return_index=True)[1]] = True
    drop = (~first) | back_to_back[inverse]
    return drop, int(len(faces) - len(counts))


def non_manifold_face_mask(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """[F, 3] -> (faces touching a non-manifold edge [F] bool, number of such undirected edges)."""
    if len(faces) == 0:
        return np.zeros(0, dtype=bool), 0
    _, uid, ucount, drep = edge_table(faces)
    bad_edge = ucount > 2  # [E]
    bad_edge[uid[drep > 1]] = True  # an edge used twice in one direction
    return bad_edge[uid].reshape(-1, 3).any(1), int(bad_edge.sum())


def face_components(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """[F, 3] -> [F] component label of each face (faces sharing a vertex are connected)."""
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(num_vertices, num_vertices))
    _, vertex_label = connected_components(graph, directed=False)
    return vertex_label[faces[:, 0]]


def uv_charts(faces: np.ndarray, faces_uv: np.ndarray) -> np.ndarray:
    """[F, 3], [F, 3] -> [F] chart label: faces joined through an edge whose two UV corners are shared too."""
    pairs = np.stack([faces, faces_uv], -1).reshape(-1, 2)  # [3F] (vertex, uv) per corner
    _, corner = np.unique(pairs, axis=0, return_inverse=True)
    corner = corner.reshape(-1, 3)  # [F, 3] index of the (vertex, uv) pair
    _, uid, _, _ = edge_table(corner)  # edges between (vertex, uv) corners
    face_of = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(uid, kind="stable")
    su, sf = uid[order], face_of[order]
    same = su[1:] == su[:-1]
    graph = coo_matrix((np.ones(int(same.sum()), dtype=np.int8), (sf[:-1][same], sf[1:][same])),
                       shape=(len(faces), len(faces)))
    return connected_components(graph, directed=False)[1]


def mesh_report(mesh: TexturedMesh) -> MeshReport:
    """Count what an engine would trip over (UV charts and the vertex ratio when the mesh has UVs)."""
    faces_uv = None if mesh.faces_uv is None else mesh.faces_uv.numpy()
    return report_arrays(mesh.vertices.numpy(), mesh.faces.numpy(), faces_uv)


def report_arrays(vertices: np.ndarray, faces: np.ndarray, faces_uv: np.ndarray | None = None) -> MeshReport:
    """:func:`mesh_report` of arrays: vertices [V, 3], faces [F, 3], faces_uv [F, 3] or None."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return MeshReport(len(vertices), 0, 0, 0, 0, 0, 0, 1.0)
    _, uid, ucount, drep = edge_table(faces)
    bad = ucount > 2
    bad[uid[drep > 1]] = True
    _, dup = duplicate_face_mask(faces)
    used = np.unique(faces)
    comps = len(np.unique(face_components(faces, len(vertices))))
    charts, ratio = 0, 1.0
    if faces_uv is not None:
        faces_uv = np.asarray(faces_uv, dtype=np.int64)
        charts = len(np.unique(uv_charts(faces, faces_uv)))
        corners = np.unique(np.stack([faces, faces_uv], -1).reshape(-1, 2), axis=0)
        ratio = len(corners) / len(used)
    return MeshReport(vertices=int(len(used)), faces=int(len(faces)), non_manifold_edges=int(bad.sum()),
                      duplicate_faces=dup, components=comps, boundary_edges=int((ucount == 1).sum()),
                      charts=charts, vertex_ratio=float(ratio),
                      euler_characteristic=int(len(used) - len(ucount) + len(faces)))
