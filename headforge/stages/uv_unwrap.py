"""UV parameterisation of a welded mesh: xatlas under a wall-clock budget, or a cube-projection atlas.

Arrays only (numpy). The xatlas child is a small script of its own (numpy + xatlas; starts in well under a second).

- :func:`xatlas_unwrap`: xatlas charts and packs the mesh into one square atlas of ``texture_size`` pixels with
  ``texture_padding`` pixels between charts. ``ChartOptions.max_cost`` (``cfg.chart_max_cost``, 8 instead of
  xatlas' 2) lets charts grow large: few charts, few seams, a vertex ratio near 1 instead of confetti. xatlas
  has no progress callback and cannot be interrupted, so it runs in a child Python process; the parent shows
  the elapsed time against ``cfg.unwrap_seconds`` and stops the child when the budget is spent
  (:class:`UnwrapTimeout`). Its charting time grows steeply with non-manifold input (tens of minutes on
  100k raw marching-cubes triangles with back-to-back sheets): the mesh is repaired and decimated first.
- :func:`cube_atlas`: the fallback. Each face goes to the cube side (+-x, +-y, +-z) its centroid points to from
  the centre of the bounding box, and is projected centrally (gnomonic) onto that side's plane: 6 charts,
  packed in a 3 x 2 grid with the padding around each. Central projection is one-to-one where the surface is
  star-shaped around the centre (a head is, apart from the ears' folds and the nostrils, where texels are
  shared: the baked colour there is one of the overlapping triangles').
- :func:`unwrap` picks per ``cfg.unwrap`` (:class:`UnwrapMethod`).

UVs follow the OBJ convention (v up); ``faces`` is never changed: the per-corner UVs are ``uvs`` [T, 2] indexed by
``faces_uv`` [F, 3].
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from tqdm import tqdm

from headforge.stages.mesh_types import MeshExtractConfig, UnwrapMethod


class UnwrapTimeout(RuntimeError):
    """xatlas did not finish within the budget."""


@dataclass(frozen=True)
class UvAtlas:
    uvs: np.ndarray  # [T, 2] float32 in [0, 1], OBJ convention
    faces_uv: np.ndarray  # [F, 3] int64 into uvs
    method: UnwrapMethod  # XATLAS or CUBE


# The child process: a self-contained script (numpy + xatlas only), so it needs neither headforge on its path nor
# an importable __main__ (multiprocessing's spawn re-imports the caller's main module, which fails in unguarded
# scripts). argv: input .npz, output .npz, texture size, padding, max_cost, max_iterations.
_XATLAS_CHILD = """
import sys
import numpy as np
import xatlas
src, dst, size, padding, max_cost, max_iterations = sys.argv[1:7]
data = np.load(src)
chart = xatlas.ChartOptions()
chart.max_cost = float(max_cost)
chart.max_iterations = int(max_iterations)
for resolution in (int(size), 0):
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"], data["normals"])
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(chart_options=chart, pack_options=pack)
    if atlas.atlas_count == 1:
        break
else:
    sys.exit("xatlas packed the charts into %d atlases, expected one" % atlas.atlas_count)
vmapping, indices, uvs = atlas[0]
np.savez(dst, vmapping=vmapping, indices=indices, uvs=uvs)
"""


def xatlas_unwrap(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, cfg: MeshExtractConfig
                  ) -> UvAtlas:
    """xatlas in a child process, stopped after ``cfg.unwrap_seconds``. [V, 3], [F, 3], [V, 3] -> UvAtlas."""
    budget = float(cfg.unwrap_seconds)
    with tempfile.TemporaryDirectory(prefix="headforge-xatlas-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        smooth = smoothed_positions(vertices, faces, cfg.chart_smoothing)
        np.savez(src, vertices=np.ascontiguousarray(smooth, np.float32),
                 faces=np.ascontiguousarray(faces, np.uint32), normals=np.ascontiguousarray(normals, np.float32))
        cmd = [sys.executable, "-c", _XATLAS_CHILD, str(src), str(dst), str(cfg.texture_size),
               str(cfg.texture_padding), repr(float(cfg.chart_max_cost)), str(cfg.chart_max_iterations)]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        bar = tqdm(total=int(np.ceil(budget)), desc=f"unwrap (xatlas, {len(faces)} triangles; s of budget)",
                   unit="s", disable=not cfg.progress, file=sys.stderr)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed >= budget:
                    raise UnwrapTimeout(f"xatlas did not finish {len(faces)} triangles within {budget:g} s")
                bar.n = min(int(elapsed), bar.total)
                bar.refresh()
                time.sleep(min(0.5, budget - elapsed))
        finally:
            bar.close()
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1].decode(errors="replace").strip()
        if proc.returncode != 0 or not dst.is_file():
            raise RuntimeError(f"the xatlas process failed (exit code {proc.returncode}) on {len(faces)} triangles: "
                               + (stderr.splitlines()[-1] if stderr else "no message"))
        with np.load(dst) as out:
            vmapping, indices, uvs = out["vmapping"], out["indices"].astype(np.int64), out["uvs"]
    if indices.shape != faces.shape or not np.array_equal(vmapping[indices], faces):
        raise RuntimeError("xatlas changed the face order or corners; cannot map its UVs back onto the mesh")
    return UvAtlas(uvs.astype(np.float32), indices, UnwrapMethod.XATLAS)


def smoothed_positions(vertices: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Taubin (lambda 0.5, mu -0.53) smoothing with uniform neighbour weights: [V, 3], [F, 3] -> [V, 3].

    Removes the wrinkles a field's noise leaves in the surface without shrinking it; xatlas charts the smoothed
    copy (same vertices and faces, so its UVs map onto the real mesh one to one), whose normals vary slowly, so
    its charts grow large instead of stopping at every ripple.
    """
    v = vertices.astype(np.float64)
    if iterations <= 0:
        return v
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    adj = coo_matrix((np.ones(2 * len(a)), (np.concatenate([a, b]), np.concatenate([b, a]))),
                     shape=(len(v), len(v))).tocsr()
    adj.data[:] = 1.0  # duplicate entries (an edge seen from both faces) count once
    inv_deg = 1.0 / np.maximum(np.asarray(adj.sum(1)).reshape(-1, 1), 1.0)
    for _ in range(iterations):
        for step in (0.5, -0.53):
            v = v + step * (adj @ v * inv_deg - v)
    return v


