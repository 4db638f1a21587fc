"""Gaussian-splat rasterizer: torch path vs a brute-force per-pixel reference and finite differences,
the compiled CPU path vs the torch path, culling, and the gsplat adapter (CUDA only)."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.errors import HeadforgeError
from headforge.renderers.gaussian_raster import gsplat_available, rasterize_gaussians

# ----------------------------------------------------------------------------- scenes


def look_at(eyes: list[tuple[float, float, float]]) -> torch.Tensor:  # -> [C, 4, 4] OpenCV world-to-camera
    mats = []
    for eye in eyes:
        e = torch.tensor(eye, dtype=torch.float64)
        fwd = -e / e.norm()
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), fwd)
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        M = torch.eye(4, dtype=torch.float64)
        M[:3, :3] = torch.stack([right, down, fwd])
        M[:3, 3] = -M[:3, :3] @ e
        mats.append(M)
    return torch.stack(mats)


def make_scene(n: int, width: int, height: int, cams: int = 1, sh_degree: int | None = None, focal: float = 1.0,
               scale: tuple[float, float] = (0.01, 0.03), seed: int = 0, dtype=torch.float64) -> dict:
    """n Gaussians in a 0.1 m ball at the origin, cameras 0.6 m away looking at it."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    means = d / d.norm(dim=-1, keepdim=True) * 0.1 * torch.rand(n, 1, generator=g, dtype=torch.float64) ** (1 / 3)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 3, generator=g, dtype=torch.float64)
    opacities = (0.2 + 1.0 * torch.rand(n, generator=g, dtype=torch.float64)).clamp(max=1.0)  # some at 1
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    else:
        colors = 0.4 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64)
    w2c = look_at([(0.6 * math.sin(0.4 * i), 0.05 * i, -0.6 * math.cos(0.4 * i)) for i in range(cams)])
    f = focal * width
    K = torch.tensor([[f, 0, width / 2 + 0.3], [0, f * 1.05, height / 2 - 0.2], [0, 0, 1]], dtype=torch.float64)
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                   world_to_camera=w2c, Ks=K.expand(cams, 3, 3).clone())
    return {k: v.to(dtype) for k, v in tensors.items()}


def render(scene: dict, width: int, height: int, grad: bool = False, **kw):
    inputs = {k: (v.clone().requires_grad_(grad) if k not in ("world_to_camera", "Ks") else v)
              for k, v in scene.items()}
    return inputs, rasterize_gaussians(**inputs, width=width, height=height, **kw)


# ----------------------------------------------------------------------------- brute force (graphdeco SH)

SH_C1 = 0.4886025119029199
SH_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
SH_C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435]


