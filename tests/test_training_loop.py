"""The shared training loop: step order, budgets, checkpoints refused on resume for the right reasons."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import headforge.training.loop as loop_mod
from headforge.errors import InputError
from headforge.training.background import Background, TrainingBackground, effective_background
from headforge.training.checkpoint import (
    CheckpointKind,
    check_resumable,
    config_differences,
    load_for_resume,
    save_checkpoint,
)
from headforge.training.loop import Checkpointing, Hook, LoopOptions, run_loop, seed_everything


@dataclass(frozen=True)
class Inner:
    width: int = 4
    name: str = "a"


@dataclass(frozen=True)
class ToyConfig:
    steps: int = 10
    lr: float = 0.1
    inner: Inner = dataclasses.field(default_factory=Inner)
    checkpoint_every: int = 5
    max_seconds: float | None = None


@dataclass(frozen=True)
class ToyStep:
    loss: Tensor


class ToyTask:
    """Fit w to a noisy target drawn from the generator each step; records what happens in which order."""

    def __init__(self, generator: torch.Generator, events: list, loss_at: dict[int, float] | None = None):
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.optimizer = torch.optim.SGD([self.w], lr=0.1)
        self.generator, self.events, self.loss_at = generator, events, loss_at or {}

    def forward(self, step: int) -> ToyStep:
        self.events.append(("forward", step))
        target = torch.rand(3, generator=self.generator)
        loss = (self.w - target).square().sum() * self.loss_at.get(step, 1.0)
        return ToyStep(loss)

    def update(self, step: int) -> None:
        self.events.append(("update", step, self.w.grad is not None))
        self.optimizer.step()

    def log_row(self, step: int, out: ToyStep) -> tuple:
        return step, out.loss.item()

    def postfix(self, row: tuple) -> dict[str, str]:
        return {"loss": f"{row[1]:.3f}"}

    def state(self) -> dict:
        return {"w": self.w.detach().clone()}


class Recorder(Hook):
    def __init__(self, events: list):
        self.events = events

    def step_pre(self, step):
        self.events.append(("pre", step))

    def step_pre_backward(self, step, out):
        self.events.append(("pre_backward", step, out.loss.grad_fn is not None))

    def step_post_backward(self, step, out):
        self.events.append(("post_backward", step))


class FakeClock:
    """perf_counter that advances one second per call."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_hooks_run_around_the_step_in_order():
    events = []
    gen = seed_everything(0)
    task = ToyTask(gen, events)
    result = run_loop(task, LoopOptions("toy", 2, log_every=1), gen, [Recorder(events)], progress=False)
    step1 = [("pre", 1), ("forward", 1), ("pre_backward", 1, True), ("post_backward", 1), ("update", 1, True)]
    assert events[:5] == step1 and events[5:] == [(e[0], 2, *e[2:]) for e in step1]
    assert result.steps == 2 and [r[0] for r in result.history] == [1, 2] and not result.out_of_time


def test_budget_stops_after_the_step_it_ran_out_in_and_checkpoints_there(tmp_path, monkeypatch):
    monkeypatch.setattr(loop_mod, "time", FakeClock())
    gen = seed_everything(0)
    cfg = ToyConfig(steps=100, checkpoint_every=1000, max_seconds=3.5)
    ck = Checkpointing(tmp_path, CheckpointKind.FIELD, cfg, cfg.checkpoint_every)
    result = run_loop(ToyTask(gen, []), LoopOptions("toy", cfg.steps, log_every=10, max_seconds=cfg.max_seconds,
                                                    checkpointing=ck), gen, progress=False)
    # clock: start 1; steps end at 2, 3, 4, 5 -> step 4 ends 4 s after the start, past 3.5
    assert result.steps == 4 and result.out_of_time
    assert [p.name for p in result.checkpoints] == ["step_000004.pt"] == [p.name for p in tmp_path.iterdir()]
    payload = torch.load(tmp_path / "step_000004.pt", weights_only=False)
    assert payload["step"] == 4 and payload["kind"] == "field" and payload["config"]["max_seconds"] == 3.5


def test_checkpoints_by_wall_time(tmp_path, monkeypatch):
    monkeypatch.setattr(loop_mod, "time", FakeClock())
    gen = seed_everything(0)
    cfg = ToyConfig(steps=6, checkpoint_every=1000)
    # each step costs 1 s of fake clock, each save 1 s more: with 1.5 s between saves, steps 2 and 4 save
    # (2 s after the last save), and step 6 as the last one
    ck = Checkpointing(tmp_path, CheckpointKind.FIELD, cfg, cfg.checkpoint_every, minutes=1.5 / 60)
    result = run_loop(ToyTask(gen, []), LoopOptions("toy", cfg.steps, log_every=10, checkpointing=ck), gen,
                      progress=False)
    assert [p.name for p in result.checkpoints] == ["step_000002.pt", "step_000004.pt", "step_000006.pt"]


def test_divergence_is_reported_with_its_step():
    gen = seed_everything(0)
    task = ToyTask(gen, [], loss_at={3: float("nan")})
    with pytest.raises(FloatingPointError, match="toy diverged at step 3.*lower the lr"):
        run_loop(task, LoopOptions("toy", 5, log_every=1, divergence_hint="lower the lr"), gen, progress=False)


