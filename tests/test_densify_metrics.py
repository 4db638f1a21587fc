"""Densification rules (duplicate / split / prune / reset, optimizer moments) and image metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headforge.metrics import psnr, ssim
from headforge.representations.gaussians import GaussianLearningRates, GaussianModel, Splats
from headforge.stages.densify import DensifyConfig, DensifyState, refine, reset_opacities
from headforge.stages.gaussian_train import GaussianTrainConfig, make_optimizer


def model_with(n: int = 4, model_type: type[GaussianModel] = GaussianModel) -> tuple[GaussianModel, torch.optim.Adam]:
    splats = Splats(torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) * 0.01,
                    torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                    torch.tensor([0.001, 0.001, 0.05, 0.001])[:n, None].repeat(1, 3),
                    torch.tensor([0.5, 0.5, 0.5, 0.001])[:n], torch.zeros(n, 4, 3))
    base = GaussianModel.from_splats(splats)
    model = model_type(*base.per_gaussian().values())
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


class OffsetModel(GaussianModel):
    """A model that declares one more trained per-Gaussian tensor (as a rig's per-Gaussian offsets would)."""

    def __init__(self, *tensors):
        super().__init__(*tensors)
        self.offsets = torch.nn.Parameter(torch.arange(len(self), dtype=torch.float32)[:, None].repeat(1, 3))

    def param_groups(self, lrs: GaussianLearningRates):
        return {**super().param_groups(lrs), "offsets": (self.offsets, 1e-3)}

    def per_gaussian(self):
        return {**super().per_gaussian(), "offsets": self.offsets}


def test_side_tensors_follow_their_gaussians_through_duplicate_split_and_prune():
    """Hand-computed: Gaussian 0 (small, high gradient) is duplicated, 2 (large, high gradient) split, 3 pruned;
    survivors are ordered kept (0, 1), duplicate (0), split children (2, 2)."""
    model, opt = model_with(model_type=OffsetModel)
    background = torch.nn.Parameter(torch.full((3,), 0.5))
    opt.add_param_group({"params": [background], "lr": 1e-2, "name": "background"})
    background.grad = torch.ones(3)
    opt.step()
    bg_moment = opt.state[background]["exp_avg"].clone()
    model.add_side_tensor("row", torch.arange(4))  # int64, untrained
    model.add_side_tensor("mean_x", model.means[:, 0].detach().clone())  # derived from the mean
    before_x = model.mean_x.clone()
    state = DensifyState(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.ones(4))
    refine(model, opt, state, DensifyConfig(grow_grad2d=0.5, grow_scale3d=0.01, prune_opa=0.005), step=1000,
           scene_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert model.row.tolist() == [0, 1, 0, 2, 2] and model.row.dtype == torch.int64
    # a model-declared trained tensor too (Adam moved each row by the same ~2e-3)
    assert model.offsets[:, 0].round().tolist() == [0.0, 1.0, 0.0, 2.0, 2.0]
    # kept and duplicated rows still carry their own mean; split children inherit the parent's value
    torch.testing.assert_close(model.mean_x[:3], model.means[:3, 0].detach(), rtol=0, atol=0)
    assert torch.equal(model.mean_x, before_x[[0, 1, 0, 2, 2]]) and not isinstance(model.row, torch.nn.Parameter)
    offsets_group = next(g for g in opt.param_groups if g["name"] == "offsets")
    assert offsets_group["params"][0] is model.offsets and opt.state[model.offsets]["exp_avg"].shape == (5, 3)
    # the background is not a per-Gaussian tensor: untouched
    bg_group = next(g for g in opt.param_groups if g["name"] == "background")
    assert bg_group["params"] == [background] and torch.equal(opt.state[background]["exp_avg"], bg_moment)
    # a second cycle (everything but Gaussian 1 pruned) keeps the alignment
    with torch.no_grad():
        model.logit_opacities[[0, 2, 3, 4]] = -20.0
    refine(model, opt, DensifyState.empty(5, "cpu"), DensifyConfig(prune_opa=0.005), step=1000, scene_scale=1.0)
    assert model.row.tolist() == [1] and model.mean_x.tolist() == [model.means[0, 0].item()]
    reset_opacities(model, opt, DensifyConfig(prune_opa=0.005))
    assert model.row.tolist() == [1] and len(model.offsets) == 1


def test_side_tensors_round_trip_through_a_checkpoint_layout():
    model, _ = model_with()
    model.add_side_tensor("layer_id", torch.tensor([3, 1, 4, 1], dtype=torch.int32))
    again = GaussianModel.from_tensors({k: v.detach() for k, v in model.per_gaussian().items()})
    assert again.side_names == ("layer_id",) and torch.equal(again.layer_id, model.layer_id)
    assert set(again.parameter_dict()) == {"means", "quats", "log_scales", "logit_opacities", "sh0", "shN"}
    with pytest.raises(ValueError, match="rows"):
        again.add_side_tensor("bad", torch.zeros(3))


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
