"""Mesh rasterizer: values vs a brute-force reference, gradients vs finite differences, texturing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import world_to_clip
from headforge.renderers.mesh_backends import has_nvdiffrast
from headforge.renderers.mesh_raster import rasterize
from headforge.renderers.mesh_shading import antialias, edge_neighbours, interpolate, texture

NEAR, FAR = 0.5, 4.0


def to_clip(cam: torch.Tensor, f: float = 1.0) -> torch.Tensor:  # camera-space [..., 3] -> clip [..., 4]
    x, y, z = cam.unbind(-1)
    a, b = (FAR + NEAR) / (FAR - NEAR), -2 * FAR * NEAR / (FAR - NEAR)
    return torch.stack([f * x, f * y, a * z + b, z], -1)


def random_scene(seed: int, n_tri: int = 20, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n_tri, 1, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 2.0, 4.0], dtype=dtype) \
        - torch.tensor([1.0, 1.0, -0.3], dtype=dtype)
    cam = centre + (torch.rand(n_tri, 3, 3, generator=g, dtype=dtype) - 0.5) * 2.0  # some cross z = 0
    cam[..., :2] *= cam[..., 2:].abs() + 0.5
    return to_clip(cam.reshape(-1, 3)), torch.arange(3 * n_tri).reshape(n_tri, 3)


def brute_force(clip: np.ndarray, faces: np.ndarray, H: int, W: int):
    """Per pixel, per triangle: solve for the clip-space affine point on the pixel's ray (float64)."""
    ids = -np.ones((H, W), np.int64)
    bary, depth = np.zeros((H, W, 3)), np.zeros((H, W))
    ambiguous = np.zeros((H, W), bool)
    for j in range(H):
        for i in range(W):
            px, py = 2 * (i + 0.5) / W - 1, 2 * (j + 0.5) / H - 1
            hits = []
            for f, (a, b, c) in enumerate(faces):
                v = clip[[a, b, c]]
                g = v[:, :2] - np.array([px, py]) * v[:, 3:4]  # [3, 2]
                m = np.stack([g[1] - g[0], g[2] - g[0]], 1)
                if abs(np.linalg.det(m)) < 1e-14:
                    continue
                s, t = np.linalg.solve(m, -g[0])
                wts = np.array([1 - s - t, s, t])
                pt = wts @ v
                if pt[3] <= 0:
                    continue
                nz = pt[2] / pt[3]
                margin = min(wts.min(), 1 - nz, nz + 1)
                if abs(margin) < 1e-6:
                    ambiguous[j, i] = True
                if margin >= 0:
                    hits.append((nz, f, wts, pt[3]))
            if hits:
                hits.sort(key=lambda h: (h[0], h[1]))
                if len(hits) > 1 and hits[1][0] - hits[0][0] < 1e-9:
                    ambiguous[j, i] = True
                ids[j, i], bary[j, i], depth[j, i] = hits[0][1], hits[0][2], hits[0][3]
    return ids, bary, depth, ambiguous


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_brute_force(seed):
    clip, faces = random_scene(seed)
    H, W = 24, 32
    ref_ids, ref_bary, ref_depth, amb = brute_force(clip.numpy(), faces.numpy(), H, W)
    assert amb.mean() < 0.05 and (ref_ids >= 0).mean() > 0.3 and len(np.unique(ref_ids)) > 8
    r = rasterize(clip, faces, (H, W))
    ok = ~amb
    np.testing.assert_array_equal(r.triangle_id[0].numpy()[ok], ref_ids[ok])
    both = ok & (ref_ids >= 0)
    np.testing.assert_allclose(r.bary[0].numpy()[both], ref_bary[both], atol=1e-5)
    np.testing.assert_allclose(r.depth[0].numpy()[both], ref_depth[both], rtol=1e-5, atol=1e-5)
    assert torch.isinf(r.ndc_z[~r.mask]).all() and (r.depth[~r.mask] == 0).all() and (r.bary[~r.mask] == 0).all()
    assert np.allclose(r.bary[0].numpy()[both].sum(-1), 1)
    # float32 input: same visibility away from edges (looser), bary within 1e-4
    r32 = rasterize(clip.float(), faces, (H, W))
    agree = (r32.triangle_id == r.triangle_id).float().mean()
    assert agree > 0.98
    same = (r32.triangle_id == r.triangle_id) & r.mask
    assert torch.allclose(r32.bary[same].double(), r.bary[same], atol=1e-4)


