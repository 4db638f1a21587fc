"""Densification rules (duplicate / split / prune / reset, optimizer moments) and image metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headforge.metrics import psnr, ssim
from headforge.representations.gaussians import GaussianModel, Splats
from headforge.stages.densify import DensifyConfig, DensifyState, refine, reset_opacities
from headforge.stages.gaussian_train import GaussianTrainConfig, make_optimizer


def model_with(n: int = 4) -> tuple[GaussianModel, torch.optim.Adam]:
    splats = Splats(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) * 0.01,
                    torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                    torch.tensor([0.001, 0.001, 0.05, 0.001])[:n, None].repeat(1, 3),
                    torch.tensor([0.5, 0.5, 0.5, 0.001])[:n], torch.zeros(n, 4, 3))
    model = GaussianModel.from_splats(splats)
    opt = make_optimizer(model, GaussianTrainConfig(), 1.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # creates moments
    return model, opt


def test_refine_duplicates_small_splits_large_and_prunes_transparent():
    model, opt = model_with()
    state = DensifyState(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.ones(4))  # Gaussians 0 and 2 have high grads
    cfg = DensifyConfig(grow_grad2d=0.5, grow_scale3d=0.01, prune_opa=0.005)
    before = model.log_scales.exp()[:, 0].detach().clone()
    stats = refine(model, opt, state, cfg, step=1000, scene_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert stats == {"duplicated": 1, "split": 1, "pruned": 1, "total": 5}
    scales = model.log_scales.exp()[:, 0]
    # survivors: 0, 1 (kept), 0' (duplicate), 2a, 2b (split children at 0.05 / 1.6); 3 pruned (opacity 0.001)
    expected = torch.stack([before[0], before[1], before[0], before[2] / 1.6, before[2] / 1.6])
    torch.testing.assert_close(scales, expected)
    for group in opt.param_groups:
        p = group["params"][0]
        assert p.shape[0] == 5 and getattr(model, group["name"]) is p
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape
        # children of a split start with zero moments, the duplicate copies its parent's
        assert float(st["exp_avg"][3:].abs().sum()) == 0 and float(st["exp_avg"][2].abs().sum()) > 0
    assert len(state.grad2d) == 5 and float(state.grad2d.sum()) == 0


def test_split_children_stay_inside_their_parent():
    model, opt = model_with()
    state = DensifyState(torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.ones(4))
    parent = model.means[2].detach().clone()
    refine(model, opt, state, DensifyConfig(grow_grad2d=0.5, prune_opa=0.0), step=10, scene_scale=1.0,
           generator=torch.Generator().manual_seed(1))
    children = model.means[-2:].detach()
    assert float((children - parent).norm(dim=-1).max()) < 0.05 * 4


def test_reset_opacities_clamps():
    model, opt = model_with()
    reset_opacities(model, opt, DensifyConfig(prune_opa=0.005))
    assert float(torch.sigmoid(model.logit_opacities.detach()).max()) <= 0.0100001


def test_psnr_known_value_and_mask():
    a = torch.zeros(1, 8, 8, 3)
    b = torch.full((1, 8, 8, 3), 0.1)
    assert float(psnr(a, b)) == pytest.approx(20.0, abs=1e-4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1
    b[:, 4:] = 0.5  # errors outside the mask do not count
    assert float(psnr(a, b, mask)) == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((40, 48, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(x, y, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    ours = float(ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None]))
    assert ours == pytest.approx(ref, abs=2e-3)
    assert float(ssim(torch.from_numpy(x)[None], torch.from_numpy(x)[None])) == pytest.approx(1.0, abs=1e-6)
