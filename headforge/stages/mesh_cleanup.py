"""Clean a marching-cubes mesh: weld, repair, keep the largest component, fill small holes, decimate; measure it.

All functions take and return :class:`TexturedMesh` geometry (vertices [V, 3], faces [F, 3] counter-clockwise
seen from outside) and keep that winding. UVs and textures are not carried: cleanup runs before UV unwrapping.

- :func:`weld_and_drop_degenerate`: merges vertices with exactly equal positions, drops faces that use one
  vertex twice and vertices no face uses.
- :func:`keep_largest_component`: the component (vertices connected through faces) with the largest area.
- :func:`fill_small_holes`: every boundary loop (chain of edges used by one face only) with at most
  ``max_edges`` edges is closed. A 3-edge loop gets one triangle; a longer loop gets a fan of triangles around
  a new vertex at the mean of the loop's vertices, each fan triangle taking one boundary edge in the opposite
  direction, so the winding stays consistent and every edge ends up shared by exactly two faces. This suits
  the small, roughly planar holes marching cubes leaves (thin parts below the grid resolution); larger loops are
  left open (they are reported by the return value). trimesh's ``fill_holes`` only closes triangles and quads.
- :func:`decimate`: quadric edge-collapse decimation (Garland & Heckbert) by ``fast-simplification`` (the
  library trimesh's ``simplify_quadric_decimation`` uses), to a target triangle count. It does not check
  topology: where a part is thinner than a few triangles it collapses it into back-to-back sheets and
  non-manifold edges, and it can split pieces off.
- :func:`repair`: rounds of weld, drop duplicate and back-to-back faces and the faces on non-manifold edges
  (:mod:`mesh_quality`), keep the largest piece, close the small holes this opens, until a round changes nothing.
  :func:`clean_mesh` repairs before decimating and again after it, so the result is manifold and single-piece
  (checked by :func:`headforge.stages.mesh_quality.mesh_report`).
- :func:`sample_surface` (area-weighted points) and :func:`chamfer_distance` (mean nearest-neighbour distance in
  both directions) measure geometry against a reference.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.representations.mesh import TexturedMesh
from headforge.stages.mesh_quality import duplicate_face_mask, face_components, non_manifold_face_mask
from headforge.stages.mesh_types import StageClock


def _geometry(vertices: np.ndarray, faces: np.ndarray) -> TexturedMesh:  # float [V, 3], int [F, 3]
    return TexturedMesh(torch.as_tensor(np.ascontiguousarray(vertices), dtype=torch.float32),
                        torch.as_tensor(np.ascontiguousarray(faces), dtype=torch.int64))


def drop_unreferenced(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, 3], [F, 3] -> the vertices some face uses (order kept), faces re-indexed."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1  # [V] old -> new index (valid where used)
    return vertices[used], remap[faces]


def weld_and_drop_degenerate(mesh: TexturedMesh) -> TexturedMesh:
    """Merge exactly coincident vertices, drop faces with a repeated vertex, drop unreferenced vertices."""
    v = mesh.vertices.numpy()
    f = mesh.faces.numpy()
    uniq, inverse = np.unique(v, axis=0, return_inverse=True)  # [U, 3], [V]
    f = inverse.reshape(-1)[f]  # [F, 3]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    return _geometry(*drop_unreferenced(uniq, f[ok]))


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:  # [V, 3], [F, 3] -> [F]
    t = vertices[faces]  # [F, 3, 3]
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=-1)


def signed_volume(mesh: TexturedMesh) -> float:
    """Volume enclosed by a closed mesh; positive when its faces are counter-clockwise seen from outside."""
    t = mesh.vertices.double()[mesh.faces]  # [F, 3, 3]
    return float((t[:, 0] * torch.linalg.cross(t[:, 1], t[:, 2])).sum() / 6)


def keep_largest_component(mesh: TexturedMesh) -> TexturedMesh:
    """The connected component with the largest surface area (floaters and debris are dropped)."""
    v, f = mesh.vertices.numpy(), mesh.faces.numpy()
    label = face_components(f, len(v))  # [F]
    area = np.bincount(label, weights=face_areas(v.astype(np.float64), f))  # [C]
    if len(area) <= 1:
        return mesh
    return _geometry(*drop_unreferenced(v, f[label == int(np.argmax(area))]))


def _simple_cycles(walk: list[int]) -> list[list[int]]:
    """A closed walk (last vertex -> first) that may pass a vertex twice -> simple cycles using all its edges."""
    cycles, stack, pos = [], [], {}
    for v in [*walk, walk[0]]:
        if v in pos:  # close the cycle that started at v's earlier visit
            i = pos[v]
            cycle = stack[i:]
            for u in cycle:
                del pos[u]
            del stack[i:]
            if len(cycle) >= 3:
                cycles.append(cycle)
        pos[v] = len(stack)
        stack.append(v)
    return cycles


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """[F, 3] -> simple loops of vertex ids [k]; edge loop[i] -> loop[i + 1] is an edge of a face whose twin is
    missing.

    Each loop visits a vertex once: where several boundary loops meet at a vertex (a pinched hole), the walk
    through it is split into simple cycles, so filling a loop never puts a vertex twice on one fan. Chains that
    do not close (edges used in the same direction twice, non-manifold input) are not returned.
    """
    a = faces.reshape(-1).astype(np.int64)  # [3F] edge starts
    b = faces[:, [1, 2, 0]].reshape(-1).astype(np.int64)  # [3F] edge ends
    n = int(faces.max()) + 1
    open_edge = ~np.isin(b * n + a, a * n + b)  # twin (b -> a) missing
    nxt: dict[int, list[int]] = {}
    for s, e in zip(a[open_edge].tolist(), b[open_edge].tolist(), strict=True):
        nxt.setdefault(s, []).append(e)
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, cur, closed = [start], start, False
        while True:
            outs = nxt.get(cur)
            if not outs:  # a chain that does not close (non-manifold input)
                break
            nxt_v = outs.pop()
            if not outs:
                del nxt[cur]
            if nxt_v == start:
                closed = True
                break
            loop.append(nxt_v)
            cur = nxt_v
        if closed:
            loops.extend(np.asarray(c, dtype=np.int64) for c in _simple_cycles(loop))
    return loops


def fill_small_holes(mesh: TexturedMesh, max_edges: int) -> tuple[TexturedMesh, int, int]:
    """Close boundary loops of at most ``max_edges`` edges (see module docstring).

    Returns (mesh, holes filled, holes left open).
    """
    v, f = mesh.vertices.numpy(), mesh.faces.numpy()
    if max_edges < 3 or len(f) == 0:
        return mesh, 0, len(boundary_loops(f)) if len(f) else 0
    new_v: list[np.ndarray] = []
    new_f: list[np.ndarray] = []
    filled = left = 0
    for loop in boundary_loops(f):
        k = len(loop)
        if k < 3 or k > max_edges:
            left += 1
            continue
        filled += 1
        if k == 3:  # the loop's edges reversed: (l2, l1, l0)
            new_f.append(loop[::-1][None])
            continue
        c = len(v) + len(new_v)  # index of the new centre vertex
        new_v.append(v[loop].mean(0))
        nxt = np.roll(loop, -1)
        new_f.append(np.stack([nxt, loop, np.full(k, c)], 1))  # boundary edge l_i -> l_{i+1} used as l_{i+1} -> l_i
    if not new_f:
        return mesh, 0, left
    verts = np.concatenate([v, np.asarray(new_v, dtype=v.dtype).reshape(-1, 3)])
    return _geometry(verts, np.concatenate([f, *new_f])), filled, left


def decimate(mesh: TexturedMesh, target_faces: int, *, aggressiveness: float = 7.0) -> TexturedMesh:
    """Quadric edge-collapse decimation to about ``target_faces`` triangles (unchanged if already fewer)."""
    if target_faces < 4:
        raise ValueError(f"target_faces must be at least 4, got {target_faces}")
    if mesh.num_faces <= target_faces:
        return mesh
    try:
        import fast_simplification
    except ImportError as e:
        raise HeadforgeError("mesh decimation needs the fast-simplification package, which is not installed",
                             fix="pip install fast-simplification==0.2.0, or set target_faces=None to keep "
                                 "the full-resolution mesh") from e
    points, faces = fast_simplification.simplify(mesh.vertices.numpy().astype(np.float64), mesh.faces.numpy(),
                                                 target_count=int(target_faces), agg=aggressiveness)
    return weld_and_drop_degenerate(_geometry(np.asarray(points), np.asarray(faces, dtype=np.int64)))


def repair(mesh: TexturedMesh, *, keep_largest: bool = True, fill_holes_max_edges: int = 64,
           max_rounds: int = 4) -> TexturedMesh:
    """Make a mesh manifold: rounds of weld, drop duplicate / back-to-back faces and the faces on non-manifold
    edges, keep the largest piece, close small holes, until a round changes nothing (at most ``max_rounds``)."""
    for _ in range(max_rounds):
        mesh = weld_and_drop_degenerate(mesh)
        v, f = mesh.vertices.numpy(), mesh.faces.numpy()
        drop_dup, _ = duplicate_face_mask(f)
        f = f[~drop_dup]
        drop_nm, _ = non_manifold_face_mask(f)
        f = f[~drop_nm]
        changed = bool(drop_dup.any() or drop_nm.any())
        if changed:
            if len(f) == 0:
                raise HeadforgeError("mesh repair removed every face (the surface is all non-manifold sheets)",
                                     fix="raise the marching-cubes resolution or lower target_faces' reduction")
            mesh = _geometry(*drop_unreferenced(v, f))
        if keep_largest:
            before = mesh.num_faces
            mesh = keep_largest_component(mesh)
            changed |= mesh.num_faces != before
        if fill_holes_max_edges > 0:
            mesh, filled, _ = fill_small_holes(mesh, fill_holes_max_edges)
            changed |= filled > 0
        if not changed:
            break
    return mesh


def clean_mesh(mesh: TexturedMesh, *, keep_largest: bool = True, fill_holes_max_edges: int = 64,
               target_faces: int | None = None, clock: StageClock | None = None) -> TexturedMesh:
    """:func:`repair`, then (with ``target_faces``) decimate and :func:`repair` again: decimation can pinch thin
    parts into back-to-back sheets and split off pieces, so the largest piece is kept after it too."""
    clock = clock or StageClock(progress=False)
    with clock.stage("cleanup", f"{mesh.num_faces} triangles"):
        mesh = repair(mesh, keep_largest=keep_largest, fill_holes_max_edges=fill_holes_max_edges)
    if target_faces is not None and mesh.num_faces > target_faces:
        with clock.stage("decimate", f"{mesh.num_faces} -> {target_faces} triangles"):
            mesh = decimate(mesh, target_faces)
        with clock.stage("cleanup after decimation", f"{mesh.num_faces} triangles"):
            mesh = repair(mesh, keep_largest=keep_largest, fill_holes_max_edges=fill_holes_max_edges)
    return mesh


# ---------------------------------------------------------------------------------------------- measuring
def sample_surface(mesh: TexturedMesh, n: int, *, seed: int = 0) -> Tensor:
    """n points [n, 3] uniformly over the surface (faces chosen by area, uniform barycentrics)."""
    g = torch.Generator().manual_seed(seed)
    tri = mesh.vertices.double()[mesh.faces]  # [F, 3, 3]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)  # [F] (2x area)
    if not float(area.sum()) > 0:
        raise ValueError("mesh has zero surface area; cannot sample it")
    face = torch.multinomial(area, n, replacement=True, generator=g)  # [n]
    r1, r2 = torch.rand(n, 1, generator=g, dtype=torch.float64), torch.rand(n, 1, generator=g, dtype=torch.float64)
    s = r1.sqrt()
    t = tri[face]  # [n, 3, 3]
    p = (1 - s) * t[:, 0] + s * (1 - r2) * t[:, 1] + s * r2 * t[:, 2]
    return p.float()


def nearest_distances(a_points: Tensor | np.ndarray, b_points: Tensor | np.ndarray) -> np.ndarray:
    """[N, 3], [M, 3] -> [N] distance from each point of a to the nearest point of b (float64)."""
    a = np.asarray(a_points, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b_points, dtype=np.float64).reshape(-1, 3)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("nearest_distances / chamfer_distance need non-empty point sets")
    return cKDTree(b).query(a, workers=-1)[0]


def chamfer_distance(a_points: Tensor | np.ndarray, b_points: Tensor | np.ndarray) -> tuple[float, float]:
    """[N, 3], [M, 3] -> (mean over a of the distance to the nearest b, mean over b of the distance to a)."""
    return float(nearest_distances(a_points, b_points).mean()), float(nearest_distances(b_points, a_points).mean())