def graphdeco_sh(deg: int, sh: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [K, 3], unit [3] -> [3]
    x, y, z = d.tolist()
    r = 0.28209479177387814 * sh[0]
    if deg > 0:
        r = r - SH_C1 * y * sh[1] + SH_C1 * z * sh[2] - SH_C1 * x * sh[3]
    if deg > 1:
        xx, yy, zz = x * x, y * y, z * z
        r = (r + SH_C2[0] * x * y * sh[4] + SH_C2[1] * y * z * sh[5] + SH_C2[2] * (2 * zz - xx - yy) * sh[6]
             + SH_C2[3] * x * z * sh[7] + SH_C2[4] * (xx - yy) * sh[8])
    if deg > 2:
        r = (r + SH_C3[0] * y * (3 * xx - yy) * sh[9] + SH_C3[1] * x * y * z * sh[10]
             + SH_C3[2] * y * (4 * zz - xx - yy) * sh[11] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[12]
             + SH_C3[4] * x * (4 * zz - xx - yy) * sh[13] + SH_C3[5] * z * (xx - yy) * sh[14]
             + SH_C3[6] * x * (xx - 3 * yy) * sh[15])
    return r


def brute_force(scene: dict, W: int, H: int, sh_degree=None, background=None, antialiased=False,
                near=0.01, far=1e10, eps2d=0.3):
    """Python loops over pixels and depth-sorted Gaussians (float64), gsplat's formulas written out."""
    means, quats, scales = scene["means"], scene["quats"], scene["scales"]
    C, N = len(scene["world_to_camera"]), len(means)
    rgb, alpha, depth = torch.zeros(C, H, W, 3), torch.zeros(C, H, W, 1), torch.zeros(C, H, W, 1)
    rgb, alpha, depth = rgb.double(), alpha.double(), depth.double()
    radii = torch.zeros(C, N, dtype=torch.int32)
    for c in range(C):
        R, t = scene["world_to_camera"][c, :3, :3], scene["world_to_camera"][c, :3, 3]
        fx, fy, cx, cy = (scene["Ks"][c, i, j].item() for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
        splats = []
        for i in range(N):
            w, x, y, z = (quats[i] / quats[i].norm()).tolist()
            Rq = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                               [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                               [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]],
                              dtype=torch.float64)
            M = Rq @ torch.diag(scales[i])
            mc, Sc = R @ means[i] + t, R @ (M @ M.T) @ R.T
            zc = mc[2].item()
            if not near < zc < far:
                continue
            limx, limy = 0.3 * 0.5 * W / fx, 0.3 * 0.5 * H / fy
            tx = zc * min(max(mc[0].item() / zc, -(cx / fx + limx)), (W - cx) / fx + limx)
            ty = zc * min(max(mc[1].item() / zc, -(cy / fy + limy)), (H - cy) / fy + limy)
            J = torch.tensor([[fx / zc, 0, -fx * tx / zc**2], [0, fy / zc, -fy * ty / zc**2]], dtype=torch.float64)
            cov = J @ Sc @ J.T
            det0 = torch.linalg.det(cov).item()
            cov = cov + eps2d * torch.eye(2, dtype=torch.float64)
            det = torch.linalg.det(cov).item()
            if det <= 0:
                continue
            b = 0.5 * (cov[0, 0] + cov[1, 1]).item()
            radius = math.ceil(3 * math.sqrt(b + math.sqrt(max(b * b - det, 0.01))))
            mx, my = fx * mc[0].item() / zc + cx, fy * mc[1].item() / zc + cy
            if mx + radius <= 0 or mx - radius >= W or my + radius <= 0 or my - radius >= H:
                continue
            radii[c, i] = radius
            tiles = [min(max(f(v / 16 + s * radius / 16), 0), n) for f, v, s, n in
                     ((math.floor, mx, -1, (W + 15) // 16), (math.floor, my, -1, (H + 15) // 16),
                      (math.ceil, mx, 1, (W + 15) // 16), (math.ceil, my, 1, (H + 15) // 16))]
            o = scene["opacities"][i].item() * (math.sqrt(max(det0 / det, 0)) if antialiased else 1)
            if sh_degree is None:
                col = scene["colors"][i]
            else:
                view = means[i] - (-R.T @ t)
                col = (graphdeco_sh(sh_degree, scene["colors"][i], view / view.norm()) + 0.5).clamp(min=0)
            splats.append((zc, i, mx, my, torch.linalg.inv(cov), o, col, tiles))
        splats.sort(key=lambda s: (s[0], s[1]))
        for py in range(H):
            for px in range(W):
                T, acc, acc_z = 1.0, torch.zeros(3, dtype=torch.float64), 0.0
                for zc, _, mx, my, Q, o, col, (x0, y0, x1, y1) in splats:
                    if not (x0 <= px // 16 < x1 and y0 <= py // 16 < y1):
                        continue
                    d = torch.tensor([mx - px - 0.5, my - py - 0.5], dtype=torch.float64)
                    sigma = 0.5 * (d @ Q @ d).item()
                    a = min(0.999, o * math.exp(-sigma))
                    if sigma < 0 or a < 1 / 255:
                        continue
                    if T * (1 - a) <= 1e-4:
                        break
                    acc, acc_z, T = acc + a * T * col, acc_z + a * T * zc, T * (1 - a)
                bg = torch.zeros(3, dtype=torch.float64) if background is None else background.expand(C, 3)[c]
                rgb[c, py, px] = acc + T * bg
                alpha[c, py, px, 0] = 1 - T
                depth[c, py, px, 0] = acc_z / max(1 - T, 1e-10)
    return rgb, alpha, depth, radii


@pytest.mark.parametrize("size, n, max_scale, cams, sh_degree, antialiased, with_bg", [
    ((16, 12), 20, 0.04, 1, None, False, False),  # saturates: sensitive to the 0.999 alpha clamp
    ((16, 12), 20, 0.03, 2, 3, True, True),
    ((40, 28), 30, 0.03, 1, 2, False, True),  # several/partial tiles; sensitive to the 1e-4 stop
])
def test_torch_matches_brute_force(size, n, max_scale, cams, sh_degree, antialiased, with_bg):
    W, H = size
    scene = make_scene(n, W, H, cams=cams, sh_degree=sh_degree, focal=1.2, scale=(0.01, max_scale), seed=1)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64) if with_bg else None
    _, out = render(scene, W, H, sh_degree=sh_degree, background=bg, antialiased=antialiased, backend="torch")
    rgb, alpha, depth, radii = brute_force(scene, W, H, sh_degree, bg, antialiased)
    assert (radii > 0).sum() >= 10 * cams and alpha.amax() > 0.8  # the scene is not trivial
    assert torch.equal(out.radii, radii)
    torch.testing.assert_close(out.rgb, rgb, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.alpha, alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.depth, depth, rtol=0, atol=1e-5)


def single_gaussian(x_px: float, y_px: float, sigma_px: float, width: int, height: int, dtype=torch.float64):
    """One (image-space) isotropic, fully opaque Gaussian 1 m in front of an identity camera with f = 100 px."""
    f, cx, cy = 100.0, width / 2, height / 2
    return dict(means=torch.tensor([[(x_px - cx) / f, (y_px - cy) / f, 1.0]], dtype=dtype),
                quats=torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
                scales=torch.tensor([[sigma_px / f, sigma_px / f, 1e-6]], dtype=dtype),  # flat: isotropic in 2D
                opacities=torch.ones(1, dtype=dtype),
                colors=torch.ones(1, 3, dtype=dtype), world_to_camera=torch.eye(4, dtype=dtype)[None],
                Ks=torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=dtype))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_tile_culling_cuts_the_tail_like_gsplat(backend):
    # sigma 10 px -> radius ceil(3 sqrt(100.4)) = 31; centre x = 1 -> tiles [0, 2) end at pixel 32.
    # Pixel 32 (centre 32.5, 3.14 sigma away) would get alpha 0.007 > 1/255, but its tile is not listed.
    scene = single_gaussian(1.0, 8.0, 10.0, 64, 16, dtype=torch.float64 if backend == "torch" else torch.float32)
    _, out = render(scene, 64, 16, backend=backend)
    assert out.radii.tolist() == [[31]]
    assert out.alpha[0, 8, 31, 0] > 1 / 255 and out.alpha[0, 8, 32, 0] == 0
    if backend == "torch":
        torch.testing.assert_close(out.alpha, brute_force(scene, 64, 16)[1], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- gradients of the torch path

PARAMS = ("means", "quats", "scales", "opacities", "colors")


@pytest.mark.parametrize("sh_degree, antialiased", [(None, False), (1, True)])
def test_torch_gradients_match_finite_differences(sh_degree, antialiased):
    W, H = 16, 12
    scene = make_scene(10, W, H, cams=2, sh_degree=sh_degree, focal=1.2, scale=(0.015, 0.035), seed=3)
    g = torch.Generator().manual_seed(4)
    w_rgb, w_alpha, w_depth = (torch.randn(2, H, W, k, generator=g, dtype=torch.float64) for k in (3, 1, 1))
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)

    def losses(*params):
        out = rasterize_gaussians(*params, scene["world_to_camera"], scene["Ks"], W, H, sh_degree=sh_degree,
                                  background=bg, antialiased=antialiased, backend="torch")
        return (out.rgb * w_rgb).sum(), (out.alpha * w_alpha).sum(), (out.depth * w_depth).sum()

    params = tuple(scene[k].clone().requires_grad_() for k in PARAMS)
    grads = torch.autograd.grad(sum(losses(*params)), params)
    assert all(gr.abs().amax() > 1e-3 for gr in grads)  # every input matters in this scene
    assert torch.autograd.gradcheck(losses, params, eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- compiled CPU path vs torch path


def assert_grads_close(got: torch.Tensor, want: torch.Tensor, label: str, rtol: float = 1e-4, atol: float = 1e-4):
    """|got - want| <= atol * max|want| + rtol * |want| elementwise (float32 sums over many pixels)."""
    scale = want.abs().amax().clamp(min=1e-12)
    err = (got - want).abs() - rtol * want.abs()
    assert err.amax() <= atol * scale, f"{label}: worst excess {err.amax():.3g} vs {atol * scale:.3g}"


def compare_backends(scene: dict, W: int, H: int, **kw):
    g = torch.Generator().manual_seed(7)
    C = len(scene["world_to_camera"])
    weights = [torch.randn(C, H, W, k, generator=g) for k in (3, 1, 1)]
    runs = {}
    for backend in ("torch", "cpu"):
        inputs, out = render(scene, W, H, grad=True, backend=backend, **kw)
        assert out.backend == backend
        loss = sum((o * w).sum() for o, w in zip((out.rgb, out.alpha, out.depth * out.alpha), weights, strict=True))
        loss.backward()
        runs[backend] = out, {k: inputs[k].grad for k in PARAMS}
    (ref, ref_grads), (fast, fast_grads) = runs["torch"], runs["cpu"]
    assert torch.equal(ref.radii, fast.radii)
    torch.testing.assert_close(fast.rgb, ref.rgb, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.alpha, ref.alpha, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.depth * fast.alpha, ref.depth * ref.alpha, rtol=0, atol=1e-5)
    seen = ref.alpha > 1e-2  # ED depth divides by alpha; compare it where that is well conditioned
    torch.testing.assert_close(fast.depth[seen], ref.depth[seen], rtol=1e-5, atol=1e-5)
    for k in PARAMS:
        assert_grads_close(fast_grads[k], ref_grads[k], k)
    assert_grads_close(fast.means2d.grad, ref.means2d.grad, "means2d")
    return ref, fast


@pytest.mark.parametrize("cams, sh_degree, antialiased, with_bg", [
    (1, None, False, False),
    (2, 3, False, True),
    (2, 1, True, True),
])
def test_cpu_matches_torch(cams, sh_degree, antialiased, with_bg):
    W, H = 70, 50  # partial tiles on the right and bottom
    scene = make_scene(400, W, H, cams=cams, sh_degree=sh_degree, focal=1.5, scale=(0.003, 0.012), seed=11,
                       dtype=torch.float32)
    bg = torch.tensor([0.1, 0.7, 0.4]) if with_bg else None
    ref, _ = compare_backends(scene, W, H, sh_degree=sh_degree, background=bg, antialiased=antialiased)
    assert ref.visible.sum() > 300 * cams and ref.alpha.amax() > 0.99


def test_empty_scene_gives_background_and_zero_gradients():
    W, H = 40, 30
    scene = make_scene(50, W, H, dtype=torch.float32)
    scene["means"] = scene["means"] + torch.tensor([0.0, 0.0, -2.0])  # all behind the camera at z = -0.6
    bg = torch.tensor([0.25, 0.5, 0.75])
    for backend in ("torch", "cpu"):
        inputs, out = render(scene, W, H, grad=True, background=bg, backend=backend)
        assert (out.radii == 0).all() and not out.visible.any()
        assert torch.equal(out.rgb, bg.expand(1, H, W, 3))
        assert (out.alpha == 0).all() and (out.depth == 0).all()
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
        for k in PARAMS:
            assert inputs[k].grad is not None and (inputs[k].grad == 0).all(), (backend, k)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gaussians_behind_the_camera_are_culled(backend):
    W, H = 48, 32
    scene = make_scene(60, W, H, dtype=torch.float32, focal=1.5)
    behind = make_scene(20, W, H, dtype=torch.float32, seed=5)
    behind["means"] = behind["means"] + torch.tensor([0.0, 0.0, -1.2])  # 0.6 m behind the camera
    both = {k: torch.cat([scene[k], behind[k]]) if k in PARAMS else scene[k] for k in scene}
    _, alone = render(scene, W, H, backend=backend)
    _, out = render(both, W, H, backend=backend)
    assert (out.radii[:, 60:] == 0).all() and (out.radii[:, :60] > 0).sum() > 40
    assert torch.equal(out.rgb, alone.rgb) and torch.equal(out.alpha, alone.alpha)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_means2d_gradient_for_densification(backend):
    W, H = 48, 32
    scene = make_scene(80, W, H, dtype=torch.float32, focal=1.5, scale=(0.005, 0.01))
    scene["means"][-5:, 2] -= 2.0  # five culled ones
    _, out = render(scene, W, H, grad=True, backend=backend)
    target = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(2))
    ((out.rgb - target) ** 2).mean().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (1, 80, 2)
    norms = grad.norm(dim=-1)
    assert (norms[out.visible] > 0).float().mean() > 0.9
    assert (norms[~out.visible] == 0).all() and (~out.visible).sum() == 5


# ----------------------------------------------------------------------------- dispatch and errors


def test_auto_backend_choice():
    scene = make_scene(30, 32, 32, dtype=torch.float32)
    assert render(scene, 32, 32)[1].backend == "cpu"
    assert render(make_scene(30, 32, 32), 32, 32)[1].backend == "torch"  # float64: not the float32 kernel
    with pytest.raises(HeadforgeError, match="float32 CPU"):
        render(make_scene(30, 32, 32), 32, 32, backend="cpu")
    with pytest.raises(HeadforgeError, match="gsplat"):
        render(scene, 32, 32, backend="gsplat")  # CPU tensors: gsplat cannot run
    with pytest.raises(ValueError, match="backend must be one of"):
        render(scene, 32, 32, backend="cuda")


def test_cpu_kernel_tile_size_is_checked(monkeypatch):
    """The C++ kernel's compile-time TILE is read back and must equal the one Python TILE_SIZE."""
    from headforge.renderers import gaussian_cpu

    gaussian_cpu.load_kernels()
    assert int(torch.ops.headforge_gs.tile_size()) == gaussian_cpu.TILE_SIZE
    monkeypatch.setattr(gaussian_cpu, "TILE_SIZE", gaussian_cpu.TILE_SIZE * 2)
    with pytest.raises(HeadforgeError, match="compiled with TILE"):
        gaussian_cpu.load_kernels()


def test_bad_inputs_fail_loudly():
    scene = make_scene(10, 32, 32, dtype=torch.float32)
    sh = make_scene(10, 32, 32, sh_degree=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="quats must have shape"):
        render({**scene, "quats": scene["quats"][:, :3]}, 32, 32)
    with pytest.raises(ValueError, match="Ks must be"):
        render({**scene, "Ks": scene["Ks"][0]}, 32, 32)
    with pytest.raises(ValueError, match="sh_degree=2 needs K >= 9"):
        render(sh, 32, 32, sh_degree=2)
    with pytest.raises(ValueError, match="colors must be"):
        render(sh, 32, 32)  # SH coefficients without sh_degree
    with pytest.raises(ValueError, match="SH coefficients"):
        render(scene, 32, 32, sh_degree=0)  # plain colours with sh_degree
    with pytest.raises(ValueError, match="background"):
        render(scene, 32, 32, background=torch.zeros(4))
    with pytest.raises(ValueError, match="one device and one dtype"):
        render({**scene, "opacities": scene["opacities"].double()}, 32, 32)


def test_sh_degree_below_coefficient_count_uses_the_first_bases():
    W, H = 32, 24
    sh = make_scene(40, W, H, sh_degree=3, dtype=torch.float32)
    low = {**sh, "colors": sh["colors"][:, :4]}
    _, a = render(sh, W, H, sh_degree=1)
    _, b = render(low, W, H, sh_degree=1)
    assert torch.equal(a.rgb, b.rgb)


# ----------------------------------------------------------------------------- gsplat (CUDA only)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat backend needs CUDA; this machine has none")
@pytest.mark.skipif(not gsplat_available(), reason="gsplat is not installed (pip install gsplat)")
@pytest.mark.parametrize("sh_degree, antialiased", [(None, False), (3, True)])
def test_gsplat_matches_torch(sh_degree, antialiased):
    import gsplat

    W, H = 96, 64
    scene = make_scene(600, W, H, cams=2, sh_degree=sh_degree, focal=1.5, scale=(0.003, 0.012), seed=13,
                       dtype=torch.float32)
    scene = {k: v.cuda() for k, v in scene.items()}
    bg = torch.tensor([0.1, 0.7, 0.4], device="cuda")
    runs = {}
    for backend in ("torch", "gsplat"):
        inputs, out = render(scene, W, H, grad=True, sh_degree=sh_degree, background=bg, antialiased=antialiased,
                             backend=backend)
        w = torch.randn(out.rgb.shape, generator=torch.Generator().manual_seed(3)).cuda()
        ((out.rgb * w).sum() + out.alpha.sum() + (out.depth * out.alpha).sum()).backward()
        runs[backend] = out, {k: inputs[k].grad for k in PARAMS}
    (ref, ref_grads), (gs, gs_grads) = runs["torch"], runs["gsplat"]
    valid = (ref.radii > 0) & (gs.radii > 0)
    assert valid.sum() > 500
    for name in ("means2d", "conics", "depths", "opacities"):
        torch.testing.assert_close(getattr(gs, name)[valid], getattr(ref, name)[valid], rtol=1e-4, atol=1e-4)
    version = tuple(int(p) for p in gsplat.__version__.split(".")[:2])
    for name in ("rgb", "alpha"):
        diff = (getattr(gs, name) - getattr(ref, name)).abs()
        if version < (1, 5):
            assert diff.amax() <= 1e-4, name
        else:  # gsplat >= 1.5 bins with opacity-aware per-axis radii: a few tile-boundary tail pixels differ
            assert (diff > 1e-4).float().mean() < 0.01 and diff.amax() < 0.02, name
    for k in PARAMS:
        cos = torch.nn.functional.cosine_similarity(gs_grads[k].flatten(), ref_grads[k].flatten(), dim=0)
        assert cos >= 0.999, (k, cos.item())
