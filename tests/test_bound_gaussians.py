"""Bound Gaussians: the triangle frame against a hand-computed triangle, posing against its float64 twin (values
and gradients), rigid motion, binding round trip, and densification that keeps bindings and covered triangles."""

from __future__ import annotations

import math

import pytest
import torch

from headforge.geometry.rotations import quat_to_rotmat
from headforge.representations.bound_gaussians import (
    BoundGaussianModel,
    bind_world_splats,
    pose_bound,
    pose_bound_twin,
    quat_multiply,
    triangle_frames,
)
from headforge.representations.gaussians import GaussianLearningRates, Splats
from headforge.representations.rig.deform import axis_angle_to_matrix
from headforge.stages.densify import DensifyConfig, DensifyState, keep_best_per_group, refine

D = torch.float64


def covariance(s: Splats) -> torch.Tensor:  # [N, 3, 3]
    R = quat_to_rotmat(s.quats)
    return R @ torch.diag_embed(s.scales ** 2) @ R.transpose(1, 2)


def random_local(n: int, k: int = 4, seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=D)
    return Splats(torch.randn(n, 3, generator=g, dtype=D), q / q.norm(dim=-1, keepdim=True),
                  torch.rand(n, 3, generator=g, dtype=D) + 0.1, torch.rand(n, generator=g, dtype=D),
                  torch.randn(n, k, 3, generator=g, dtype=D))


def random_mesh(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(12, 3, generator=g, dtype=D)
    F = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [1, 2, 9]])
    return V, F


def test_triangle_frame_of_a_hand_computed_triangle():
    V = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, -1.0]], dtype=D)
    R, T, k = triangle_frames(V, torch.tensor([[0, 1, 2]]))
    # a0 = the first edge (x), a1 = a0 x (v2 - v0) = x x -z = +y (the normal), a2 = a0 x a1 = +z
    assert torch.allclose(R[0], torch.eye(3, dtype=D))
    assert torch.allclose(T[0], torch.tensor([2 / 3, 0.0, -1 / 3], dtype=D))
    assert float(k[0]) == pytest.approx(1.5)  # (base 2 + height 1) / 2
    local = Splats(torch.tensor([[1.0, 0.5, 0.0]], dtype=D), torch.tensor([[1.0, 0, 0, 0]], dtype=D),
                   torch.tensor([[0.2, 0.1, 0.4]], dtype=D), torch.tensor([0.5], dtype=D),
                   torch.zeros(1, 1, 3, dtype=D))
    world = pose_bound(local, torch.tensor([0]), V, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(world.means[0], torch.tensor([1.5 + 2 / 3, 0.75, -1 / 3], dtype=D))
    assert torch.allclose(world.scales[0], torch.tensor([0.3, 0.15, 0.6], dtype=D))
    # a triangle turned 90 degrees about z: the frame turns with it (negative control: the rest frame differs)
    Q = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=D))
    R2, _, _ = triangle_frames(V @ Q.T, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(R2[0], Q, atol=1e-12)
    assert not torch.allclose(R2[0], R[0], atol=1e-3)


def test_pose_matches_the_float64_twin_and_inverts():
    V, F = random_mesh()
    local = random_local(40)
    b = torch.randint(0, len(F), (40,), generator=torch.Generator().manual_seed(2))
    fast, slow = pose_bound(local, b, V, F), pose_bound_twin(local, b, V, F)
    assert torch.allclose(fast.means, slow.means, atol=1e-12)
    assert torch.allclose(fast.scales, slow.scales, atol=1e-12)
    assert torch.allclose(covariance(fast), covariance(slow), atol=1e-12)  # rotations: same covariance
    back = bind_world_splats(fast, b, V, F)
    assert torch.allclose(back.means, local.means, atol=1e-10)
    assert torch.allclose(covariance(back), covariance(local), atol=1e-10)


def test_pose_gradients_match_the_twin():
    V, F = random_mesh(3)
    local = random_local(6, seed=4)
    b = torch.tensor([0, 1, 2, 3, 4, 4])

    def loss(fn, verts, means):
        s = fn(Splats(means, local.quats, local.scales, local.opacities, local.sh), b, verts, F)
        return (s.means.sin().sum() + covariance(s).square().sum())

    grads = []
    for fn in (pose_bound, pose_bound_twin):
        verts, means = V.clone().requires_grad_(), local.means.clone().requires_grad_()
        loss(fn, verts, means).backward()
        grads.append((verts.grad, means.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-9)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-9)
    verts = V.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: pose_bound(local, b, v, F).means, (verts,))