def test_batch_and_layout_and_culling():
    # camera at the origin looking down +z; this triangle is counter-clockwise seen from the camera side
    cams = Cameras.create(torch.eye(4), fx=19.3, fy=19.3, cx=8.0, cy=4.0, width=16, height=8)
    tri = torch.tensor([[0.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    clip = world_to_clip(cams, tri, NEAR, FAR)
    faces = torch.tensor([[0, 1, 2]])
    r = rasterize(clip, faces, (8, 16), cull_backfaces=True)
    # pixel (column i, row j) covered iff its centre (i + .5, j + .5) is inside the projected triangle
    u, v = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(8) + 0.5, indexing="xy")
    inside = (u > 8) & (v > 4) & ((u - 8) + (v - 4) < 9.65)
    assert torch.equal(r.mask[0], inside)
    assert rasterize(clip, faces.flip(1), (8, 16), cull_backfaces=True).mask.sum() == 0
    assert torch.equal(rasterize(clip, faces.flip(1), (8, 16)).mask[0], inside)
    # batch of two different cameras = two single renders
    clip2 = torch.cat([clip, clip * torch.tensor([1.0, -1.0, 1.0, 1.0])])
    rb = rasterize(clip2, faces, (8, 16))
    assert torch.equal(rb.triangle_id[1], rasterize(clip2[1], faces, (8, 16)).triangle_id[0])
    assert torch.equal(rb.triangle_id[1], rb.triangle_id[0].flip(0))
    with pytest.raises(ValueError, match="clip positions"):
        rasterize(clip[..., :3], faces, (8, 16))
    with pytest.raises(ValueError, match="faces index"):
        rasterize(clip, faces + 5, (8, 16))
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        rasterize(clip, faces, (8, 16), backend="opengl")


def test_perspective_correct_interpolation():
    # slanted quad on the plane z = 2 + 0.6 x (camera space), attribute = camera-space position
    quad = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    cam = torch.cat([quad, (2 + 0.6 * quad[:, :1])], -1)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    f = 1.2
    H, W = 30, 40
    r = rasterize(to_clip(cam, f), faces, (H, W))
    pos = interpolate(cam, r, faces)[0]  # [H, W, 3]
    j, i = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    x = (2 * (i + 0.5) / W - 1) / f  # ray direction (x, y, 1) through each pixel centre
    y = (2 * (j + 0.5) / H - 1) / f
    z = 2 / (1 - 0.6 * x)  # ray-plane intersection
    ref = torch.stack([x * z, y * z, z], -1).to(torch.float64)
    m = r.mask[0]
    assert m.float().mean() > 0.3
    torch.testing.assert_close(pos[m], ref[m], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(r.depth[0][m], z.double()[m], atol=1e-6, rtol=1e-6)
    # screen-linear (non perspective-correct) weights would be off by far more than the tolerance
    assert (pos[m] - ref[m]).abs().max() < 1e-6


def test_gradients_interior_finite_differences():
    torch.manual_seed(0)
    clip, faces = random_scene(3, n_tri=6)
    attr = torch.randn(clip.shape[0], 2, dtype=torch.float64, requires_grad=True)
    H, W = 12, 16
    weights = torch.randn(1, H, W, 2, dtype=torch.float64)
    ids = rasterize(clip, faces, (H, W)).triangle_id
    assert ids.ge(0).float().mean() > 0.2

    def loss(c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        r = rasterize(c, faces, (H, W))
        assert torch.equal(r.triangle_id, ids)  # FD steps must not change visibility (interior only)
        return (interpolate(a, r, faces) * weights).sum() + (r.depth * weights[..., 0]).sum()

    c = clip.clone().requires_grad_(True)
    # gradcheck: central differences, eps 1e-6, atol 1e-5, rtol 1e-3
    assert torch.autograd.gradcheck(loss, (c, attr), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_texture_bilinear_matches_numpy():
    torch.manual_seed(1)
    img = torch.rand(5, 7, 3, dtype=torch.float64)
    uv = torch.rand(2, 4, 6, 2, dtype=torch.float64) * 1.6 - 0.3  # includes out-of-range uvs

    def ref(boundary: str) -> np.ndarray:
        im, out = img.numpy(), np.zeros((2, 4, 6, 3))
        for idx in np.ndindex(2, 4, 6):
            x, y = uv[idx][0].item() * 7 - 0.5, uv[idx][1].item() * 5 - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            for dx, dy in np.ndindex(2, 2):
                wgt = (x - x0 if dx else 1 - x + x0) * (y - y0 if dy else 1 - y + y0)
                xi, yi = x0 + dx, y0 + dy
                xi, yi = (xi % 7, yi % 5) if boundary == "wrap" else (min(max(xi, 0), 6), min(max(yi, 0), 4))
                out[idx] += wgt * im[yi, xi]
        return out

    for boundary in ("wrap", "clamp"):
        np.testing.assert_allclose(texture(img, uv, boundary=boundary).numpy(), ref(boundary), atol=1e-12)
        mip0 = texture(img, uv, boundary=boundary, filter="linear-mipmap-linear", uv_da=torch.zeros(2, 4, 6, 4,
                       dtype=torch.float64))
        np.testing.assert_allclose(mip0.numpy(), ref(boundary), atol=1e-12)
    with pytest.raises(ValueError, match="uv must be"):
        texture(img, uv[0])


def test_mipmap_minified_checkerboard_averages_half():
    n = 128
    board = ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % 2).float()[..., None]  # [n, n, 1]
    H = W = 16
    j, i = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    uv = torch.stack([(i + 0.3) / W, (j + 0.3) / H], -1)[None].float()  # [1, H, W, 2]
    plain = texture(board, uv)
    assert (plain - 0.5).abs().max() > 0.2  # aliased without mipmaps
    for uv_da in (None, torch.tensor([1 / W, 0, 0, 1 / H]).expand(1, H, W, 4)):
        mip = texture(board, uv, filter="linear-mipmap-linear", uv_da=uv_da)
        assert (mip - 0.5).abs().max() < 0.02
    # level clamped at 0 keeps the aliasing
    capped = texture(board, uv, filter="linear-mipmap-linear", max_mip_level=0)
    torch.testing.assert_close(capped, plain)


def test_texture_gradients_finite_differences():
    torch.manual_seed(2)
    img = torch.rand(6, 5, 2, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(1, 3, 4, 2, dtype=torch.float64) * 1.2 - 0.1).requires_grad_(True)
    uv_da = (torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.6).requires_grad_(True)
    for boundary in ("wrap", "clamp"):
        assert torch.autograd.gradcheck(lambda a, b, bd=boundary: texture(a, b, boundary=bd), (img, uv),
                                        eps=1e-6, atol=1e-6, rtol=1e-4)
        assert torch.autograd.gradcheck(
            lambda a, b, d, bd=boundary: texture(a, b, boundary=bd, filter="linear-mipmap-linear", uv_da=d),
            (img, uv, uv_da), eps=1e-6, atol=1e-6, rtol=1e-4)


def _edge_scene(dtype=torch.float64):
    # one triangle, a long almost vertical edge crossing a few pixel rows away from pixel centres
    ndc = torch.tensor([[-0.63, -0.92], [0.71, 0.13], [-0.52, 0.87]], dtype=dtype)
    cam = torch.cat([ndc * 2.0, torch.full((3, 1), 2.0, dtype=dtype)], -1)
    return to_clip(cam, 1.0), torch.tensor([[0, 1, 2]])


def test_antialias_gradients_and_values():
    clip, faces = _edge_scene()
    H, W = 10, 12
    colors = torch.tensor([[1.0, 0.2], [0.4, 0.9], [0.7, 0.5]], dtype=torch.float64)
    weights = torch.randn(1, H, W, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    r = rasterize(clip, faces, (H, W))
    flat = interpolate(colors, r, faces)
    aa = antialias(flat, r, clip, faces)
    changed = (aa - flat).abs().sum(-1) > 1e-9
    assert changed.sum() >= 6  # silhouette pixels were blended
    assert not changed[r.mask].all()

    def loss(c: torch.Tensor) -> torch.Tensor:
        rr = rasterize(c, faces, (H, W))
        assert torch.equal(rr.triangle_id, r.triangle_id)
        return (antialias(interpolate(colors, rr, faces), rr, c, faces) * weights).sum()

    c = clip.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (c,), eps=1e-6, atol=1e-5, rtol=1e-3)
    # the silhouette term is what moves the vertices: without antialias the x/y gradient differs
    g_aa = torch.autograd.grad(loss(c), c)[0]
    rr = rasterize(c, faces, (H, W))
    g_plain = torch.autograd.grad((interpolate(colors, rr, faces) * weights).sum(), c)[0]
    assert (g_aa - g_plain)[:, :2].abs().max() > 1e-2


def test_antialias_coverage_matches_area_and_ignores_inner_edges():
    # a slightly rotated square made of two triangles, white on black
    ang = 0.2
    R = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
    sq = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], dtype=torch.float64) @ R.T
    cam = torch.cat([sq, torch.full((4, 1), 2.0, dtype=torch.float64)], -1)
    clip = to_clip(cam, 2.47)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])  # counter-clockwise seen from the camera
    H = W = 48
    r = rasterize(clip, faces, (H, W))
    mask = r.mask[..., None].double()
    aa = antialias(mask, r, clip, faces)
    area_px = (0.5 * 2.47 * W / 2) ** 2  # side 1 at z = 2 -> 1.235 NDC -> 29.64 px
    err_aa, err_plain = abs(aa.sum().item() - area_px), abs(mask.sum().item() - area_px)
    assert err_aa < 1.0 and err_aa < err_plain  # px^2; measured 0.14 vs 2.53 for the aliased count
    # the shared diagonal is not a silhouette: colouring the triangles differently, pixels whose four
    # neighbours are covered keep their colour exactly
    colour = (r.triangle_id == 0)[..., None].double()
    out = antialias(colour, r, clip, faces)
    m = r.mask[0]
    inner = m.clone()
    inner[1:-1, 1:-1] &= m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    inner[[0, -1]] = False
    inner[:, [0, -1]] = False
    assert inner.sum() > 500
    torch.testing.assert_close(out[0][inner], colour[0][inner], rtol=0, atol=0)
    nb = edge_neighbours(faces)
    assert (nb >= 0).sum() == 2