def cube_atlas(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int) -> UvAtlas:
    """Central projection onto the six sides of a cube (see module docstring). [V, 3], [F, 3] -> UvAtlas."""
    v = vertices.astype(np.float64)
    d = v - 0.5 * (v.min(0) + v.max(0))  # [V, 3] from the bounding box centre
    cen = d[faces].mean(1)  # [F, 3]
    axis = np.abs(cen).argmax(1)  # [F]
    sign = np.sign(cen[np.arange(len(faces)), axis])
    sign[sign == 0] = 1
    side = 2 * axis + (sign > 0)  # [F] chart 0..5
    q = d[faces]  # [F, 3, 3] corner offsets
    a1, a2 = (axis + 1) % 3, (axis + 2) % 3
    rows = np.arange(len(faces))[:, None]
    depth = sign[:, None] * q[rows, np.arange(3)[None], axis[:, None]]  # [F, 3] distance along the side's axis
    depth = np.maximum(depth, 1e-3 * np.linalg.norm(q, axis=-1) + 1e-12)
    local = np.stack([q[rows, np.arange(3)[None], a1[:, None]], q[rows, np.arange(3)[None], a2[:, None]]], -1)
    local = local / depth[..., None]  # [F, 3, 2] gnomonic coordinates on the side's plane
    local[..., 0] *= sign[:, None]  # mirror the negative sides, so every chart keeps the faces' winding
    cell_w, cell_h = texture_size / 3.0, texture_size / 2.0  # texels
    pad = max(float(padding), 1.0)
    uv_px = np.zeros_like(local)
    for c in range(6):
        m = side == c
        if not m.any():
            continue
        lo, hi = local[m].reshape(-1, 2).min(0), local[m].reshape(-1, 2).max(0)
        scale = min((cell_w - 2 * pad) / max(hi[0] - lo[0], 1e-12), (cell_h - 2 * pad) / max(hi[1] - lo[1], 1e-12))
        origin = np.array([(c % 3) * cell_w + pad, (c // 3) * cell_h + pad])
        uv_px[m] = (local[m] - lo) * scale + origin
    key = faces.astype(np.int64) * 6 + side[:, None]  # [F, 3] one uv vertex per (vertex, side)
    uniq, first, faces_uv = np.unique(key.reshape(-1), return_index=True, return_inverse=True)
    uvs = uv_px.reshape(-1, 2)[first] / texture_size  # [T, 2], v measured up from the bottom
    return UvAtlas(uvs.astype(np.float32), faces_uv.reshape(-1, 3).astype(np.int64), UnwrapMethod.CUBE)


def unwrap(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, cfg: MeshExtractConfig) -> UvAtlas:
    """UVs per ``cfg.unwrap``: AUTO tries xatlas within the budget and falls back to :func:`cube_atlas`."""
    faces = np.asarray(faces, dtype=np.int64)
    if cfg.unwrap == UnwrapMethod.CUBE:
        return cube_atlas(vertices, faces, cfg.texture_size, cfg.texture_padding)
    if cfg.unwrap == UnwrapMethod.XATLAS:
        return xatlas_unwrap(vertices, faces, normals, cfg)
    try:
        return xatlas_unwrap(vertices, faces, normals, cfg)
    except RuntimeError as error:  # UnwrapTimeout or a failed xatlas process
        print(f"[extract-mesh] {error}; using the cube-projection atlas instead (6 charts; raise "
              "unwrap_seconds or lower target_faces to get xatlas charts)", file=sys.stderr, flush=True)
        return cube_atlas(vertices, faces, cfg.texture_size, cfg.texture_padding)
