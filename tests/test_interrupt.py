"""SIGINT / SIGTERM during training: a checkpoint at the last completed step, one line, exit 130 / 143, and a
``--resume`` that ends where the uninterrupted run ends. Also the CLI's other exit codes and ``--resume`` with
nothing to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor

from headforge.cli import main
from headforge.errors import Interrupted
from headforge.training.checkpoint import CheckpointKind, latest_checkpoint
from headforge.training.loop import Checkpointing, Hook, LoopOptions, run_loop, seed_everything

ROOT = Path(__file__).resolve().parents[1]


# --- the loop, in process ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    steps: int = 10


@dataclass(frozen=True)
class ToyStep:
    loss: Tensor


class ToyTask:
    def __init__(self, generator: torch.Generator):
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.optimizer = torch.optim.SGD([self.w], lr=0.1)
        self.generator = generator

    def forward(self, step: int) -> ToyStep:
        return ToyStep((self.w - torch.rand(3, generator=self.generator)).square().sum())

    def update(self, step: int) -> None:
        self.optimizer.step()

    def log_row(self, step: int, out: ToyStep) -> tuple:
        return step, out.loss.item()

    def postfix(self, row: tuple) -> dict[str, str]:
        return {}

    def state(self) -> dict:
        return {"w": self.w.detach().clone()}


class SignalAt(Hook):
    """Sends ``signum`` to this process during step ``step`` (before its backward pass: mid-step)."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def step_pre_backward(self, step, out):
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def toy_loop(tmp_path: Path, hooks, steps: int = 10, checkpointing: bool = True):
    gen = seed_everything(0)
    ck = Checkpointing(tmp_path / "ck", CheckpointKind.GAUSSIANS, ToyConfig(steps), every=100) if checkpointing \
        else None
    return run_loop(ToyTask(gen), LoopOptions("toy", steps, log_every=1, checkpointing=ck), gen, hooks,
                    progress=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_finishes_the_step_checkpoints_it_and_stops(tmp_path, signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as stopped:
        toy_loop(tmp_path, [SignalAt(4, signum)])
    e = stopped.value
    assert (e.step, e.steps, e.signum) == (4, 10, signum)
    assert e.checkpoint == tmp_path / "ck" / "step_000004.pt" and e.checkpoint.is_file()
    assert latest_checkpoint(tmp_path / "ck") == e.checkpoint  # nothing after the stop
    assert torch.load(e.checkpoint, weights_only=False)["step"] == 4
    assert str(e) == f"interrupted at step 4 of 10; checkpoint {e.checkpoint}"
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back


def test_a_signal_during_the_last_step_still_stops(tmp_path):
    with pytest.raises(Interrupted) as stopped:
        toy_loop(tmp_path, [SignalAt(10, signal.SIGINT)])
    assert stopped.value.step == 10 and stopped.value.checkpoint.name == "step_000010.pt"


def test_without_checkpointing_the_stop_says_none_was_kept(tmp_path):
    with pytest.raises(Interrupted, match=r"interrupted at step 2 of 10; no checkpoint kept \(this loop writes no "):
        toy_loop(tmp_path, [SignalAt(2, signal.SIGINT)], checkpointing=False)


def test_no_signal_no_change(tmp_path):
    result = toy_loop(tmp_path, [])
    assert result.steps == 10 and [p.name for p in result.checkpoints] == ["step_000010.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- the CLI: exit codes, one-line messages -------------------------------------------------------------------


def test_version(capsys):
    from headforge import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"headforge {__version__}"


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_exits_1_with_where_to_report_it(tiny_capture_dir, monkeypatch, capsys, debug):
    import headforge.captures.formats as formats

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(formats, "read_capture", broken)
    monkeypatch.delenv("HEADFORGE_DEBUG", raising=False)
    assert main(["inspect", str(tiny_capture_dir), *(["--debug"] if debug else [])]) == 1
    err = capsys.readouterr().err
    assert "headforge: internal error: ZeroDivisionError: division by zero\nThis is a bug in headforge" in err
    assert "please report it at" in err
    assert ("Traceback (most recent call last)" in err) == debug


def test_headforge_debug_env_prints_the_traceback(tiny_capture_dir, monkeypatch, capsys):
    import headforge.captures.formats as formats

    monkeypatch.setattr(formats, "read_capture", lambda *a, **k: [][1])
    monkeypatch.setenv("HEADFORGE_DEBUG", "1")
    assert main(["inspect", str(tiny_capture_dir)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "internal error: IndexError" in err


def test_ctrl_c_outside_training_is_one_line_and_130(tiny_capture_dir, monkeypatch, capsys):
    import headforge.captures.formats as formats

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "read_capture", ctrl_c)
    assert main(["inspect", str(tiny_capture_dir)]) == 130
    assert capsys.readouterr().err == "headforge: interrupted\n"


def test_sigterm_outside_training_unwinds_cleanly_and_exits_143(tmp_path, monkeypatch, capsys, sample_head):
    """SIGTERM while render-capture renders: the staging folder and the lock go, one line, exit 143."""
    import headforge.stages.render_capture as stage
    from headforge.representations.mesh_io import save_glb

    save_glb(sample_head.mesh, tmp_path / "head.glb")
    monkeypatch.setattr(stage, "render_mesh", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    assert main(["render-capture", str(tmp_path / "head.glb"), "--out", str(tmp_path / "cap"), "--rig", "ring",
                 "--num-views", "4", "--resolution", "32"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "headforge: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.glb"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_inspect_writes_no_plot_unless_asked(tiny_capture_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(tiny_capture_dir)]) == 0
    assert "pass --plot PATH" in capsys.readouterr().out
    assert main(["inspect", str(tiny_capture_dir), "--json"]) == 0
    json.loads(capsys.readouterr().out)  # nothing but the JSON
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "dir").mkdir()
    assert main(["inspect", str(tiny_capture_dir), "--plot", str(tmp_path / "dir")]) == 2
    assert "the output path is a directory" in capsys.readouterr().err
    assert main(["inspect", str(tiny_capture_dir), "--plot", "p.png"]) == 0
    assert (tmp_path / "p.png").is_file()


def test_resume_with_nothing_to_resume_is_refused(tiny_capture_dir, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["reconstruct", str(tiny_capture_dir), "--out", str(missing), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"headforge: error: {missing}: nothing to resume: the output directory does not exist\n"
                          "Fix: start a fresh run")
    assert not missing.exists()
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    assert main(["reconstruct", str(tiny_capture_dir), "--out", str(empty), "--resume"]) == 2
    assert "nothing to resume: no checkpoint (checkpoints/step_*.pt)" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] in (["missing", "empty"], ["empty"])


# --- real processes: ctrl-C in `headforge reconstruct`, then --resume ---------------------------------------

# Sends the signal named by $STOP_SIG to itself right after step $STOP_AT's update, then runs the real CLI: the
# timing is made exact, the signal, its handler and the exit are the real ones.
STOPPER = """
import os, signal, sys
from headforge.stages import gaussian_train
from headforge.cli import main
at, signum = int(os.environ["STOP_AT"]), getattr(signal, os.environ["STOP_SIG"])
update = gaussian_train.GaussianTask.update
def update_then_signal(self, step):
    update(self, step)
    if step == at:
        os.kill(os.getpid(), signum)
gaussian_train.GaussianTask.update = update_then_signal
sys.exit(main(sys.argv[1:]))
"""

TINY = "resolution = 32\n[train]\nsteps = {steps}\ncheckpoint_every = {every}\ninit_points = 600\n"


def headforge(*args: str, stopper: dict | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(stopper or {})}
    env.pop("HEADFORGE_DEBUG", None)
    cmd = [sys.executable, *(["-c", STOPPER] if stopper else ["-m", "headforge.cli"]), *args, "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def ring_capture(tmp_path_factory, sample_head) -> Path:
    """The sample head, rendered by `headforge render-capture` from an 8-view ring at 32 px."""
    from headforge.representations.mesh_io import save_glb

    root = tmp_path_factory.mktemp("ring")
    save_glb(sample_head.mesh, root / "head.glb")
    assert main(["render-capture", str(root / "head.glb"), "--out", str(root / "cap"), "--rig", "ring",
                 "--num-views", "8", "--resolution", "32", "--supersample", "1"]) == 0
    return root / "cap"


def test_ctrl_c_leaves_a_checkpoint_that_resume_finishes_like_an_uninterrupted_run(ring_capture, tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY.format(steps=30, every=1000))
    common = ["--preset", str(preset), "--test-every", "4", "--device", "cpu"]
    rc, _, err = headforge("reconstruct", str(ring_capture), "--out", str(tmp_path / "whole"), *common)
    assert rc == 0, err

    out = tmp_path / "stopped"
    args = ["reconstruct", str(ring_capture), "--out", str(out), *common]
    rc, _, err = headforge(*args, stopper={"STOP_AT": "12", "STOP_SIG": "SIGINT"})
    checkpoint = out / "checkpoints" / "step_000012.pt"
    assert rc == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line == (f"headforge: interrupted at step 12 of 30; checkpoint {checkpoint}; continue with: headforge "
                    + " ".join(args) + " --threads 1 --resume")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no final-looking output
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000012.pt"]
    assert not (tmp_path / "stopped.lock").exists()

    rc, _, err = headforge(*args, "--resume")
    assert rc == 0, err
    assert (out / "splats.ply").read_bytes() == (tmp_path / "whole" / "splats.ply").read_bytes()
    resumed, whole = (json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "whole"))
    for key in ("psnr", "psnr_masked", "ssim", "num_gaussians", "steps"):
        assert resumed[key] == whole[key], key


def test_sigterm_at_any_moment_stops_with_143_and_a_checkpoint(ring_capture, tmp_path):
    """Real timing: SIGTERM once the first checkpoint exists, wherever training then is."""
    preset = tmp_path / "long.toml"
    preset.write_text(TINY.format(steps=100_000, every=3))
    out = tmp_path / "run"
    proc = headforge("reconstruct", str(ring_capture), "--out", str(out), "--preset", str(preset), "--device", "cpu",
                     wait=False)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("headforge: interrupted at step ") and line.endswith(" --resume")
    step = int(line.split("at step ")[1].split()[0])
    assert step >= 3 and f"of 100000; checkpoint {out / 'checkpoints' / f'step_{step:06d}.pt'};" in line
    assert latest_checkpoint(out / "checkpoints").name == f"step_{step:06d}.pt"
    assert torch.load(latest_checkpoint(out / "checkpoints"), weights_only=False)["step"] == step
