"""Volume renderer: compositing maths, packed vs dense, analytic slab opacity, occupancy skipping, proposal
resampling, depth/normals, nerfacc parity (CUDA only)."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.geometry.rays import Rays
from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid, point_cells, sdf_occupancy_density
from headforge.renderers.proposal import ProposalConfig, ProposalSampler, interlevel_loss, proposal_sample
from headforge.renderers.volume import (
    VolumeRendererConfig,
    accumulate,
    clip_rays,
    composite_dense,
    distortion_loss,
    pack_dense,
    render_dense,
    render_rays,
    render_weights_packed,
    uniform_edges,
)
from headforge.renderers.volume_nerfacc import nerfacc_available, render_weights_nerfacc
from headforge.representations.fields.field import FieldOutput

LO, HI = torch.tensor([-0.2] * 3), torch.tensor([0.2] * 3)


class SphereField:
    """Analytic stand-in: density ``sigma`` inside a ball (softened over ``soft`` metres), colour by position."""

    def __init__(self, radius=0.1, sigma=300.0, soft=0.0, centre=(0.0, 0.0, 0.0), constant=False):
        self.radius, self.sigma, self.soft, self.constant = radius, sigma, soft, constant
        self.centre = torch.tensor(centre, dtype=torch.float64)

    @property
    def bounds(self):
        return LO, HI

    def density(self, p):
        if self.constant:
            return torch.full_like(p[..., :1], self.sigma)
        r = (p - self.centre.to(p)).norm(dim=-1, keepdim=True)
        if self.soft > 0:
            return self.sigma * torch.sigmoid((self.radius - r) / self.soft)
        return self.sigma * (r < self.radius).to(p.dtype)

    def query(self, p, d, normals=None):
        rgb = torch.stack([0.5 + p[:, 0] * 2, 0.5 + p[:, 1] * 2, torch.full_like(p[:, 0], 0.3)], -1)
        n = (p - self.centre.to(p)) / (p - self.centre.to(p)).norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return FieldOutput(self.density(p), rgb, None, n if normals else None)


class CubeField(SphereField):
    """Density ``sigma`` in the cube |p|_inf < half, whose faces lie on occupancy-grid cell boundaries."""

    def __init__(self, half=0.1, sigma=300.0):
        super().__init__(radius=half, sigma=sigma)

    def density(self, p):
        return self.sigma * (p.abs().amax(-1, keepdim=True) < self.radius).to(p.dtype)


def looking_rays(n: int, dist=0.5, spread=0.15, seed=0, dtype=torch.float32) -> Rays:
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * dist
    target = (torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1) * spread
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return Rays(o.to(dtype), d.to(dtype), torch.ones(n, dtype=dtype))


def test_compositing_hand_computed_three_samples():
    sig = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    t0 = torch.tensor([0.0, 0.5, 0.75], dtype=torch.float64)
    t1 = torch.tensor([0.5, 0.75, 1.75], dtype=torch.float64)
    a = [1 - math.exp(-0.5), 1 - math.exp(-0.5), 1 - math.exp(-3.0)]
    T = [1.0, 1 - a[0], (1 - a[0]) * (1 - a[1])]
    w_expected = torch.tensor([T[i] * a[i] for i in range(3)], dtype=torch.float64)
    w, trans, alphas = render_weights_packed(sig, t0, t1, torch.zeros(3, dtype=torch.long), 1)
    torch.testing.assert_close(w, w_expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(trans, torch.tensor(T, dtype=torch.float64), rtol=0, atol=1e-12)
    wd, _, _ = composite_dense(sig[None], t0[None], t1[None])
    torch.testing.assert_close(wd[0], w_expected, rtol=0, atol=1e-12)
    c = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    rgb = accumulate(w, c, torch.zeros(3, dtype=torch.long), 1)[0]
    torch.testing.assert_close(rgb, w_expected, rtol=0, atol=1e-12)  # colour i picks weight i
    assert abs(float(w.sum()) - (1 - math.exp(-4.0))) < 1e-12  # opacity = 1 - exp(-sum sigma delta)


def test_packed_matches_dense_on_ragged_random_samples():
    g = torch.Generator().manual_seed(1)
    R, S = 50, 40
    counts = torch.randint(0, S + 1, (R,), generator=g)
    sig = torch.rand(R, S, generator=g, dtype=torch.float64) * 20
    deltas = torch.rand(R, S, generator=g, dtype=torch.float64) * 0.05
    t1 = torch.cumsum(deltas, 1)
    t0 = t1 - deltas
    mask = torch.arange(S)[None] < counts[:, None]  # [R, S] ragged prefix of each ray
    wd, _, _ = composite_dense(torch.where(mask, sig, 0), t0, t1)
    ri = torch.arange(R)[:, None].expand(R, S)[mask]
    wp, _, _ = render_weights_packed(sig[mask], t0[mask], t1[mask], ri, R)
    torch.testing.assert_close(wp, wd[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(accumulate(wp, None, ri, R)[:, 0], wd.sum(1), rtol=0, atol=1e-6)


def test_constant_density_slab_gives_analytic_opacity():
    sigma = 7.0
    field = SphereField(sigma=sigma, constant=True)
    rays = looking_rays(64, dtype=torch.float64)
    t_near, t_far, hit = clip_rays(rays.origins, rays.directions, LO, HI, 0.0)
    assert bool(hit.all())
    out = render_rays(field, rays, VolumeRendererConfig(n_samples=16))
    expected = 1 - torch.exp(-sigma * (t_far - t_near))
    torch.testing.assert_close(out.alpha[:, 0], expected, rtol=0, atol=1e-9)


def test_render_matches_dense_reference_and_reports_depth():
    field = SphereField(soft=0.004)
    rays = looking_rays(32, dtype=torch.float64)
    cfg = VolumeRendererConfig(n_samples=64, background=(1.0, 1.0, 1.0))
    packed = render_rays(field, rays, cfg)
    t_near, t_far, hit = clip_rays(rays.origins, rays.directions, LO, HI, 0.0)
    dense = render_dense(field, rays, uniform_edges(t_near, t_far, 64, False), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(packed.rgb, dense.rgb, rtol=0, atol=1e-9)
    torch.testing.assert_close(packed.depth, dense.depth, rtol=0, atol=1e-9)
    # a ray along -z from z = 0.5 enters the ball (r = 0.1, sigma = 300) at 0.4; the expected termination
    # distance of a homogeneous medium is 0.4 + 1 / sigma; depth_z scales with z_scale
    axial = Rays(torch.tensor([[0.0, 0.0, 0.5]]), torch.tensor([[0.0, 0.0, -1.0]]), torch.tensor([0.5]))
    r = render_rays(SphereField(), axial, VolumeRendererConfig(n_samples=400, normals=True))
    assert float(r.alpha) > 0.999
    assert abs(float(r.depth) - (0.4 + 1 / 300)) < 5e-4 and abs(float(r.depth_z) - 0.5 * float(r.depth)) < 1e-7
    torch.testing.assert_close(r.normals[0], torch.tensor([0.0, 0.0, 1.0]), rtol=0, atol=0.01)


def test_distortion_loss_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    edges = torch.sort(torch.rand(3, 9, generator=g, dtype=torch.float64), -1).values
    w = torch.rand(3, 8, generator=g, dtype=torch.float64)
    s = pack_dense(edges)
    m = (edges[:, 1:] + edges[:, :-1]) / 2
    brute = (w[:, :, None] * w[:, None, :] * (m[:, :, None] - m[:, None, :]).abs()).sum((1, 2))
    brute = brute + (w ** 2 * (edges[:, 1:] - edges[:, :-1])).sum(1) / 3
    torch.testing.assert_close(distortion_loss(w.reshape(-1), s), brute.mean(), rtol=1e-10, atol=0)


def test_occupancy_grid_marks_sphere_and_skips_empty_space():
    field = SphereField(radius=0.1, soft=0.002)
    grid = OccupancyGrid(OccupancyConfig(resolution=32, warmup_steps=256), LO, HI)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        grid.update(step, field.density, generator=g)
    # cell centres well inside the ball are occupied, cells well outside are empty
    idx = torch.arange(grid.n_cells)
    centres = grid.lo + (torch.stack([idx // 1024, (idx // 32) % 32, idx % 32], -1) + 0.5) / 32 * 0.4
    r = centres.norm(dim=-1)
    occ = grid.binaries.flatten()
    cell_diag = 0.4 / 32 * math.sqrt(3)
    assert bool(occ[r < 0.1 - cell_diag].all())
    assert not bool(occ[r > 0.1 + cell_diag].any())
    assert grid.occupied_fraction() < 0.1

    # Skipping drops only samples in empty cells. A cube whose faces lie on cell boundaries (0.1 = 8 cells of
    # 0.0125) has exactly-known occupancy, so the skipped render must equal the full march. (For a ball, cells
    # that the surface only grazes can be missed by the random probe, as in nerfacc.)
    cube = CubeField(half=0.1)
    grid = OccupancyGrid(OccupancyConfig(resolution=32), LO, HI)
    grid.update(0, cube.density, generator=g)
    assert abs(grid.occupied_fraction() - (16 / 32) ** 3) < 1e-9
    rays = looking_rays(256)
    cfg = VolumeRendererConfig(background=(0.0, 0.0, 0.0))
    full = render_rays(cube, rays, cfg, sampler=grid.sampler(skip=False))
    skip = render_rays(cube, rays, cfg, sampler=grid.sampler(skip=True))
    assert len(skip.samples) < 0.5 * len(full.samples)
    torch.testing.assert_close(skip.rgb, full.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(skip.alpha, full.alpha, rtol=0, atol=1e-6)
    assert float(full.alpha.max()) > 0.99 and float(full.alpha.min()) < 0.01  # renders the cube and misses


def test_sdf_distance_occupancy_keeps_every_surface_cell_at_any_sharpness():
    """A sphere SDF with a very sharp VolSDF density: scoring cells by distance keeps every cell the surface passes
    through (and the inside); scoring by the density loses surface cells, which is what sdf_occupancy_density is
    for."""
    from headforge.representations.fields.sdf import volsdf_density

    res, r = 24, 0.1
    lo, hi = torch.full((3,), -0.2), torch.full((3,), 0.2)

    def sdf(x):
        return x.norm(dim=-1, keepdim=True) - r

    # cells the sphere's surface passes through: nearest point of the cell within r, farthest beyond r
    edges = torch.linspace(-0.2, 0.2, res + 1)
    a, b = edges[:-1], edges[1:]
    near = torch.where(a > 0, a, torch.where(b < 0, -b, torch.zeros_like(a))) ** 2  # per axis
    far = torch.maximum(a.abs(), b.abs()) ** 2
    n3 = near[:, None, None] + near[None, :, None] + near[None, None, :]
    f3 = far[:, None, None] + far[None, :, None] + far[None, None, :]
    surface = (n3 <= r * r) & (f3 >= r * r)
    beta = torch.tensor(1e-5)
    for mode in ("distance", "density"):
        grid = OccupancyGrid(OccupancyConfig(resolution=res, warmup_steps=10, step_size=5e-4), lo, hi)
        diag, step = grid.cell_diagonal, grid.step_size
        if mode == "distance":
            def fn(x, diag=diag, step=step):
                return sdf_occupancy_density(sdf(x), diag, step)
        else:
            def fn(x):
                return volsdf_density(sdf(x), beta)
        grid.update(0, fn, torch.Generator().manual_seed(0))
        kept = grid.binaries[surface].float().mean()
        if mode == "distance":
            assert float(kept) == 1.0
            inside = point_cells(torch.zeros(1, 3), res, lo, hi)[0]
            assert bool(grid.binaries.flatten()[inside])
            assert grid.occupied_fraction() < 0.2  # the sphere and a one-cell shell: the rest is skipped
        else:
            assert float(kept) < 0.6  # one random point per cell: a sharp density misses most surface cells
    assert grid.cell_diagonal == pytest.approx(math.sqrt(3) * 0.4 / res)


def test_occupancy_update_decays_and_resamples():
    field = SphereField(radius=0.05)
    grid = OccupancyGrid(OccupancyConfig(resolution=16, warmup_steps=1, update_every=2), LO, HI)
    assert grid.update_every_n_steps(0, field.density)  # warmup: all cells
    before = grid.occupied_fraction()
    assert not grid.update_every_n_steps(1, field.density)
    assert grid.update_every_n_steps(2, field.density)  # after warmup: a random subset + occupied cells
    assert 0 < grid.occupied_fraction() <= before + 1e-9


def test_proposal_resampling_concentrates_samples_near_surface():
    field = SphereField(radius=0.1, sigma=500.0, soft=0.001)
    rays = looking_rays(128, spread=0.05)
    o, d = rays.origins, rays.directions
    t_near, t_far, hit = clip_rays(o, d, LO, HI, 0.0)
    cfg = ProposalConfig(samples_per_level=(64, 32), n_samples=32)
    edges, levels = proposal_sample(o, d, t_near, t_far, [field.density, field.density], cfg, stratified=True)
    assert edges.shape == (128, 33) and bool((edges[:, 1:] >= edges[:, :-1]).all())
    # distance of the final sample midpoints to the sphere surface vs uniform samples
    def near_fraction(e):
        mids = (e[:, 1:] + e[:, :-1]) / 2
        pts = o[:, None] + d[:, None] * mids[..., None]
        return float(((pts.norm(dim=-1) - 0.1).abs() < 0.01).float().mean())

    uniform = near_fraction(uniform_edges(t_near, t_far, 32, False))
    resampled = near_fraction(edges)
    assert resampled > 0.5 and resampled > 5 * uniform, (resampled, uniform)

    # interlevel loss: ~0 when the proposal is the field itself, large when it is wrong
    sampler = ProposalSampler(cfg, (field.density, field.density))
    out = render_rays(field, rays, VolumeRendererConfig(), sampler=sampler)
    good = interlevel_loss(out.final_edges, out.weights.reshape(128, 32), out.proposal_levels)
    wrong = SphereField(radius=0.1, sigma=500.0, soft=0.001, centre=(0.0, 0.0, 0.08))
    bad_levels = proposal_sample(o, d, t_near, t_far, [wrong.density] * 2, cfg, False)[1]
    bad = interlevel_loss(out.final_edges, out.weights.reshape(128, 32), bad_levels)
    assert float(good) < 1e-3 and float(bad) > 20 * float(good), (float(good), float(bad))


@pytest.mark.skipif(not nerfacc_available(), reason="nerfacc compositing needs the nerfacc package and CUDA "
                                                    "(pip install nerfacc on a GPU machine)")
def test_nerfacc_compositing_matches_torch():
    g = torch.Generator().manual_seed(2)
    R, S = 64, 48
    counts = torch.randint(0, S + 1, (R,), generator=g)
    mask = torch.arange(S)[None] < counts[:, None]
    deltas = torch.rand(R, S, generator=g) * 0.05
    t1 = torch.cumsum(deltas, 1)
    t0 = t1 - deltas
    sig = torch.rand(R, S, generator=g) * 20
    ri = torch.arange(R)[:, None].expand(R, S)[mask]
    ref, _, _ = render_weights_packed(sig[mask], t0[mask], t1[mask], ri, R)
    got, _, _ = render_weights_nerfacc(sig[mask].cuda(), t0[mask].cuda(), t1[mask].cuda(), ri.cuda(), R)
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-5)


def test_rays_through_empty_space_render_background():
    """A batch whose rays all miss the occupied cells has no samples: it renders the background."""
    from headforge.geometry.rays import Rays
    from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid
    from headforge.renderers.volume import VolumeRendererConfig, render_rays
    from headforge.representations.fields.field import FieldConfig, RadianceField

    field = RadianceField(FieldConfig(encoding="triplane"))
    grid = OccupancyGrid(OccupancyConfig(resolution=8), *field.bounds)
    grid.binaries.zero_()
    rays = Rays(torch.tensor([[0.0, 0.0, 1.0]]).repeat(4, 1), torch.tensor([[0.0, 0.0, -1.0]]).repeat(4, 1),
                torch.ones(4))
    out = render_rays(field, rays, VolumeRendererConfig(), grid.sampler(), background=torch.tensor([0.2, 0.4, 0.6]))
    assert len(out.samples) == 0
    torch.testing.assert_close(out.rgb, torch.tensor([[0.2, 0.4, 0.6]]).repeat(4, 1))
    assert float(out.alpha.detach().abs().max()) == 0


@pytest.mark.parametrize("alpha_thre,eps", [(0.0, 1e-4), (1e-3, 1e-4), (1e-3, 0.0)])
def test_windowed_pruning_matches_single_pass_and_queries_less(alpha_thre, eps):
    """Front-to-back pruning keeps the same samples as the one-pass reference and stops querying opaque rays."""
    from headforge.renderers.volume import prune_invisible, prune_invisible_reference

    field = SphereField(radius=0.1, sigma=400.0, soft=0.003)
    rays = looking_rays(96, spread=0.12, seed=3)
    o, d = rays.origins, rays.directions
    t_near, t_far, hit = clip_rays(o, d, LO, HI, 0.0)
    samples = pack_dense(uniform_edges(t_near, t_far, 200, True, torch.Generator().manual_seed(0)),
                         hit[:, None].expand(-1, 200))
    queried = []

    def sigma_fn(p):
        queried.append(len(p))
        return field.density(p)

    ref = prune_invisible_reference(samples, o, d, field.density, alpha_thre, eps)
    got = prune_invisible(samples, o, d, sigma_fn, alpha_thre, eps, window=16)
    assert len(ref) < len(samples) and torch.equal(got.ray_indices, ref.ray_indices)
    torch.testing.assert_close(got.t_starts, ref.t_starts, rtol=0, atol=0)
    if eps > 0:  # rays through the ball stop being queried once they are opaque
        assert sum(queried) < 0.75 * len(samples), (sum(queried), len(samples))
    if alpha_thre > 0:
        return
    # early stopping alone leaves the image unchanged (the dropped samples carry < 1e-4 of each ray's weight)
    full = render_rays(field, rays, VolumeRendererConfig(n_samples=200))
    pruned = render_rays(field, rays, VolumeRendererConfig(n_samples=200, alpha_thre=alpha_thre, early_stop_eps=eps))
    torch.testing.assert_close(pruned.rgb, full.rgb, rtol=0, atol=2e-4)