def test_config_differences_name_dotted_keys():
    old = dataclasses.asdict(ToyConfig())
    new = dataclasses.asdict(ToyConfig(lr=0.2, inner=Inner(width=8)))
    assert config_differences(old, new) == [("inner.width", 4, 8), ("lr", 0.1, 0.2)]


def checkpoint_of(tmp_path, cfg, step=5, kind=CheckpointKind.FIELD):
    return save_checkpoint(tmp_path, kind, cfg, step, torch.Generator().manual_seed(0), {"w": torch.zeros(3)})


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    path = checkpoint_of(tmp_path, ToyConfig())
    with pytest.raises(InputError) as err:
        load_for_resume(tmp_path, CheckpointKind.FIELD, ToyConfig(lr=0.2, inner=Inner(name="b")))
    assert err.value.path == path
    assert "inner.name: 'a' -> 'b'" in err.value.problem and "lr: 0.1 -> 0.2" in err.value.problem
    # budget and checkpoint cadence may change, and steps may grow
    found = load_for_resume(tmp_path, CheckpointKind.FIELD, ToyConfig(steps=50, checkpoint_every=7, max_seconds=9.0))
    assert found is not None and found[0] == path and found[1]["step"] == 5


def test_resume_refuses_fewer_steps_than_done(tmp_path):
    checkpoint_of(tmp_path, ToyConfig(steps=10), step=8)
    with pytest.raises(InputError, match="steps = 6 is before the checkpoint's step 8"):
        load_for_resume(tmp_path, CheckpointKind.FIELD, ToyConfig(steps=6))


def test_resume_refuses_another_kind_and_old_formats(tmp_path):
    path = checkpoint_of(tmp_path, ToyConfig(), kind=CheckpointKind.FIELD)
    with pytest.raises(InputError, match="field training checkpoint; a gaussians run cannot resume"):
        load_for_resume(tmp_path, CheckpointKind.GAUSSIANS, ToyConfig())
    with pytest.raises(InputError, match="no format version"):
        check_resumable(path, {"step": 5, "config": {}}, CheckpointKind.FIELD, ToyConfig())


def test_field_checkpoint_into_gaussian_training_is_refused(tmp_path):
    from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
    from headforge.stages.field_train import FieldTrainConfig
    from headforge.stages.gaussian_train import GaussianTrainConfig, train_gaussians
    from headforge.stages.views import ViewBatch

    path = checkpoint_of(tmp_path, FieldTrainConfig(steps=10))
    cams = make_rig(RigConfig(kind=RigKind.RING, num_views=4, resolution=8))
    views = ViewBatch((0, 1, 2, 3), cams, torch.zeros(4, 8, 8, 3), torch.ones(4, 8, 8))
    with pytest.raises(InputError, match="field training checkpoint; a gaussians run cannot resume") as err:
        train_gaussians(views, (torch.full((3,), -0.2), torch.full((3,), 0.2)), GaussianTrainConfig(steps=10),
                        checkpoint_dir=tmp_path, resume=True, progress=False)
    assert err.value.path == path


def test_background_choice():
    assert effective_background(Background.RANDOM, has_masks=False) == Background.LEARNED
    assert effective_background(Background.RANDOM, has_masks=True) == Background.RANDOM
    assert effective_background(Background.WHITE, has_masks=False) == Background.WHITE
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    rnd = TrainingBackground.create(Background.RANDOM, True, "cpu")
    assert torch.equal(rnd.sample(gen_a, "cpu"), torch.rand(3, generator=gen_b))
    assert rnd.param_group() is None and torch.equal(rnd.for_evaluation(), torch.ones(3))
    black = TrainingBackground.create(Background.BLACK, True, "cpu")
    assert torch.equal(black.sample(gen_a, "cpu"), torch.zeros(3))
    learned = TrainingBackground.create(Background.RANDOM, False, "cpu")
    learned.load_state(torch.tensor([0.2, 1.5, -0.1]))
    assert learned.param_group()["params"] == [learned.learned]
    assert torch.equal(learned.sample(gen_a, "cpu"), torch.tensor([0.2, 1.0, 0.0]))
    assert torch.equal(learned.for_evaluation(), torch.tensor([0.2, 1.0, 0.0]))


def test_loop_options_are_checked_in_the_trainer_configs():
    from headforge.stages.field_train import FieldTrainConfig
    from headforge.stages.gaussian_train import GaussianTrainConfig

    with pytest.raises(ValueError, match=r"GaussianTrainConfig.max_seconds = 0 is not allowed"):
        GaussianTrainConfig(max_seconds=0)
    with pytest.raises(ValueError, match=r"FieldTrainConfig.checkpoint_minutes = -1.0 is not allowed"):
        FieldTrainConfig(checkpoint_minutes=-1.0)
    with pytest.raises(ValueError, match="GaussianTrainConfig.checkpoint_every = 0"):
        GaussianTrainConfig(checkpoint_every=0)
    assert GaussianTrainConfig(max_seconds=None, checkpoint_minutes=None).max_seconds is None