@pytest.mark.skipif(not has_nvdiffrast(), reason="nvdiffrast backend needs CUDA and the nvdiffrast package")
def test_nvdiffrast_matches_torch_path():
    torch.manual_seed(4)
    clip, faces = random_scene(5, n_tri=40, dtype=torch.float32)
    clip = clip.cuda()
    a = rasterize(clip, faces.cuda(), (96, 128), backend="nvdiffrast")
    b = rasterize(clip.cpu(), faces, (96, 128), backend="torch")
    same = a.triangle_id.cpu() == b.triangle_id
    assert same.float().mean() > 0.995
    assert torch.allclose(a.bary.cpu()[same & b.mask], b.bary[same & b.mask], atol=1e-4)


def test_explicit_unavailable_backend_raises():
    if has_nvdiffrast():
        pytest.skip("nvdiffrast is available here; nothing to refuse")
    clip, faces = random_scene(0, n_tri=2)
    with pytest.raises(ValueError, match="nvdiffrast"):
        rasterize(clip, faces, (8, 8), backend="nvdiffrast")


def test_bilinear_image_matches_grid_sample():
    """The one bilinear sampler (geometry.bilinear) against torch's grid_sample (clamp = border padding) and,
    for wrap, against texture() on a tiled copy of the image."""
    from headforge.geometry.bilinear import bilinear_image

    g = torch.Generator().manual_seed(3)
    img = torch.rand(5, 7, 3, generator=g, dtype=torch.float64)
    st = torch.rand(200, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3  # includes out-of-range points
    grid = (st * 2 - 1)[None, None]  # [1, 1, P, 2] in [-1, 1], align_corners=False
    ref = torch.nn.functional.grid_sample(img.permute(2, 0, 1)[None], grid, mode="bilinear",
                                          padding_mode="border", align_corners=False)[0, :, 0].T  # [P, 3]
    torch.testing.assert_close(bilinear_image(img, st), ref, atol=1e-12, rtol=0)
    tiled = img.repeat(3, 3, 1)  # wrap == sampling the middle copy of a 3 x 3 tiling
    inner = (st + 1) / 3
    ref_wrap = torch.nn.functional.grid_sample(tiled.permute(2, 0, 1)[None], (inner * 2 - 1)[None, None],
                                               mode="bilinear", align_corners=False)[0, :, 0].T
    torch.testing.assert_close(bilinear_image(img, st, wrap=True), ref_wrap, atol=1e-12, rtol=0)
