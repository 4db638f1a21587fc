"""Neural fields: hash-grid indexing/interpolation/gradients, tri-grid sampling, tri-grid(D=1) == tri-plane,
VolSDF, geometric init, the field interface, tiny-cuda-nn parity (CUDA only) and a small fitting run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headforge.geometry.rays import Rays
from headforge.renderers.volume import VolumeRendererConfig, render_rays
from headforge.representations.fields.decoders import ColorConfig, DensityConfig, MLPConfig
from headforge.representations.fields.field import FieldConfig, RadianceField
from headforge.representations.fields.hash_grid import (
    PRIMES,
    HashGridConfig,
    HashGridEncoding,
    hash_grid_encode,
    hash_grid_layout,
    tcnn_available,
)
from headforge.representations.fields.planes import (
    PLANE_AXES,
    PlaneConfig,
    TriGridEncoding,
    TriPlaneEncoding,
    sample_trigrid,
)
from headforge.representations.fields.sdf import (
    SDFConfig,
    eikonal_loss,
    volsdf_density,
    volsdf_silhouette_offset,
)

SMALL_KW = dict(n_levels=3, log2_table_size=6, n_features=2, base_resolution=3, max_resolution=17)
SMALL = HashGridConfig(**SMALL_KW)


def test_hash_grid_layout_dense_then_hashed():
    lay = hash_grid_layout(SMALL)
    assert lay.resolutions[0] ** 3 <= 64 and lay.n_dense >= 1  # the coarse level fits the table: dense
    assert lay.resolutions[-1] ** 3 > 64 and lay.sizes[-1] == 64  # the finest is hashed
    assert lay.offsets == tuple(np.cumsum((0,) + lay.sizes[:-1]))
    assert all(s % 8 == 0 for s in lay.sizes)


def reference_encode(x: np.ndarray, table: np.ndarray, cfg: HashGridConfig) -> np.ndarray:
    """Direct per-point loops: tiny-cuda-nn's positions, uint32 hash, trilinear weights."""
    lay = hash_grid_layout(cfg)
    out = np.zeros((len(x), cfg.n_levels, cfg.n_features))
    for n, p in enumerate(x):
        for lvl in range(cfg.n_levels):
            pos = p * lay.scales[lvl] + 0.5
            base = np.floor(pos).astype(np.int64)
            frac = pos - base
            for cz in (0, 1):
                for cy in (0, 1):
                    for cx in (0, 1):
                        i, j, k = base[0] + cx, base[1] + cy, base[2] + cz
                        res = lay.resolutions[lvl]
                        if lvl < lay.n_dense:
                            local = (i + j * res + k * res * res) % lay.sizes[lvl]
                        else:
                            h = (i * PRIMES[0]) ^ ((j * PRIMES[1]) & 0xFFFFFFFF) ^ ((k * PRIMES[2]) & 0xFFFFFFFF)
                            local = (h & 0xFFFFFFFF) % lay.sizes[lvl]
                        w = ((frac[0] if cx else 1 - frac[0]) * (frac[1] if cy else 1 - frac[1])
                             * (frac[2] if cz else 1 - frac[2]))
                        out[n, lvl] += w * table[lay.offsets[lvl] + local]
    return out.reshape(len(x), -1)


def test_hash_grid_matches_direct_trilinear_reference():
    enc = HashGridEncoding(SMALL).double()
    with torch.no_grad():
        enc.table.normal_()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, generator=g, dtype=torch.float64)
    x[0] = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    x[1] = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    got = enc(x).detach().numpy()
    ref = reference_encode(x.numpy(), enc.table.detach().numpy(), SMALL)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_hash_grid_gradients_finite_differences():
    table = torch.randn(hash_grid_layout(SMALL).total_size, 2, dtype=torch.float64, requires_grad=True)
    x = torch.rand(12, 3, dtype=torch.float64) * 0.9 + 0.05
    lay = hash_grid_layout(SMALL)
    assert torch.autograd.gradcheck(lambda t: hash_grid_encode(x, t, lay), (table,), eps=1e-6, atol=1e-7)
    xg = x.clone().requires_grad_(True)  # positions (normals / eikonal) away from cell boundaries
    assert torch.autograd.gradcheck(lambda p: hash_grid_encode(p, table.detach(), lay), (xg,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("n_features", [2, 4])
def test_hash_grid_cpu_kernel_matches_torch_values_and_table_gradients(n_features):
    """The compiled CPU kernel (float32) against the torch path: values and table gradients, dense and hashed
    levels, points on the box faces and corners included. Tolerances: float32 summation order only."""
    from headforge.representations.fields import hash_cpu

    cfg = HashGridConfig(n_levels=8, log2_table_size=12, n_features=n_features, base_resolution=4,
                         max_resolution=96)
    lay = hash_grid_layout(cfg)
    assert 0 < lay.n_dense < cfg.n_levels  # both kinds of level are exercised
    g = torch.Generator().manual_seed(1)
    table = (torch.rand(lay.total_size, n_features, generator=g) * 2 - 1).requires_grad_(True)
    x = torch.rand(3000, 3, generator=g)
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.2, -0.1, 0.999]])  # clamped
    ref = hash_grid_encode(x, table, lay)
    got = hash_cpu.hash_grid_encode_cpu(x, table, lay)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    w = torch.randn(ref.shape, generator=g)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), table)
    (g_got,) = torch.autograd.grad((got * w).sum(), table)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-5)


