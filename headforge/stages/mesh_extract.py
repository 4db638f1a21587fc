"""Neural field -> textured mesh: marching cubes, cleanup, UV unwrap, texture bake, export.

Pipeline (:func:`field_to_mesh`):
1. Sample the field's scalar on a regular grid over the bounds (``resolution`` cells along the longest side,
   the same spacing on every axis as far as the extents allow), under ``torch.no_grad`` in chunks of
   ``chunk`` points. SDF fields use the SDF (metres, negative inside, level 0); density fields use sigma
   (per metre, inside where sigma > level).
2. The grid is padded by one layer of "outside" samples, so a surface that reaches the bounds (a neck cut by
   the box) is closed there by a cap instead of being left open. For density this is exact: the field is
   empty outside its box.
3. ``skimage.measure.marching_cubes`` on the outside-positive scalar ``u`` (``sdf - level`` or
   ``level - sigma``) with ``gradient_direction="descent"``, which yields triangles counter-clockwise seen
   from outside (outward normals, positive signed volume).
4. Cleanup (:mod:`headforge.stages.mesh_cleanup`): weld, keep the largest component, fill small holes, decimate.
   Marching cubes of the padded grid is already closed, so hole filling is a safety net here (it matters
   for meshes from elsewhere, or with the padding's caps cut away).
5. UV unwrap and texture bake (:mod:`headforge.stages.texture_bake`).

**Default density level.** ``DEFAULT_DENSITY_LEVEL = ln 2 / 1 cm ~ 69.3 per metre``: the density at which one
centimetre of material stops half of the light (alpha 0.5 over 1 cm). It is a physical quantity, so the
surface does not move with the grid resolution (unlike "alpha 0.5 over one voxel"). A trained field's density
rises from ~0 to hundreds or thousands per metre within a few millimetres at the surface, so the extracted
surface sits within a fraction of that transition; lower levels pick up haze and floaters, higher levels
punch holes in thin or semi-transparent parts (hair). For VolSDF-style densities (``0.5 / beta`` at the
surface) the SDF itself is used instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from headforge.errors import HeadforgeError
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import save_glb, save_obj, save_ply
from headforge.stages.mesh_cleanup import clean_mesh
from headforge.stages.mesh_types import DEFAULT_DENSITY_LEVEL, MeshExtractConfig, StageClock, Vec3
from headforge.stages.texture_bake import bake_texture

__all__ = ["DEFAULT_DENSITY_LEVEL", "EmptyFieldError", "FieldMeshError", "MeshExtractConfig", "SurfaceField",
           "export_mesh", "extract_mesh", "field_bounds", "field_device", "field_geometry", "field_to_mesh",
           "grid_axes", "iso_level", "sample_grid"]
_DEFAULT_CONFIG = MeshExtractConfig()
_PROGRESS_MIN_CHUNKS = 16  # grids needing fewer field queries than this get no progress bar


class FieldMeshError(HeadforgeError):
    """A field cannot be turned into a mesh (non-finite values, no surface)."""


class EmptyFieldError(FieldMeshError):
    """The field has no surface at the iso level inside the bounds."""


class SurfaceField(Protocol):
    """What :func:`field_to_mesh` needs (``RadianceField`` has it): ``cfg.sdf``, bounds, sdf/density, color."""

    cfg: object  # with a bool ``sdf``

    @property
    def bounds(self) -> tuple[Tensor, Tensor]: ...

    def density(self, points: Tensor) -> Tensor: ...  # [..., 3] -> [..., 1]

    def sdf(self, points: Tensor) -> Tensor: ...  # [..., 3] -> [..., 1]

    def color(self, points: Tensor, directions: Tensor) -> Tensor: ...  # [..., 3], [..., 3] -> [..., 3]


def grid_axes(lo: Vec3, hi: Vec3, resolution: int) -> list[np.ndarray]:
    """Sample coordinates per axis: ``resolution`` cells along the longest side, near-equal spacing elsewhere."""
    extent = [h - l for l, h in zip(lo, hi, strict=True)]
    step = max(extent) / resolution
    cells = [max(1, math.ceil(e / step - 1e-6)) for e in extent]
    return [np.linspace(l, h, n + 1) for l, h, n in zip(lo, hi, cells, strict=True)]


def sample_grid(scalar_fn: Callable[[Tensor], Tensor], axes: list[np.ndarray], *, chunk: int = 65536,
                device: torch.device | str | None = None, progress: bool = True) -> np.ndarray:
    """Evaluate ``scalar_fn`` ([N, 3] -> [N, 1] or [N]) at every grid point -> [nx, ny, nz] float32."""
    nx, ny, nz = (len(a) for a in axes)
    ax, ay, az = (torch.as_tensor(a, dtype=torch.float32) for a in axes)
    nyz = ny * nz
    yz = torch.stack(torch.meshgrid(ay, az, indexing="ij"), -1).reshape(nyz, 2)  # [ny*nz, 2], z fastest
    out = np.empty(nx * nyz, dtype=np.float32)
    group = max(1, chunk // nyz)  # x planes per batch
    starts = range(0, nx, group)
    show = progress and nx * nyz >= _PROGRESS_MIN_CHUNKS * chunk
    with torch.no_grad():
        for i0 in tqdm(starts, desc="sample field", unit="plane" if group == 1 else "batch", disable=not show):
            xs = ax[i0:i0 + group]  # [k]
            pts = torch.cat([xs[:, None, None].expand(-1, nyz, 1), yz[None].expand(len(xs), -1, -1)], -1)
            pts = pts.reshape(-1, 3)  # [k*ny*nz, 3] points of these planes, row-major (x, y, z)
            for s in range(0, len(pts), chunk):
                p = pts[s:s + chunk]
                val = scalar_fn(p.to(device) if device is not None else p)
                if val.numel() != len(p):
                    raise ValueError(f"scalar_fn must return one value per point, got shape {tuple(val.shape)} "
                                     f"for {len(p)} points")
                o = i0 * nyz + s
                out[o:o + len(p)] = val.reshape(-1).float().cpu().numpy()
    return out.reshape(nx, ny, nz)


def extract_mesh(scalar_fn: Callable[[Tensor], Tensor], lo: Vec3 | Tensor, hi: Vec3 | Tensor,
                 cfg: MeshExtractConfig = _DEFAULT_CONFIG, *, is_sdf: bool,
                 device: torch.device | str | None = None, clock: StageClock | None = None) -> TexturedMesh:
    """Marching cubes of ``scalar_fn`` over the box [lo, hi], then cleanup per ``cfg`` (geometry only).

    ``scalar_fn``: points [N, 3] (metres) -> SDF [N, 1] (``is_sdf``, negative inside) or density [N, 1].
    Returns a welded, repaired mesh, counter-clockwise seen from outside; ``clock`` records (and with
    ``cfg.progress`` logs) each stage's wall time. Raises :class:`EmptyFieldError` if no sample
    is inside (or every sample is), :class:`FieldMeshError` if the field returns NaN/inf.
    """
    from skimage.measure import marching_cubes

    clock = clock or StageClock(progress=False)
    lo_t, hi_t = tuple(float(x) for x in lo), tuple(float(x) for x in hi)
    level = iso_level(cfg, is_sdf)
    axes = grid_axes(lo_t, hi_t, cfg.resolution)
    spacing = tuple(float(a[1] - a[0]) for a in axes)
    with clock.stage("sample field", " x ".join(str(len(a)) for a in axes) + " points"):
        values = sample_grid(scalar_fn, axes, chunk=cfg.chunk, device=device, progress=cfg.progress)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise FieldMeshError(f"the field returned NaN or inf at {bad} of {values.size} grid points",
                             fix="the field's weights are broken (diverged training?); resume from an earlier "
                                 "checkpoint or lower the learning rate")
    u = values - level if is_sdf else level - values  # [nx, ny, nz] positive outside, negative inside
    kind = "SDF" if is_sdf else "density"
    if not (u < 0).any():
        raise EmptyFieldError(
            f"the field is empty at {kind} level {level:g}: no grid point inside the bounds "
            f"{lo_t} .. {hi_t} is inside the surface, so there is nothing to mesh",
            fix="lower MeshExtractConfig.level (for density fields), check the bounds, and check that training "
                "converged (render the field: an empty render means an untrained or collapsed field)")
    if not (u > 0).any():
        raise EmptyFieldError(
            f"the field has no surface at {kind} level {level:g}: every grid point in {lo_t} .. {hi_t} is "
            "inside, so the mesh would be the bounding box",
            fix="raise MeshExtractConfig.level (for density fields), or check that training converged")
    outside = float(np.abs(u).max()) + max(spacing) if is_sdf else level  # density 0 beyond the box
    padded = np.pad(u, 1, mode="constant", constant_values=max(outside, 1e-12))
    with clock.stage("marching cubes"):
        verts, faces, _, _ = marching_cubes(padded, 0.0, spacing=spacing, gradient_direction="descent",
                                            allow_degenerate=False)
    if len(faces) == 0:
        raise EmptyFieldError(f"marching cubes found no triangles at {kind} level {level:g} (the inside is "
                              "thinner than one grid cell)",
                              fix="raise MeshExtractConfig.resolution, lower the level (density fields), or check "
                                  "that training converged")
    origin = np.asarray(lo_t) - np.asarray(spacing)  # padded index 0 is one cell outside lo
    mesh = TexturedMesh(torch.as_tensor(verts + origin, dtype=torch.float32),
                        torch.as_tensor(faces, dtype=torch.int64))
    return clean_mesh(mesh, keep_largest=cfg.keep_largest_component, fill_holes_max_edges=cfg.fill_holes_max_edges,
                      target_faces=cfg.target_faces, clock=clock)


def iso_level(cfg: MeshExtractConfig, is_sdf: bool) -> float:
    """``cfg.level``, or 0 (SDF) / :data:`DEFAULT_DENSITY_LEVEL` (density)."""
    return float(cfg.level if cfg.level is not None else (0.0 if is_sdf else DEFAULT_DENSITY_LEVEL))


def field_bounds(field: SurfaceField, cfg: MeshExtractConfig) -> tuple[Vec3, Vec3]:
    if cfg.bounds_min is not None:
        return tuple(cfg.bounds_min), tuple(cfg.bounds_max)
    b = field.bounds() if callable(field.bounds) else field.bounds
    return tuple(float(x) for x in b[0]), tuple(float(x) for x in b[1])


def field_device(field: SurfaceField) -> torch.device | None:
    b = field.bounds() if callable(field.bounds) else field.bounds
    return b[0].device if isinstance(b[0], Tensor) else None


def field_geometry(field: SurfaceField, cfg: MeshExtractConfig, clock: StageClock | None = None) -> TexturedMesh:
    """Marching cubes + cleanup of a radiance field's SDF (``field.cfg.sdf``) or density (geometry only)."""
    is_sdf = bool(getattr(field.cfg, "sdf", False))
    lo, hi = field_bounds(field, cfg)
    return extract_mesh(field.sdf if is_sdf else field.density, lo, hi, cfg, is_sdf=is_sdf,
                        device=field_device(field), clock=clock)


def field_to_mesh(field: SurfaceField, cfg: MeshExtractConfig = _DEFAULT_CONFIG) -> TexturedMesh:
    """Marching cubes + cleanup + UV unwrap + texture bake of a radiance field (SDF or density)."""
    mesh = field_geometry(field, cfg)
    return bake_texture(mesh, field.color, cfg, device=field_device(field))[0].validate()
def export_mesh(mesh: TexturedMesh, out_dir: str | Path, name: str = "mesh") -> dict[str, Path]:
    """Write ``name``.obj (+ .mtl + .png when textured), .ply and .glb into ``out_dir``, each atomically.

    Returns {"obj", "ply", "glb"} (+ {"mtl", "texture"}) -> path. The caller wanting an all-or-nothing folder
    wraps this in :func:`headforge.atomic.atomic_directory`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"obj": save_obj(mesh, out / f"{name}.obj")}
    if mesh.has_texture:
        paths["mtl"], paths["texture"] = out / f"{name}.mtl", out / f"{name}.png"
    paths["ply"] = save_ply(mesh, out / f"{name}.ply")
    paths["glb"] = save_glb(mesh, out / f"{name}.glb")
    return paths
