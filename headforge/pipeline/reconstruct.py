"""Job: capture -> reconstruction (Gaussians or a neural field) -> held-out metrics, pictures, exports.

Two layers:

* the core, :func:`reconstruct` (= :func:`prepare` + :func:`run_prepared`): an in-memory
  :class:`Capture`, whose own split says which views are held out, and :class:`ReconstructOptions`
  -> a typed :class:`Reconstruction`. It writes into the directory it is given the method's files
  (``splats.ply``, ``splats.splat``, ``splats.glb`` or ``field.pt``), ``renders/``,
  ``contact_sheet.png``, ``turntable.gif`` and, last, ``metrics.json`` (``Reconstruction.to_json``,
  serialised once), and checkpoints into ``checkpoint_dir``. :func:`prepare` checks everything a user
  can get wrong (options, preset, images) before anything is written. A capture without held-out
  views (generated views) is trained and not scored: null scores with a note in ``metrics.json``,
  no ``renders/`` or contact sheet, a turntable as usual.
* the file wrapper, :func:`run_reconstruct`: reads the capture (``--test-every``) and chooses where
  the core writes (``headforge/atomic.py``). A fresh run or ``--resume`` trains in place
  (``out/checkpoints/``, so a crash can be resumed) and stages the final files in
  ``out/final.partial-*/``, merged in at the end with ``metrics.json`` last. ``--overwrite`` of an
  existing ``out`` trains in a staging directory beside it that replaces ``out`` only when
  everything succeeded: a failed run leaves the previous output as it was.

Safety of the file job: it holds ``OUT.lock`` (:func:`headforge.locks.output_lock`) from before its
first write to the end, so a second run on the same ``out`` is refused; every input (options, preset,
capture and its images, ``--init-ply``) is read and checked before anything is written or replaced;
``--resume`` without a checkpoint in ``out/checkpoints`` is refused. A stop by SIGINT/SIGTERM during
training (:class:`headforge.errors.Interrupted`) leaves the checkpoint of the last completed step in
``out/checkpoints`` for ``--resume``; an ``--overwrite`` run's checkpoints live in its staging folder and
go with it (the previous output stays).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from headforge import __version__
from headforge.atomic import atomic_directory, atomic_merge, check_output_path, write_text
from headforge.captures.capture import Capture, viewing_angles
from headforge.captures.formats import read_capture
from headforge.captures.inspect import CaptureSummary, summarize
from headforge.errors import InputError, Interrupted
from headforge.locks import output_lock
from headforge.pipeline.methods import (
    Device,
    FieldPreset,
    FieldSummary,
    GaussianPreset,
    GaussianSummary,
    Method,
    load_preset,
    resolve_device,
    train_field_method,
    train_gaussian_method,
)
from headforge.stages.evaluate import (
    Evaluation,
    evaluate,
    evaluation_record,
    orbit_cameras,
    write_renders,
    write_turntable,
)
from headforge.stages.views import ViewBatch, load_views
from headforge.training.checkpoint import latest_checkpoint
from headforge.validation import Checked, Count, ImageSide, NonNegativeInt

__all__ = ["Device", "HeldOutView", "Method", "PreparedJob", "ReconstructConfig", "ReconstructOptions",
           "Reconstruction", "check_job_inputs", "check_resumable_output", "prepare", "reconstruct", "run_prepared",
           "check_training_output", "run_reconstruct"]


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions(Checked):
    """What to train and how; the capture and the output directory come separately."""

    method: Method = Method.GAUSSIANS
    sdf: bool = False  # neural fields: VolSDF geometry instead of density
    preset: str = "default"  # headforge/presets/<gaussians|fields>_<preset>.toml, or a path to a TOML file
    resolution: ImageSide | None = None  # overrides the preset
    steps: Count | None = None  # overrides the preset
    device: Device = Device.AUTO
    init_ply: Path | None = None  # Gaussians: continue from exported splats instead of initialising
    turntable_frames: Count = 36
    progress: bool = True


@dataclass(frozen=True)
class ReconstructConfig(ReconstructOptions):
    """The file job: the options plus the capture on disk, the output directory and how to treat it."""

    capture: Path
    out: Path
    test_every: NonNegativeInt = 8  # hold out ceil(N / test_every) views spread over azimuth (Split.spread)
    resume: bool = False  # continue from the last checkpoint in out/checkpoints
    overwrite: bool = False  # replace out, at the end of a successful run

    def options(self) -> ReconstructOptions:
        return ReconstructOptions(**{f.name: getattr(self, f.name) for f in fields(ReconstructOptions)})


@dataclass(frozen=True)
class HeldOutView:
    view: int  # index in the capture
    azimuth_deg: float  # where the camera looks from (capture.viewing_angles): 0 = the face, 90 = the left
    elevation_deg: float


@dataclass(frozen=True)
class Reconstruction:
    method: Method
    preset: str
    summary: GaussianSummary | FieldSummary
    evaluation: Evaluation | None  # None: the capture holds out no views (nothing scored)
    test_views: tuple[HeldOutView, ...]
    steps: int
    train_seconds: float
    seconds: float  # the whole job
    device: Device  # the one it ran on (never AUTO)
    resolution: tuple[int, int]  # working (width, height)
    capture: str  # where the capture came from
    num_train_views: int
    history: tuple[tuple[int | float, ...], ...]
    out_dir: Path
    exports: tuple[str, ...]  # the method's files, relative to out_dir
    pictures: tuple[str, ...]  # renders/, contact_sheet.png, turntable.gif (those written)

    def to_json(self) -> dict:
        """The ``metrics.json`` record (its keys are read by benches and scripts: keep them)."""
        return {**evaluation_record(self.evaluation), "method": self.method.value, "preset": self.preset,
                "steps": self.steps, "train_seconds": round(self.train_seconds, 2),
                "seconds": round(self.seconds, 2), "device": self.device.value, **self.summary.to_json(),
                "resolution": list(self.resolution), "capture": self.capture,
                "num_train_views": self.num_train_views, "outputs": list(self.exports), "headforge": __version__,
                "test_views": [{"view": v.view, "azimuth_deg": round(v.azimuth_deg, 1),
                                "elevation_deg": round(v.elevation_deg, 1)} for v in self.test_views],
                "history": [list(h) for h in self.history]}

    @property
    def metrics(self) -> dict:
        """The ``metrics.json`` record as a dict (what was written; for scripts and benches)."""
        return self.to_json()


@dataclass(frozen=True)
class PreparedJob:
    """Checked inputs, ready to train: nothing has been written yet."""

    capture: Capture  # at the working resolution
    options: ReconstructOptions
    device: Device
    preset: GaussianPreset | FieldPreset
    summary: CaptureSummary
    train: ViewBatch
    test: ViewBatch | None  # None: no held-out views
    source: str
    started: float  # time.perf_counter() when the job began


def check_options(opts: ReconstructOptions) -> None:
    gaussians = opts.method == Method.GAUSSIANS
    if gaussians and opts.sdf:
        raise InputError("--sdf applies to the neural-field methods only", fix="use --method hashgrid|triplane|trigrid")
    if not gaussians and opts.init_ply is not None:
        raise InputError("--init-ply applies to --method gaussians only", path=opts.init_ply, fix="drop --init-ply")


def check_job_inputs(opts: ReconstructOptions) -> tuple[Device, GaussianPreset | FieldPreset]:
    """Everything but the capture that a job reads, checked before it writes: the options, the device, the
    preset and ``--init-ply``. Returns the device to run on and the preset with the overrides applied."""
    check_options(opts)
    device = resolve_device(opts.device)
    preset = load_preset(opts.method, opts.preset, resolution=opts.resolution, steps=opts.steps, sdf=opts.sdf)
    if opts.init_ply is not None:
        from headforge.representations.splat_io import load_splats_ply

        load_splats_ply(opts.init_ply)  # refused here, before any output is touched (training reads it again)
    return device, preset


def prepare(capture: Capture, opts: ReconstructOptions, *, source: str | None = None) -> PreparedJob:
    """Check the options, load the preset and the views (train and held out, as ``capture.split`` says)."""
    started = time.perf_counter()
    device, preset = check_job_inputs(opts)
    capture = capture.at_resolution(preset.resolution)
    summary = summarize(capture)
    train = load_views(capture, capture.split.train, progress=opts.progress)
    test = load_views(capture, capture.split.test) if capture.split.test else None
    if source is None:
        source = str(capture.source_path) if capture.source_path is not None else "in-memory capture"
    return PreparedJob(capture, opts, device, preset, summary, train, test, source, started)


def run_prepared(job: PreparedJob, out_dir: Path, *, checkpoint_dir: Path | None = None,
                 resume: bool = False) -> Reconstruction:
    """Train, score the held-out views, write exports, pictures and ``metrics.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints" if checkpoint_dir is None else Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    opts, summary = job.options, job.summary
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    common = dict(checkpoint_dir=checkpoint_dir, resume=resume, device=job.device, progress=opts.progress)
    if opts.method == Method.GAUSSIANS:
        trained = train_gaussian_method(job.train, bounds, job.preset.train, init_ply=opts.init_ply, **common)
    else:
        trained = train_field_method(job.train, bounds, job.preset.train, **common)
    ev = evaluate(trained.render_fn, job.test, trained.background) if job.test is not None else None
    exports = tuple(trained.write_exports(out_dir))
    pictures = [] if ev is None else write_renders(out_dir, ev)
    reference = (job.test if job.test is not None else job.train).cameras  # intrinsics of the turntable
    centre = torch.tensor(summary.centre, dtype=torch.float32)
    write_turntable(out_dir / "turntable.gif", trained.render_fn,
                    orbit_cameras(reference, centre, summary.distance_median, opts.turntable_frames),
                    trained.background)
    pictures.append("turntable.gif")
    angles = viewing_angles(job.capture.native_cameras)
    held_out = tuple(HeldOutView(i, float(angles[i, 0]), float(angles[i, 1])) for i in job.capture.split.test)
    rec = Reconstruction(opts.method, opts.preset, trained.summary, ev, held_out, trained.steps,
                         trained.train_seconds, time.perf_counter() - job.started, job.device,
                         (summary.width, summary.height), job.source, len(job.train), trained.history, out_dir,
                         exports, tuple(pictures))
    write_text(out_dir / "metrics.json", json.dumps(rec.to_json(), indent=2))
    return rec


