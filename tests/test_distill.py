"""Distillation between field representations: an analytic coloured ball -> hash grid (the teacher) ->
tri-plane / tri-grid students, and back tri-plane -> hash grid. Students must render like the teacher and agree
with its density at the surface; an undistilled student must not (so the checks can fail)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.geometry.rays import generate_rays
from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid
from headforge.renderers.volume import VolumeRendererConfig, render_rays
from headforge.representations.fields.decoders import ColorConfig, DensityConfig, MLPConfig
from headforge.representations.fields.field import FieldConfig, FieldOutput, RadianceField
from headforge.representations.fields.hash_grid import HashGridConfig
from headforge.representations.fields.planes import PlaneConfig
from headforge.stages.distill import (
    DistillConfig,
    distill_field,
    opacity_at_scales,
    rebuild_grid,
    student_config,
)

LO, HI = (-0.15, -0.15, -0.15), (0.15, 0.15, 0.15)
RADIUS = 0.09
MLP = dict(density=DensityConfig(mlp=MLPConfig(hidden=32, layers=1), geo_features=7),
           color=ColorConfig(mlp=MLPConfig(hidden=32, layers=1), sh_degree=1), prefer_tcnn=False,
           bounds_min=LO, bounds_max=HI)
HASH = FieldConfig(encoding="hashgrid", hashgrid=HashGridConfig(n_levels=8, log2_table_size=14, base_resolution=8,
                                                                max_resolution=128), **MLP)
TRIPLANE = FieldConfig(encoding="triplane", planes=PlaneConfig(resolution=32, channels=8), **MLP)
TRIGRID = FieldConfig(encoding="trigrid", planes=PlaneConfig(resolution=16, channels=8, depth=4), **MLP)  # same memory
FAST = DistillConfig(steps=250, batch_points=4096, pool_rays=2048, pool_points=32768, pool_refresh=100,
                     lr=2e-2, lr_final=2e-3, grid_rounds=2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these many small ops are much faster without OpenMP hand-offs (50x on contended cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ColouredBall:
    """Analytic field: a ball of radius RADIUS, density 2000/m with a ~1 mm soft edge; red-ish for x > 0,
    blue-ish for x < 0, with a green band pattern along y (no view dependence)."""

    def __init__(self):
        self.lo, self.hi = torch.tensor(LO), torch.tensor(HI)

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        return self.lo, self.hi

    def density(self, points: Tensor) -> Tensor:  # [..., 3] -> [..., 1]
        r = points.norm(dim=-1, keepdim=True)
        return 2000.0 * torch.sigmoid((RADIUS - r) / 0.001)

    def color(self, points: Tensor, directions: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
        side = torch.sigmoid(points[..., :1] / 0.01)
        green = 0.5 + 0.35 * torch.sin(points[..., 1:2] * 40)
        return torch.cat([0.1 + 0.8 * side, green, 0.9 - 0.8 * side], -1)

    def query(self, points: Tensor, directions: Tensor, normals: bool | None = None) -> FieldOutput:
        return FieldOutput(self.density(points), self.color(points, directions))


def render(field, grid: OccupancyGrid, n_views: int = 4, resolution: int = 40) -> Tensor:  # -> [B, H, W, 3]
    cams = make_rig(RigConfig(kind=RigKind.SPHERE, num_views=n_views, resolution=resolution, subject_radius=0.11))
    rays = generate_rays(cams)
    with torch.no_grad():
        return render_rays(field, rays, VolumeRendererConfig(background=(1.0, 1.0, 1.0)), grid.sampler()).rgb


def psnr_between(a: Tensor, b: Tensor) -> float:
    return -10 * math.log10(max(float((a - b).square().mean()), 1e-12))


def surface_points(n: int = 4000) -> Tensor:  # [n, 3] within 4 mm of the ball's surface
    g = torch.Generator().manual_seed(1)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return dirs * (RADIUS + (torch.rand(n, 1, generator=g) * 2 - 1) * 0.004)


def alpha_error(a, b, points: Tensor, delta: float) -> float:  # mean |alpha_a - alpha_b| over a delta interval
    d = torch.tensor([delta])
    with torch.no_grad():
        return float((opacity_at_scales(a.density(points), d) - opacity_at_scales(b.density(points), d)).abs().mean())


@pytest.fixture(scope="module")
def teacher():
    ball = ColouredBall()
    ball_grid = rebuild_grid(ball, OccupancyGrid(OccupancyConfig(resolution=32), ball.lo, ball.hi), 2,
                             torch.Generator().manual_seed(0))
    res = distill_field(ball, ball_grid, HASH, dataclasses.replace(FAST, steps=400), progress=False)
    # the teacher itself must be a faithful ball (else student-vs-teacher agreement would prove nothing)
    assert psnr_between(render(res.student, res.grid), render(ball, ball_grid)) > 25
    return res


def check_student(student_res, teacher_res, label: str) -> float:
    ref = render(teacher_res.student, teacher_res.grid)
    got = render(student_res.student, student_res.grid)
    p = psnr_between(got, ref)
    assert p > 25, f"{label}: student renders only {p:.1f} dB from the teacher's"
    delta = float(teacher_res.grid.step_size)
    err = alpha_error(student_res.student, teacher_res.student, surface_points(), 4 * delta)
    assert err < 0.1, f"{label}: surface opacity differs by {err:.3f}"
    return p


@pytest.mark.parametrize("student_cfg", [TRIPLANE, TRIGRID], ids=["triplane", "trigrid"])
def test_hashgrid_teacher_distils_into_planes(teacher, student_cfg):
    res = distill_field(teacher.student, teacher.grid, student_cfg, FAST, progress=False)
    assert res.steps == FAST.steps and res.history and res.seconds > 0
    assert res.student.cfg.encoding == student_cfg.encoding
    assert torch.equal(res.student.bounds_lo, teacher.student.bounds_lo)
    assert 0 < res.grid.occupied_fraction() < 0.5  # the ball (~13% of the box) plus a margin of cells
    p = check_student(res, teacher, student_cfg.encoding)
    # an undistilled student (same config, freshly initialised) is far off: the checks above can fail
    fresh = RadianceField(student_config(student_cfg, teacher.student)).eval()
    fresh_grid = rebuild_grid(fresh, teacher.grid, 1, torch.Generator().manual_seed(0))
    p_fresh = psnr_between(render(fresh, fresh_grid), render(teacher.student, teacher.grid))
    assert p_fresh < 15 and p > p_fresh + 10, (p, p_fresh)
    assert alpha_error(fresh, teacher.student, surface_points(), 4 * float(teacher.grid.step_size)) > 0.3


def test_distil_back_triplane_to_hashgrid(teacher):
    plane = distill_field(teacher.student, teacher.grid, TRIPLANE, FAST, progress=False)
    back = distill_field(plane.student, plane.grid, HASH, dataclasses.replace(FAST, seed=1), progress=False)
    assert back.student.cfg.encoding == "hashgrid"
    check_student(back, plane, "triplane -> hashgrid")
    check_student(back, teacher, "hashgrid -> triplane -> hashgrid")


def test_distill_config_validation_and_time_budget(teacher):
    with pytest.raises(ValueError, match="sum to <= 1"):
        DistillConfig(uniform_share=0.7, occupied_share=0.5)
    with pytest.raises(ValueError, match="alpha_scales"):
        DistillConfig(alpha_scales=())
    res = distill_field(teacher.student, teacher.grid, TRIPLANE,
                        dataclasses.replace(FAST, steps=10_000, max_seconds=0.5), progress=False)
    assert 0 < res.steps < 10_000
    empty = OccupancyGrid(OccupancyConfig(resolution=8), teacher.grid.lo, teacher.grid.hi)
    empty.binaries.zero_()
    with pytest.raises(RuntimeError, match="no occupied cell"):
        distill_field(teacher.student, empty, TRIPLANE, dataclasses.replace(FAST, steps=2), progress=False)
