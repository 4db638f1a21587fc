"""Stage: train an avatar's bound Gaussians across the frames of a capture (GaussianAvatars' recipe, on the CPU).

Each step draws one train view; its frame's rig state (the fit's expression and joint rotations plus this run's
per-frame corrections) deforms the rig, the bound Gaussians are posed on it (``pose_bound``) and rendered over a
random background (views with masks) through the shared training loop. Loss: (1 - l) L1 + l D-SSIM, plus
GaussianAvatars' priors on the face layer (means farther than ``position_threshold`` from their triangle's centroid
and scales beyond ``scale_threshold``, linearly penalised; here in metres, not triangle sizes, because a rig's
triangles may be much smaller than the Gaussians' spacing) and an L2 pull of the per-frame corrections to zero, so
the expression and pose are refined jointly but stay near the fit. Gradients reach the corrections through
``deform``. Adaptive density control runs in the triangles' frames (``densify.LocalFrames``: sizes for the
thresholds, and no face or hair triangle that had Gaussians is ever emptied); children keep their parent's
triangle and layer. Checkpoints, the divergence check, SIGINT / SIGTERM and ``max_seconds`` come from
``training/loop.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor, nn

from headforge.metrics import ssim
from headforge.renderers.gaussian_raster import GaussianRender
from headforge.representations.bound_gaussians import BoundGaussianModel, LayerCode, triangle_frames
from headforge.representations.gaussians import GaussianLearningRates, activate
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.avatar import BoundSplats
from headforge.stages.densify import DensifyConfig, DensifyHook, DensifyState, LocalFrames
from headforge.stages.gaussian_train import SplatStepLog, decayed_lr, render_splats
from headforge.stages.rig_params import RigParams, rig_vertices
from headforge.stages.views import ViewBatch, composite
from headforge.training.background import Background, TrainingBackground
from headforge.training.checkpoint import CheckpointKind, load_for_resume, restore_rng
from headforge.training.loop import Checkpointing, LoopOptions, run_loop, seed_everything
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, Positive, Seconds

__all__ = ["AvatarTrainConfig", "AvatarTrainResult", "train_avatar"]


def _avatar_densify() -> DensifyConfig:
    # local-frame Gaussians start dense on the surface: grow a little, prune the transparent, reset rarely
    return DensifyConfig(refine_start=300, refine_stop=100_000, refine_every=100, reset_every=100_000,
                         grow_grad2d=0.0002, grow_scale3d=0.01, prune_scale3d=0.1, max_gaussians=200_000)


@dataclass(frozen=True)
class AvatarTrainConfig(Checked):
    steps: Count = 3000
    max_sh_degree: Annotated[int, at.Ge(0), at.Le(3)] = 3
    sh_degree_interval: Count = 500
    means_lr: NonNegative = 5e-3  # local units (triangle sizes), decayed to means_lr_final
    means_lr_final: NonNegative = 5e-5
    scales_lr: NonNegative = 1.7e-2
    quats_lr: NonNegative = 1e-3
    opacities_lr: NonNegative = 5e-2
    sh0_lr: NonNegative = 2.5e-3
    shN_lr: NonNegative = 2.5e-3 / 20
    expression_lr: NonNegative = 1e-3  # per-frame ARKit weight corrections (0: the fit's are kept)
    pose_lr: NonNegative = 1e-4  # per-frame joint rotation corrections, radians
    correction_weight: NonNegative = 10.0  # L2 pull of the corrections to zero
    position_weight: NonNegative = 1.0  # face layer: mean(relu(|mu| k - position_threshold)) / position_threshold
    position_threshold: Positive = 0.005  # metres from the triangle's centroid
    scale_weight: NonNegative = 1.0  # face layer: mean(relu(max scale k - scale_threshold)) / scale_threshold
    scale_threshold: Positive = 0.01  # metres
    skin_opacity_weight: NonNegative = 1.0  # face layer: mean(relu(skin_opacity - opacity)) (skin is opaque)
    skin_opacity: Fraction = 0.5
    ssim_lambda: Fraction = 0.2
    background: Background = Background.RANDOM
    densify: DensifyConfig = field(default_factory=_avatar_densify)
    checkpoint_every: Count = 1000
    checkpoint_minutes: Positive | None = 10.0
    max_seconds: Seconds | None = None
    seed: NonNegativeInt = 0


@dataclass(frozen=True, eq=False)
class AvatarTrainResult:
    gaussians: BoundSplats  # trained, detached, at sh_degree
    sh_degree: int
    params: RigParams  # the fit with this run's per-frame corrections applied (B frames)
    steps: int
    seconds: float
    background: Tensor  # [3] for evaluation
    history: tuple[tuple[int, float, float, int], ...]  # (step, loss, psnr, gaussians)


def _corrected_frame(base: RigParams, b: int, d_expr: Tensor | None = None, d_rot: Tensor | None = None) -> RigParams:
    """Frame ``b`` of ``base`` with corrections [B, 52] / [B, J, 3] added (weights kept in [0, 1])."""
    p = base.frame(b)
    if d_expr is not None:
        p = replace(p, expression=(p.expression + d_expr[b:b + 1]).clamp(0, 1))
    if d_rot is not None:
        p = replace(p, pose=RigPose(p.pose.rotations + d_rot[b:b + 1], p.pose.translation))
    return p


@dataclass(frozen=True)
class AvatarStep:
    loss: Tensor
    render: GaussianRender
    target: Tensor


class AvatarTask(SplatStepLog):
    def __init__(self, rig: HeadRig, base: RigParams, model: BoundGaussianModel, corrections: nn.ParameterDict,
                 optimizer: torch.optim.Optimizer, data: ViewBatch, frame_of_view: Tensor,
                 background: TrainingBackground, densify: DensifyState, cfg: AvatarTrainConfig,
                 generator: torch.Generator):
        self.rig, self.base, self.model, self.corr, self.optimizer = rig, base, model, corrections, optimizer
        self.data, self.frame_of_view, self.background, self.densify = data, frame_of_view, background, densify
        self.cfg, self.generator = cfg, generator
        present = rig.expression_present.to(torch.float64)
        self.present = present  # corrections of shapes the rig lacks stay zero
        self._sizes: Tensor | None = None  # [F] triangle sizes of the first frame, computed once

    def size(self) -> Tensor:  # [N] each Gaussian's triangle size on the first frame's mesh (no gradient)
        if self._sizes is None:
            with torch.no_grad():
                self._sizes = triangle_frames(self.vertices(0), self.rig.faces)[2]
        return self._sizes[self.model.binding]

    def vertices(self, b: int) -> Tensor:  # [V, 3] float32 world, differentiable in the corrections
        p = _corrected_frame(self.base, b, self.corr["expression"] * self.present, self.corr["rotation"])
        return p.similarity.apply(rig_vertices(self.rig, p))[0].float()

    def forward(self, step: int) -> AvatarStep:
        cfg, data = self.cfg, self.data
        i = int(torch.randint(len(data), (1,), generator=self.generator))
        b = int(self.frame_of_view[i])
        cams = data.cameras[[i]]
        bg = self.background.sample(self.generator, "cpu")
        target = composite(data.images[i:i + 1], None if data.alphas is None else data.alphas[i:i + 1], bg.detach())
        degree = min(step // cfg.sh_degree_interval, cfg.max_sh_degree)
        splats = self.model.posed(self.vertices(b), self.rig.faces, degree)
        render = render_splats(splats, cams, degree, bg)
        l1 = (render.rgb - target).abs().mean()
        loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * (1 - ssim(render.rgb, target).mean())
        loss = loss + self.priors()
        loss = loss + cfg.correction_weight * (self.corr["expression"][b].square().sum()
                                               + self.corr["rotation"][b].square().sum())
        return AvatarStep(loss, render, target)

    def priors(self) -> Tensor:
        """The face layer's position and scale priors, and the opacity prior of every Gaussian on the skin (the
        face layer, and hair lying on the scalp within ``position_threshold``)."""
        cfg, m = self.cfg, self.model
        k = self.size()  # [N] world metres per local unit
        dist = m.means.norm(dim=-1) * k
        face = m.layer == int(LayerCode.FACE)
        total = dist.new_zeros(())
        if bool(face.any()):
            s = m.log_scales[face].exp().max(-1).values * k[face]
            total = total + cfg.position_weight * torch.relu(dist[face] - cfg.position_threshold).mean() \
                / cfg.position_threshold
            total = total + cfg.scale_weight * torch.relu(s - cfg.scale_threshold).mean() / cfg.scale_threshold
        skin = face | ((m.layer == int(LayerCode.HAIR)) & (dist.detach() < cfg.position_threshold))
        if cfg.skin_opacity_weight > 0 and bool(skin.any()):
            o = torch.sigmoid(m.logit_opacities[skin])
            total = total + cfg.skin_opacity_weight * torch.relu(cfg.skin_opacity - o).mean()
        return total

    def update(self, step: int) -> None:
        cfg = self.cfg
        for g in self.optimizer.param_groups:
            if g["name"] == "means":
                g["lr"] = decayed_lr(cfg.means_lr, cfg.means_lr_final, step, cfg.steps)
        self.optimizer.step()

    def state(self) -> dict:
        return {"model": {k: v.detach().cpu() for k, v in self.model.per_gaussian().items()},
                "corrections": {k: v.detach().cpu() for k, v in self.corr.items()},
                "optimizer": self.optimizer.state_dict(), "grad2d": self.densify.grad2d.cpu(),
                "count": self.densify.count.cpu(), "background": self.background.state()}


def _optimizer(model: BoundGaussianModel, corr: nn.ParameterDict, cfg: AvatarTrainConfig) -> torch.optim.Adam:
    lrs = GaussianLearningRates(means=cfg.means_lr, quats=cfg.quats_lr, scales=cfg.scales_lr,
                                opacities=cfg.opacities_lr, sh0=cfg.sh0_lr, shN=cfg.shN_lr)
    groups = [{"params": [t], "lr": lr, "name": name}
              for name, (t, lr) in model.param_groups(lrs).items() if lr is not None]
    groups.append({"params": [corr["expression"]], "lr": cfg.expression_lr, "name": "expression_corrections"})
    groups.append({"params": [corr["rotation"]], "lr": cfg.pose_lr, "name": "rotation_corrections"})
    return torch.optim.Adam(groups, eps=1e-15)


def train_avatar(rig: HeadRig, base: RigParams, init: BoundSplats, train: ViewBatch, frame_of_view: Tensor,
                 cfg: AvatarTrainConfig, *, checkpoint_dir: Path | None = None, resume: bool = False,
                 scene_scale: float = 1.0, progress: bool = True) -> AvatarTrainResult:
    """Train ``init`` on ``train`` (view i shows frame ``frame_of_view[i]`` of ``base``: B frames)."""
    if frame_of_view.shape != (len(train),) or int(frame_of_view.max()) >= base.num_frames or \
            int(frame_of_view.min()) < 0:
        raise ValueError(f"frame_of_view must be [{len(train)}] indices into the {base.num_frames} frames")
    gen = seed_everything(cfg.seed)
    background = TrainingBackground.create(cfg.background, train.alphas is not None, "cpu")
    cfg = replace(cfg, background=background.choice)
    found = load_for_resume(checkpoint_dir, CheckpointKind.AVATAR, cfg) if (resume and checkpoint_dir) else None
    payload = None if found is None else found[1]
    B = base.num_frames
    if payload is not None:
        model = BoundGaussianModel.from_tensors(payload["state"]["model"])
        corr = nn.ParameterDict({k: nn.Parameter(v) for k, v in payload["state"]["corrections"].items()})
    else:
        model = BoundGaussianModel.from_local(init.local, init.binding, init.layer, cfg.max_sh_degree)
        corr = nn.ParameterDict({"expression": nn.Parameter(torch.zeros(B, base.expression.shape[1],
                                                                         dtype=torch.float64)),
                                 "rotation": nn.Parameter(torch.zeros(B, *base.pose.rotations.shape[1:],
                                                                      dtype=torch.float64))})
    optimizer = _optimizer(model, corr, cfg)
    group = background.param_group(name="background")
    if group is not None:
        optimizer.add_param_group(group)
    densify = DensifyState.empty(len(model), "cpu")
    if payload is not None:
        st = payload["state"]
        optimizer.load_state_dict(st["optimizer"])
        densify = DensifyState(st["grad2d"], st["count"])
        background.load_state(st["background"])
        restore_rng(payload, gen)
    task = AvatarTask(rig, base, model, corr, optimizer, train, frame_of_view.long(), background, densify, cfg, gen)
    local = LocalFrames(size=task.size,
                        groups=lambda: torch.where(task.model.layer != int(LayerCode.CLOTHING), task.model.binding, -1))
    hooks = [DensifyHook(model, optimizer, densify, cfg.densify, scene_scale, gen, local)]
    ck = None if checkpoint_dir is None else Checkpointing(checkpoint_dir, CheckpointKind.AVATAR, cfg,
                                                           cfg.checkpoint_every, cfg.checkpoint_minutes)
    options = LoopOptions("train avatar", cfg.steps, log_every=50, start=0 if payload is None else payload["step"],
                          max_seconds=cfg.max_seconds, checkpointing=ck)
    run = run_loop(task, options, gen, hooks, progress=progress)
    degree = min(run.steps // cfg.sh_degree_interval, cfg.max_sh_degree)
    m = task.model
    with torch.no_grad():
        local_splats = activate(m, degree).detach()
        e = (base.expression + corr["expression"].detach() * task.present).clamp(0, 1)
        pose = RigPose(base.pose.rotations + corr["rotation"].detach(), base.pose.translation)
    trained = BoundSplats(local_splats, m.binding.clone(), m.layer.clone())
    return AvatarTrainResult(trained, degree, replace(base, expression=e, pose=pose), run.steps, run.seconds,
                             background.for_evaluation(), run.history)