def reconstruct(capture: Capture, opts: ReconstructOptions, out_dir: Path, *, checkpoint_dir: Path | None = None,
                resume: bool = False, source: str | None = None) -> Reconstruction:
    """The in-memory job: ``capture`` (with its own split) -> :class:`Reconstruction`, files in ``out_dir``.

    ``out_dir`` is written as is (the caller stages it, see :func:`run_reconstruct`)."""
    return run_prepared(prepare(capture, opts, source=source), out_dir, checkpoint_dir=checkpoint_dir, resume=resume)


def check_resumable_output(out: Path) -> Path:
    """The checkpoint ``--resume`` would continue from; ``InputError`` when there is nothing to resume."""
    fresh = "start a fresh run: the same command without --resume"
    if not out.exists():
        raise InputError("nothing to resume: the output directory does not exist", path=out, fix=fresh)
    found = latest_checkpoint(out / "checkpoints")
    if found is None:
        raise InputError("nothing to resume: no checkpoint (checkpoints/step_*.pt) in the output directory",
                         path=out, fix=f"{fresh}, with --overwrite to replace this folder or into another --out")
    return found


def check_training_output(out: Path, resume: bool, overwrite: bool) -> None:
    """The output policy of a training job (call it holding the output lock): a new folder, ``--resume`` of one
    with a checkpoint, or ``--overwrite``; never both."""
    if resume and overwrite:
        raise InputError("--resume continues the run in the output directory and --overwrite replaces it",
                         path=out, fix="give one of them")
    if out.exists() and not (resume or overwrite):
        raise InputError("output directory already exists", path=out,
                         fix="pass --overwrite to replace it (when the new run has finished), --resume to "
                             "continue its training, or another --out")
    if resume:
        check_resumable_output(out)


def run_reconstruct(cfg: ReconstructConfig) -> Reconstruction:
    """The file job behind ``headforge reconstruct`` (output policy in the module docstring)."""
    out = check_output_path(cfg.out, directory=True)
    with output_lock(out):
        check_training_output(out, cfg.resume, cfg.overwrite)
        capture = read_capture(cfg.capture, test_every=cfg.test_every)
        job = prepare(capture, cfg.options(), source=str(cfg.capture))
        if cfg.overwrite and out.exists():
            try:
                with atomic_directory(out, overwrite=True) as stage:
                    rec = run_prepared(job, stage)
            except Interrupted as stopped:
                raise stopped.checkpoint_lost("an --overwrite run trains in a staging folder, removed when it "
                                              f"stops; {out} is unchanged") from None
        else:
            with atomic_merge(out, last="metrics.json") as stage:
                rec = run_prepared(job, stage, checkpoint_dir=out / "checkpoints", resume=cfg.resume)
    return replace(rec, out_dir=out)