def test_hash_grid_backend_choice():
    """auto: the kernel only for float32 CPU points without grad (normals / eikonal need the torch path);
    cpu: an error where the kernel cannot serve; torch: never the kernel. All give the same values."""
    x = torch.rand(64, 3)
    auto, cpu, plain = (HashGridEncoding(HashGridConfig(**SMALL_KW, backend=b)) for b in ("auto", "cpu", "torch"))
    cpu.load_state_dict(auto.state_dict())
    plain.load_state_dict(auto.state_dict())
    assert auto.use_kernel(x) and not plain.use_kernel(x)
    xg = x.clone().requires_grad_(True)
    assert not auto.use_kernel(xg) and not auto.use_kernel(x.double())
    with pytest.raises(ValueError, match="no gradient"):
        cpu(xg)
    (grad,) = torch.autograd.grad(auto(xg).sum(), xg)  # positions get their gradient from the torch path
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(auto(x), plain(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cpu(x), plain(x), rtol=1e-5, atol=1e-6)


def test_hash_grid_is_continuous_across_cell_boundaries():
    enc = HashGridEncoding(SMALL).double()
    with torch.no_grad():
        enc.table.normal_()
    lay = enc.layout
    eps = 1e-9
    for lvl, scale in enumerate(lay.scales):
        for axis in range(3):
            # a vertex plane of this level: pos = x * scale + 0.5 is an integer
            b = (2 - 0.5) / scale
            x = torch.full((2, 3), 0.37, dtype=torch.float64)
            x[0, axis], x[1, axis] = b - eps, b + eps
            f = enc(x).detach()
            jump = (f[0] - f[1]).abs().max()
            assert jump < 1e-6, (lvl, axis, float(jump))


def numpy_trilinear_border(vol: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """vol [C, D, H, W], coords (x -> W, y -> H, z -> D) in [-1, 1], align_corners=False, border clamp."""
    C, D, H, W = vol.shape
    out = np.zeros(C)
    sizes = (W, H, D)
    pix = [min(max(((c + 1) * s - 1) / 2, 0), s - 1) for c, s in zip(coords, sizes, strict=True)]
    i0 = [int(np.floor(p)) for p in pix]
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = [min(i0[0] + dx, W - 1), min(i0[1] + dy, H - 1), min(i0[2] + dz, D - 1)]
                w = 1.0
                for a, d in enumerate((dx, dy, dz)):
                    f = pix[a] - i0[a]
                    w *= f if d else 1 - f
                out += w * vol[:, idx[2], idx[1], idx[0]]
    return out


def test_trigrid_matches_numpy_trilinear_reference():
    g = torch.Generator().manual_seed(0)
    vols = torch.randn(3, 4, 3, 5, 6, generator=g, dtype=torch.float64)  # non-square to catch axis swaps
    x = torch.rand(25, 3, generator=g, dtype=torch.float64) * 2.2 - 1.1  # includes points beyond the border
    got = sample_trigrid(vols, x, "concat").numpy()
    for n, p in enumerate(x.numpy()):
        ref = [numpy_trilinear_border(vols[k].numpy(), p[list(PLANE_AXES[k])]) for k in range(3)]
        np.testing.assert_allclose(got[n], np.concatenate(ref), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sample_trigrid(vols, x, "sum").numpy(), got.reshape(25, 3, 4).sum(1), atol=1e-12)


def test_trigrid_depth_one_equals_triplane_and_depth_separates():
    tp = TriPlaneEncoding(PlaneConfig(resolution=16, channels=5)).double()
    x = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    for depth in (1, 4):
        tg = TriGridEncoding.from_triplane(tp, depth=depth).double()
        torch.testing.assert_close(tg(x), tp(x), rtol=0, atol=1e-12)
    # with D > 1 the front (z > 0) and back (z < 0) of the xy plane get different features
    tg = TriGridEncoding(PlaneConfig(resolution=16, channels=5, depth=4)).double()
    front, back = x.clone(), x.clone()
    front[:, 2], back[:, 2] = 0.8, -0.8
    assert (tg(front) - tg(back)).abs().max() > 1e-3


def test_volsdf_density_is_monotone_and_bounded():
    beta = torch.tensor(0.01, dtype=torch.float64)
    sdf = torch.linspace(-0.1, 0.1, 2001, dtype=torch.float64)[:, None]
    sigma = volsdf_density(sdf, beta)[:, 0]
    assert bool((sigma[1:] <= sigma[:-1]).all())  # increasing in -sdf
    assert abs(float(volsdf_density(torch.zeros(1, 1, dtype=torch.float64), beta)) - 0.5 / 0.01) < 1e-9
    assert float(sigma[0]) <= 1 / 0.01 + 1e-9 and float(sigma[-1]) < 1e-2


@pytest.mark.parametrize("radius, beta", [(0.03, 2e-4), (0.08, 1e-3), (0.01, 1e-4)])
def test_volsdf_silhouette_offset_matches_a_grazing_ray_through_a_sphere(radius, beta):
    """The closed form against numerical quadrature: the impact parameter at which a ray past a VolSDF sphere
    gathers opacity 1/2 lies radius + h from the centre (within 2% of h)."""
    t = torch.linspace(-radius, radius, 100_001, dtype=torch.float64)  # 0.2-1.6 um steps; the tail is tiny

    def opacity(h: float) -> float:
        d = torch.sqrt(t ** 2 + (radius + h) ** 2) - radius  # distance to the sphere along the ray
        tau = torch.trapezoid(volsdf_density(d[:, None], torch.tensor(beta, dtype=torch.float64))[:, 0], t)
        return 1 - math.exp(-float(tau))

    lo, hi = 0.0, 20 * beta
    for _ in range(40):  # opacity falls with h
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if opacity(mid) > 0.5 else (lo, mid)
    h = volsdf_silhouette_offset(beta, radius)
    assert 2.5 * beta < h < 4 * beta
    assert abs(lo - h) < 0.02 * h, f"quadrature {lo * 1e3:.4f} mm vs closed form {h * 1e3:.4f} mm"
    with pytest.raises(ValueError):
        volsdf_silhouette_offset(0.0, radius)


def test_geometric_init_is_a_sphere_with_unit_gradient():
    # SAL's init is exact in the wide limit with a sharp activation (hidden 1024, Softplus beta 1000); the
    # default (64 wide, beta 100) gives eikonal ~0.02-0.07 and a sphere within ~2 cm.
    cfg = FieldConfig(sdf=True, hashgrid=HashGridConfig(n_levels=4, log2_table_size=12, max_resolution=64),
                      sdf_net=SDFConfig(mlp=MLPConfig(hidden=1024, layers=1), init_radius=0.1, softplus_beta=1000.0))
    field = RadianceField(cfg).double()
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    radii = torch.rand(500, 1, generator=g, dtype=torch.float64) * 0.15 + 0.03
    pts = dirs * radii
    with torch.no_grad():
        out = field.query(pts, dirs)
    assert float(eikonal_loss(out.gradients)) < 0.01
    # SDF ~ |p| - r: zero level set near the init radius, normals radial
    assert float((out.sdf - (radii - 0.1)).abs().mean()) < 0.005
    assert float((out.normals * dirs).sum(-1).mean()) > 0.98
    # a default-initialised network is no SDF (the check can fail)
    plain = RadianceField(cfg).double()
    for lin in plain.sdf_net.linears:
        torch.nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
    with torch.no_grad():
        assert float(eikonal_loss(plain.query(pts, dirs).gradients)) > 0.1


@pytest.mark.parametrize("encoding", ["hashgrid", "triplane", "trigrid"])
@pytest.mark.parametrize("sdf", [False, True])
def test_field_query_shapes_and_eikonal_backward(encoding, sdf):
    cfg = FieldConfig(encoding=encoding, sdf=sdf, prefer_tcnn=False,
                      hashgrid=HashGridConfig(n_levels=4, log2_table_size=10, max_resolution=64),
                      planes=PlaneConfig(resolution=16, channels=8, depth=3))
    field = RadianceField(cfg)
    pts = torch.rand(2, 50, 3) * 0.5 - 0.25  # some outside the box
    dirs = torch.nn.functional.normalize(torch.randn(2, 50, 3), dim=-1)
    out = field.query(pts, dirs)
    assert out.density.shape == (2, 50, 1) and out.rgb.shape == (2, 50, 3)
    outside = (pts.abs() > 0.2).any(-1)
    assert bool((out.density[outside] == 0).all()) and bool((out.density >= 0).all())
    if sdf:
        assert out.sdf.shape == (2, 50, 1) and out.normals.shape == (2, 50, 3)
        # geometric init zeroes the encoding's first-layer weights; wake them so the eikonal term reaches it
        with torch.no_grad():
            field.sdf_net.linears[0].weight[:, 3:].normal_(0, 0.1)
        out = field.query(pts, dirs)
        eikonal_loss(out.gradients).backward()
        params = next(field.encoding.parameters())
        assert params.grad is not None and float(params.grad.abs().sum()) > 0  # double backward through it
        fd = RadianceField(FieldConfig(**{**cfg.__dict__, "gradient": "finite_difference"}))
        fd.load_state_dict(field.state_dict())
        torch.testing.assert_close(fd.gradient(pts[0, :10]), field.gradient(pts[0, :10]), rtol=0, atol=2e-2)
    else:
        assert out.sdf is None and out.normals is None
        out.rgb.mean().backward()
        assert float(next(field.encoding.parameters()).grad.abs().sum()) > 0
        with pytest.raises(RuntimeError, match="no SDF"):
            field.sdf(pts)


@pytest.mark.skipif(not tcnn_available(), reason="tiny-cuda-nn comparison needs tinycudann and CUDA "
                                                 "(no wheel: build it from source on a GPU machine)")
def test_tcnn_hash_grid_matches_torch():
    from headforge.representations.fields.hash_grid import TcnnHashGridEncoding

    cfg = HashGridConfig(n_levels=8, log2_table_size=14, max_resolution=256)
    ref = HashGridEncoding(cfg)
    with torch.no_grad():
        ref.table.normal_()
    fast = TcnnHashGridEncoding(cfg).cuda()
    fast.load_torch_table(ref.table)
    x = torch.rand(4096, 3) * 0.9 + 0.05
    torch.testing.assert_close(fast(x.cuda()).cpu(), ref(x).detach(), rtol=1e-3, atol=1e-3)


def test_hash_grid_field_fits_a_coloured_sphere():
    """200 Adam steps on rays through an analytic red/blue ball; the photometric loss must drop >= 50x."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 512
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 0.5
    target_pts = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.15
    rays = Rays(o, torch.nn.functional.normalize(target_pts - o, dim=-1), torch.ones(n))
    # analytic target: where the ray meets the ball |p| < 0.1 it takes red (x > 0) or blue; white background
    oc = (rays.origins * rays.directions).sum(-1)
    disc = oc ** 2 - (rays.origins.square().sum(-1) - 0.01)
    hit = disc > 0
    t_hit = -oc - disc.clamp_min(0).sqrt()
    x_hit = rays.origins[:, 0] + t_hit * rays.directions[:, 0]
    colour = torch.where((x_hit > 0)[:, None], torch.tensor([1.0, 0.1, 0.1]), torch.tensor([0.1, 0.1, 1.0]))
    target = torch.where(hit[:, None], colour, torch.ones(3))
    cfg = FieldConfig(hashgrid=HashGridConfig(n_levels=6, log2_table_size=12, base_resolution=8, max_resolution=64),
                      density=DensityConfig(mlp=MLPConfig(hidden=32, layers=1), geo_features=7),
                      color=ColorConfig(mlp=MLPConfig(hidden=32, layers=1), sh_degree=1), prefer_tcnn=False)
    field = RadianceField(cfg)
    rcfg = VolumeRendererConfig(n_samples=24, stratified=True, background=(1.0, 1.0, 1.0))
    opt = torch.optim.Adam(field.parameters(), lr=2e-2, eps=1e-15)
    losses = []
    for _ in range(200):
        batch = torch.randint(n, (128,), generator=g)
        sub = Rays(rays.origins[batch], rays.directions[batch], rays.z_scale[batch])
        loss = (render_rays(field, sub, rcfg).rgb - target[batch]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        final = float((render_rays(field, rays, VolumeRendererConfig(n_samples=64, background=(1.0, 1.0, 1.0)))
                       .rgb - target).square().mean())
    initial = float(np.mean(losses[:5]))
    assert final < initial / 50, (initial, final)


@pytest.mark.parametrize("encoding", ["hashgrid", "triplane", "trigrid"])
def test_fields_accept_zero_points(encoding):
    """A render chunk whose rays all land in empty space queries the field with no points."""
    from headforge.representations.fields.field import FieldConfig, RadianceField

    field = RadianceField(FieldConfig(encoding=encoding))
    out = field.query(torch.zeros(0, 3), torch.zeros(0, 3))
    assert out.density.shape == (0, 1) and out.rgb.shape == (0, 3)


def test_volsdf_beta_annealing_caps_beta_and_old_state_dicts_load():
    from headforge.stages.field_train import FieldTrainConfig, beta_cap

    cfg = FieldTrainConfig(field=FieldConfig(encoding="triplane", sdf=True), steps=100, beta_final=1e-3)
    b0 = cfg.field.sdf_net.volsdf.beta_init
    assert beta_cap(cfg, 0) == pytest.approx(b0) and beta_cap(cfg, 100) == pytest.approx(1e-3)
    assert beta_cap(cfg, 50) == pytest.approx(math.sqrt(b0 * 1e-3)) and beta_cap(cfg, 500) == pytest.approx(1e-3)
    assert beta_cap(FieldTrainConfig(steps=100), 50) == math.inf
    # a time budget further along than the steps takes over; one behind them changes nothing
    assert beta_cap(cfg, 10, budget_share=0.5) == pytest.approx(math.sqrt(b0 * 1e-3))
    assert beta_cap(cfg, 50, budget_share=0.1) == pytest.approx(beta_cap(cfg, 50))
    with pytest.raises(ValueError, match="set max_seconds"):
        FieldTrainConfig(anneal_over_budget=True)
    with pytest.raises(ValueError, match="SDF field"):
        FieldTrainConfig(beta_final=1e-3)  # density fields have no beta
    field = RadianceField(FieldConfig(encoding="triplane", sdf=True))
    field.volsdf.beta_max.fill_(2e-3)
    assert float(field.volsdf.beta.detach()) == pytest.approx(2e-3)  # the learnt beta (1e-2) is capped
    state = field.state_dict()
    reloaded = RadianceField(field.cfg)
    reloaded.load_state_dict(state)
    assert float(reloaded.volsdf.beta.detach()) == pytest.approx(2e-3)  # the cap is saved with the field
    old = {k: v for k, v in state.items() if not k.endswith("beta_max")}  # saved before annealing existed
    fresh = RadianceField(field.cfg)
    fresh.load_state_dict(old)
    assert float(fresh.volsdf.beta.detach()) == pytest.approx(b0)


def test_anneal_over_budget_decays_the_lr_with_the_time_spent():
    """With anneal_over_budget the lr follows the share of max_seconds spent (half the budget gone after one step
    of 1000: lr x decay^(steps / 2)); without it the same step decays the lr by one step only."""
    from headforge.stages import field_train as ft

    cfg = ft.FieldTrainConfig(steps=1000, lr=1e-2, lr_final=1e-4, max_seconds=1000.0, anneal_over_budget=True)
    budget = ft.BudgetClock(cfg)
    budget.t0 -= 500.0  # as if half of the 1000 s budget had been spent
    assert budget.share() == pytest.approx(0.5, abs=1e-3)
    assert ft.BudgetClock(ft.FieldTrainConfig(max_seconds=1000.0)).share() == 0.0  # off: the steps alone
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=cfg.lr)
    task = ft.FieldTask.__new__(ft.FieldTask)  # update() needs only these
    task.optimizer, task.cfg, task.budget = optimizer, cfg, budget
    task.decay = (cfg.lr_final / cfg.lr) ** (1 / cfg.steps)
    task.update(1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-2)  # sqrt(1e-2 x 1e-4): half-way
    task.cfg = ft.FieldTrainConfig(steps=1000, lr=1e-2, lr_final=1e-4)
    optimizer.param_groups[0]["lr"] = 1e-2
    task.update(1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * task.decay)
