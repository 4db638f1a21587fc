"""UV atlas for a closed genus-0 head mesh: three charts without overlaps, seam at the back.

Charts: a *crown cap* (faces near the top), a *neck cap* (the flat bottom) and the *side* (the rest,
an annulus). The side is cut open along a shortest path down the back of the head (x ~ 0, z < 0),
so it becomes a disc. Each disc is flattened with Floater's mean-value (Tutte-style) embedding,
which never folds triangles when the boundary is convex: the side onto a rectangle (u = 0 at the
subject's right of the seam, through the face at u ~ 0.5, to u = 1 at the left of the seam; v = 1
at the crown edge), the caps onto circles. Vertices stay welded; UVs are per corner, so seam
vertices have one UV per chart side. Layout in the texture (OBJ convention, v up): side in
[0.01, 0.99] x [0.27, 0.99], crown cap in [0.01, 0.25]^2, neck cap in [0.27, 0.51] x [0.01, 0.25].
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.sparse.linalg import spsolve

SIDE, CROWN, NECK = 0, 1, 2
CHART_BOXES = {SIDE: (0.01, 0.27, 0.99, 0.99), CROWN: (0.01, 0.01, 0.25, 0.25), NECK: (0.27, 0.01, 0.51, 0.25)}


def _largest_face_component(F: np.ndarray, mask: np.ndarray) -> np.ndarray:  # [F] bool -> [F] bool
    idx = np.nonzero(mask)[0]
    if len(idx) == 0:
        raise RuntimeError("head UV: a cap chart is empty")
    sub = F[idx]
    nv = int(F.max()) + 1
    # faces connected through shared vertices
    rows = np.repeat(np.arange(len(idx)), 3)
    inc = sp.csr_matrix((np.ones(len(rows)), (rows, sub.reshape(-1))), shape=(len(idx), nv))
    _, comp = connected_components(inc @ inc.T, directed=False)
    keep = comp == np.bincount(comp).argmax()
    out = np.zeros(len(F), bool)
    out[idx[keep]] = True
    return out


def assign_charts(V: np.ndarray, F: np.ndarray, crown_depth: float = 0.035) -> np.ndarray:  # -> [F] int
    c = V[F].mean(1)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
    chart = np.full(len(F), SIDE)
    chart[_largest_face_component(F, c[:, 1] > V[:, 1].max() - crown_depth)] = CROWN
    chart[_largest_face_component(F, (c[:, 1] < V[:, 1].min() + 0.01) & (n[:, 1] < -0.7))] = NECK
    return chart


def _half_edges(F: np.ndarray):
    a = F.reshape(-1)  # half-edge h = 3 f + k goes F[f, k] -> F[f, (k + 1) % 3]
    b = F[:, [1, 2, 0]].reshape(-1)
    key = np.minimum(a, b) * (int(F.max()) + 1) + np.maximum(a, b)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    if len(ks) % 2 or not np.all(ks[0::2] == ks[1::2]) or np.any(ks[1:-1:2] == ks[2::2]):
        raise RuntimeError("head UV: the mesh is not closed and manifold")
    twin = np.empty(len(a), np.int64)
    twin[order[0::2]], twin[order[1::2]] = order[1::2], order[0::2]
    return a, b, key, twin


def back_seam(V: np.ndarray, F: np.ndarray, chart: np.ndarray) -> set[int]:
    """Edge keys of a shortest path on the side chart from the crown cap to the neck cap at the back."""
    a, b, key, twin = _half_edges(F)
    face = np.arange(len(a)) // 3
    side_edge = (chart[face] == SIDE) & (chart[face[twin]] == SIDE) & (a < b)
    ea, eb = a[side_edge], b[side_edge]
    mid = 0.5 * (V[ea] + V[eb])
    length = np.linalg.norm(V[ea] - V[eb], axis=1)
    w = length * (1.0 + (mid[:, 0] / 0.004) ** 2) + 1e-9
    w[mid[:, 2] > -0.01] = np.inf  # stay at the back
    ok = np.isfinite(w)
    g = sp.coo_matrix((w[ok], (ea[ok], eb[ok])), shape=(len(V), len(V))).tocsr()
    side_vertices = np.unique(F[chart == SIDE])
    top = np.intersect1d(np.unique(F[chart == CROWN]), side_vertices)
    bottom = np.intersect1d(np.unique(F[chart == NECK]), side_vertices)
    back_top, back_bottom = top[V[top, 2] < 0], bottom[V[bottom, 2] < 0]
    if len(back_top) == 0 or len(back_bottom) == 0:
        raise RuntimeError("head UV: the cap charts do not reach the back of the head")
    start = back_top[np.argmin(np.abs(V[back_top, 0]))]
    end = back_bottom[np.argmin(np.abs(V[back_bottom, 0]))]
    dist, pred = dijkstra(g, directed=False, indices=start, return_predecessors=True)
    if not np.isfinite(dist[end]):
        raise RuntimeError("head UV: no seam path down the back of the head")
    n_max = int(F.max()) + 1
    seam, v = set(), end
    while v != start:
        u = pred[v]
        seam.add(int(min(u, v)) * n_max + int(max(u, v)))
        v = u
    return seam


def _mean_value_solve(P: np.ndarray, tris: np.ndarray, fixed: np.ndarray, fixed_uv: np.ndarray) -> np.ndarray:
    """Floater mean-value embedding. P [n, 3], tris [m, 3] local ids, fixed ids [k] -> uv [n, 2]."""
    n = len(P)
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, l = tris[:, k], tris[:, (k + 1) % 3], tris[:, (k + 2) % 3]
        e1, e2 = P[j] - P[i], P[l] - P[i]
        n1, n2 = np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1)
        cos = np.clip(np.einsum("ij,ij->i", e1, e2) / np.maximum(n1 * n2, 1e-30), -1, 1)
        t = np.tan(np.arccos(cos) / 2)
        rows += [i, i]
        cols += [j, l]
        vals += [t / np.maximum(n1, 1e-12), t / np.maximum(n2, 1e-12)]
    W = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    L = sp.diags(np.asarray(W.sum(1)).ravel()) - W
    free = np.setdiff1d(np.arange(n), fixed)
    uv = np.zeros((n, 2))
    uv[fixed] = fixed_uv
    rhs = -(L[free][:, fixed] @ fixed_uv)
    A = L[free][:, free].tocsc()
    uv[free] = np.stack([spsolve(A, rhs[:, 0]), spsolve(A, rhs[:, 1])], 1)
    return uv


def _boundary_loop(tris: np.ndarray, he_open: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The single boundary cycle of a disc chart (local ids) and the local face of each loop edge."""
    src = tris.reshape(-1)[he_open]
    dst = tris[:, [1, 2, 0]].reshape(-1)[he_open]
    nxt = dict(zip(src.tolist(), dst.tolist(), strict=True))
    face_of = dict(zip(src.tolist(), (np.nonzero(he_open)[0] // 3).tolist(), strict=True))
    if len(nxt) != len(src):
        raise RuntimeError("head UV: a chart boundary is not a simple loop")
    loop = [int(src[0])]
    while True:
        v = nxt[loop[-1]]
        if v == loop[0]:
            break
        loop.append(v)
    if len(loop) != len(src):
        raise RuntimeError("head UV: a chart is not a disc (several boundary loops)")
    return loop, np.asarray([face_of[v] for v in loop])


def head_uv_atlas(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-corner UVs for a closed genus-0 head (y up, face +z). -> uvs [T, 2], faces_uv [F, 3]."""
    chart = assign_charts(V, F)
    seam = back_seam(V, F, chart)
    a, b, key, twin = _half_edges(F)
    face = np.arange(len(a)) // 3
    cut = (chart[face] != chart[face[twin]]) | np.isin(key, np.fromiter(seam, np.int64, len(seam)))
    # corners (f, k) joined across uncut edges: h = (f, k) -> (f, k+1) pairs with twin g = (b -> a)
    h = np.nonzero(~cut)[0]
    g = twin[h]
    nxt = lambda e: 3 * (e // 3) + (e % 3 + 1) % 3  # noqa: E731  corner at the head of half-edge e
    pairs = np.concatenate([np.stack([h, nxt(g)], 1), np.stack([nxt(h), g], 1)])
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(a), len(a)))
    _, split = connected_components(graph, directed=False)  # [3F] split-vertex id of each corner
    split_vertex = np.zeros(split.max() + 1, np.int64)
    split_vertex[split] = a
    uvs = np.zeros((len(split_vertex), 2))
    for c, (u0, v0, u1, v1) in CHART_BOXES.items():
        fc = np.nonzero(chart == c)[0]
        corners = (3 * fc[:, None] + np.arange(3)).reshape(-1)
        ids, local = np.unique(split[corners], return_inverse=True)
        tris = local.reshape(-1, 3)
        P = V[split_vertex[ids]]
        loop, loop_faces = _boundary_loop(tris, cut[corners])
        seg = np.linalg.norm(P[loop] - P[np.roll(loop, -1)], axis=1)
        s = np.concatenate([[0], np.cumsum(seg)[:-1]]) / seg.sum()
        if c == SIDE:
            centroids = P[tris[loop_faces]].mean(1)  # [len(loop), 3] face beside each loop edge
            fixed_uv = _rectangle_boundary(P, loop, centroids, seam_keys=seam, vid=split_vertex[ids],
                                           nmax=int(F.max()) + 1)
        else:
            ang = 2 * np.pi * s
            fixed_uv = 0.5 + 0.5 * np.stack([np.cos(ang), np.sin(ang)], 1)
        uv = _mean_value_solve(P, tris, np.asarray(loop), fixed_uv)
        uvs[ids] = np.stack([u0 + (u1 - u0) * uv[:, 0], v0 + (v1 - v0) * uv[:, 1]], 1)
    return uvs.astype(np.float32), split.reshape(-1, 3)


def _rectangle_boundary(P: np.ndarray, loop: list[int], centroids: np.ndarray, *, seam_keys: set[int], vid: np.ndarray,
                        nmax: int) -> np.ndarray:
    """Side-chart boundary -> unit square: seam sides to u = 0 / 1, crown ring to v = 1, neck ring to v = 0."""
    loop_arr = np.asarray(loop)
    nxt = np.roll(loop_arr, -1)
    ga, gb = vid[loop_arr], vid[nxt]
    is_seam = np.isin(np.minimum(ga, gb) * nmax + np.maximum(ga, gb), np.fromiter(seam_keys, np.int64))
    y_mid = 0.5 * (P[loop_arr, 1] + P[nxt, 1])
    y_split = 0.5 * (P[:, 1].max() + P[:, 1].min())
    kind = np.where(is_seam, 0, np.where(y_mid > y_split, 1, 2))  # 0 seam, 1 crown ring, 2 neck ring
    start = int(np.nonzero((kind == 0) & (np.roll(kind, 1) == 1))[0][0])  # a seam run entered from the crown
    order = np.roll(np.arange(len(loop_arr)), -start)
    kind = kind[order]
    breaks = np.nonzero(np.diff(kind))[0] + 1
    runs = np.split(order, breaks)
    if [int(kind[0])] + [int(kind[b]) for b in breaks] != [0, 2, 0, 1]:
        raise RuntimeError("head UV: unexpected side-chart boundary (want seam, neck ring, seam, crown ring)")
    # the first seam run goes crown -> neck; its faces lie on one side of the seam
    offset = (centroids[runs[0], 0] - P[loop_arr[runs[0]], 0]).mean()
    left_u = 0.0 if offset < 0 else 1.0  # the subject's right (x < 0) side of the seam gets u = 0
    corners = [(left_u, 1.0), (left_u, 0.0), (1 - left_u, 0.0), (1 - left_u, 1.0)]
    uv = np.zeros((len(loop_arr), 2))
    for i, run in enumerate(runs):
        seg = np.linalg.norm(P[loop_arr[run]] - P[nxt[run]], axis=1)
        t = np.concatenate([[0], np.cumsum(seg)[:-1]]) / seg.sum()
        c0, c1 = np.asarray(corners[i]), np.asarray(corners[(i + 1) % 4])
        uv[run] = c0 + t[:, None] * (c1 - c0)
    return uv
