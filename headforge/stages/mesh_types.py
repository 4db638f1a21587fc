"""Types shared by the mesh-extraction stages (config, quality report, stage result, stage clock).

:mod:`mesh_extract`, :mod:`mesh_cleanup`, :mod:`uv_unwrap`, :mod:`texture_bake` and :mod:`mesh_stage` all import
from here and never from each other in a cycle. This module imports only :mod:`headforge.validation` (and no torch), so
the xatlas worker process that :mod:`uv_unwrap` spawns starts quickly.
"""

from __future__ import annotations

import contextlib
import enum
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import annotated_types as at

from headforge.validation import Checked, Count, NonNegativeInt, OptionError, Positive, Seconds

Vec3 = tuple[float, float, float]
DEFAULT_DENSITY_LEVEL = math.log(2.0) / 0.01  # per metre: alpha 0.5 over 1 cm of material


class UnwrapMethod(enum.StrEnum):
    """How UVs are made (:mod:`headforge.stages.uv_unwrap`)."""

    AUTO = "auto"  # xatlas; past unwrap_seconds (or if it fails) the cube-projection atlas, with a warning
    XATLAS = "xatlas"  # xatlas; past the budget the stage fails (no fallback)
    CUBE = "cube"  # central projection onto a cube's six sides: 6 charts, seconds for any size


# Marching-cubes cells along the longest side: a 1024^3 float32 grid is 4 GiB, the most a 24 GiB machine
# samples alongside the field.
GridResolution = Annotated[int, at.Ge(2), at.Le(1024)]
TargetFaces = Annotated[int, at.Ge(4)]  # a closed mesh has at least 4 triangles
TextureSize = Annotated[int, at.Ge(8), at.Le(16384)]  # 16384: the largest texture engines and GPUs accept


@dataclass(frozen=True)
class MeshExtractConfig(Checked):
    resolution: GridResolution = 256  # marching-cubes grid cells along the longest side of the bounds
    level: float | None = None  # iso level; None: 0 for SDF fields, DEFAULT_DENSITY_LEVEL for density fields
    bounds_min: Vec3 | None = None  # metres, head frame; None: the field's bounds
    bounds_max: Vec3 | None = None
    chunk: Count = 65536  # points per field query (grid sampling and texture baking)
    keep_largest_component: bool = True
    fill_holes_max_edges: NonNegativeInt = 64  # boundary loops of at most this many edges are closed (0: none)
    target_faces: TargetFaces | None = 100_000  # decimate to this many triangles (None: keep all)
    texture_size: TextureSize = 1024  # square texture, pixels
    bake_supersample: Annotated[int, at.Ge(1), at.Le(8)] = 2  # colour samples per texel = bake_supersample ** 2
    texture_padding: NonNegativeInt = 2  # pixels between UV charts in the atlas
    texture_dilation: NonNegativeInt = 4  # pixels each chart's colours are grown outwards (hides seams)
    unwrap: UnwrapMethod = UnwrapMethod.AUTO
    unwrap_seconds: Seconds = 180.0  # wall-clock budget of xatlas (it runs in a child process that is stopped)
    chart_max_cost: Positive = 8.0  # xatlas ChartOptions.max_cost (its default 2 makes many small charts)
    chart_max_iterations: Count = 1  # xatlas ChartOptions.max_iterations (its default is 1)
    chart_smoothing: NonNegativeInt = 10  # Taubin smoothing rounds of the copy xatlas charts (0: the mesh itself)
    progress: bool = True  # tqdm bars / log lines for every stage that can take more than a few seconds

    def __post_init__(self):
        super().__post_init__()
        if (self.bounds_min is None) != (self.bounds_max is None):
            raise OptionError("bounds_max" if self.bounds_max is None else "bounds_min", None,
                              "given together with the other bound (or both left out)")
        if self.bounds_min is not None and any(
                hi <= lo for lo, hi in zip(self.bounds_min, self.bounds_max, strict=True)):
            raise OptionError("bounds_max", self.bounds_max, f"greater than bounds_min {self.bounds_min} on every axis")


@dataclass(frozen=True)
class MeshReport:
    """Fitness of a mesh for engines (see :func:`headforge.stages.mesh_quality.mesh_report`)."""

    vertices: int
    faces: int
    non_manifold_edges: int  # undirected edges used by more than two faces, or twice in the same direction
    duplicate_faces: int  # faces whose vertex set repeats an earlier face's (either winding)
    components: int  # pieces (faces connected through shared vertices)
    boundary_edges: int  # edges used by one face only (holes, open borders)
    charts: int  # UV charts (faces connected through shared UV edges); 0 without UVs
    vertex_ratio: float  # vertices an engine needs (distinct (position, uv) corners) / welded vertices
    euler_characteristic: int = 2  # V - E + F over the used vertices (2 for one sphere-like closed piece)

    @property
    def genus(self) -> int | None:
        """Handles of a closed manifold mesh, (2 x pieces - (V - E + F)) / 2; None when it is not one. Each handle
        must be cut before a UV chart is a disc, so a high genus means many charts."""
        if self.non_manifold_edges or self.boundary_edges:
            return None
        return (2 * self.components - self.euler_characteristic) // 2

    @property
    def engine_ready(self) -> bool:
        """Manifold, closed, single piece, no duplicate faces."""
        return (self.non_manifold_edges == 0 and self.duplicate_faces == 0 and self.components == 1
                and self.boundary_edges == 0)

    def summary(self) -> str:
        return (f"{self.vertices} vertices, {self.faces} triangles, {self.components} piece(s), "
                f"{self.non_manifold_edges} non-manifold edges, {self.duplicate_faces} duplicate faces, "
                f"{self.boundary_edges} boundary edges, {self.charts} UV charts, "
                f"vertex ratio {self.vertex_ratio:.2f}" + ("" if self.genus is None else f", genus {self.genus}"))


@dataclass(frozen=True)
class MeshFiles:
    """What :func:`headforge.stages.mesh_stage.extract_mesh_stage` wrote (texture files only when textured)."""

    directory: Path
    obj: Path
    ply: Path
    glb: Path
    mtl: Path | None = None
    texture: Path | None = None


@dataclass(frozen=True)
class MeshExtraction:
    """Result of the extract-mesh stage."""

    files: MeshFiles
    report: MeshReport
    unwrap: UnwrapMethod  # the parameterisation actually used (XATLAS or CUBE, never AUTO)
    level: float  # the iso level used (SDF metres or density per metre)
    seconds: tuple[tuple[str, float], ...]  # (stage name, wall seconds) in run order


class StageClock:
    """Wall time per named stage; with ``progress`` a log line (stderr) when a stage starts and when it ends."""

    def __init__(self, *, progress: bool, prefix: str = "extract-mesh"):
        self.progress, self.prefix = progress, prefix
        self.seconds: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        if self.progress:
            print(f"[{self.prefix}] {name}{': ' + detail if detail else ''} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        sec = time.perf_counter() - start
        self.seconds.append((name, sec))
        if self.progress:
            print(f"[{self.prefix}] {name} done in {sec:.1f} s", file=sys.stderr, flush=True)