def test_a_bound_gaussian_moves_rigidly_with_its_mesh():
    V, F = random_mesh(5)
    local = random_local(30, seed=6)
    b = torch.randint(0, len(F), (30,), generator=torch.Generator().manual_seed(7))
    Q = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7], dtype=D))
    t = torch.tensor([0.5, -0.2, 2.0], dtype=D)
    rest, moved = pose_bound(local, b, V, F), pose_bound(local, b, V @ Q.T + t, F)
    assert torch.allclose(moved.means, rest.means @ Q.T + t, atol=1e-12)
    assert torch.allclose(covariance(moved), Q @ covariance(rest) @ Q.T, atol=1e-12)
    # a uniform scale of the mesh scales positions about the origin and the Gaussians with it
    grown = pose_bound(local, b, 2.0 * V, F)
    assert torch.allclose(grown.means, 2.0 * rest.means, atol=1e-12)
    assert torch.allclose(grown.scales, 2.0 * rest.scales, atol=1e-12)


def test_quaternion_product_composes_rotations():
    q = random_local(10, seed=8).quats
    p = random_local(10, seed=9).quats
    assert torch.allclose(quat_to_rotmat(quat_multiply(p, q)), quat_to_rotmat(p) @ quat_to_rotmat(q), atol=1e-12)


def _model(n: int, seed: int = 0) -> BoundGaussianModel:
    local = random_local(n, k=1, seed=seed)
    b = torch.arange(n) % 5
    layer = (torch.arange(n) % 3 == 0).long()  # every third Gaussian is hair (not protected)
    return BoundGaussianModel.from_local(Splats(*(t.float() for t in (local.means, local.quats, local.scales,
                                                                      local.opacities, local.sh))), b, layer, 0)


def _optimizer(model):
    lrs = GaussianLearningRates(0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
    return torch.optim.Adam([{"params": [t], "lr": lr, "name": n}
                             for n, (t, lr) in model.param_groups(lrs).items() if lr is not None])


def test_densification_keeps_each_child_on_its_parents_triangle():
    model = _model(30)
    opt = _optimizer(model)
    before = {i: (int(model.binding[i]), int(model.layer[i])) for i in range(30)}
    state = DensifyState(torch.full((30,), 1.0), torch.ones(30))  # every Gaussian over the threshold
    size = torch.linspace(0.001, 0.5, 30)  # world size factors: small ones duplicate, large ones split
    cfg = DensifyConfig(grow_grad2d=0.5, grow_scale3d=0.01, prune_opa=0.0, refine_start=0)
    stats = refine(model, opt, state, cfg, 1, 1.0, torch.Generator().manual_seed(0), size=size)
    assert stats["duplicated"] > 0 and stats["split"] > 0
    assert len(model) == 30 + stats["duplicated"] + stats["split"]
    assert model.binding.shape == (len(model),) and model.layer.shape == (len(model),)
    pairs = {(int(b), int(ly)) for b, ly in zip(model.binding, model.layer, strict=True)}
    assert pairs == set(before.values())  # children carry their parent's triangle and layer, nothing new


def test_pruning_never_empties_a_protected_triangle():
    model = _model(30)
    opt = _optimizer(model)
    with torch.no_grad():
        model.logit_opacities.fill_(-20.0)  # all transparent: all would be pruned
        model.logit_opacities[7] = -19.0  # the best of triangle 2 (7 % 5 == 2)
    groups = torch.where(model.layer == 0, model.binding, -1)
    state = DensifyState(torch.zeros(30), torch.ones(30))
    refine(model, opt, state, DensifyConfig(prune_opa=0.5), 1, 1.0, keep_one_per=groups)
    kept = set(model.binding.tolist())
    assert kept == set(range(5))  # every triangle keeps one face Gaussian
    assert bool((model.layer == 0).all())  # the unprotected hair Gaussians went
    assert len(model) == 5


def test_keep_best_per_group_hand_case():
    groups = torch.tensor([0, 0, 1, 1, -1, 2])
    score = torch.tensor([0.1, 0.3, 0.5, 0.5, 0.9, 0.2])
    prune = torch.tensor([True, True, True, False, True, True])
    spare = keep_best_per_group(groups, score, prune)
    # group 0 all pruned: its best (index 1) spared; group 1 keeps index 3 anyway; -1 never; group 2 spared
    assert spare.tolist() == [False, True, False, False, False, True]
