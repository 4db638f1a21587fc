"""The job behind ``headforge avatar``: capture -> rig fit (or a given one) -> bound Gaussians trained over its
frames -> held-out scores, pictures and the avatar folder.

Output folder::

    avatar/                 the avatar (pipeline/avatar_file.py): rig_fit.json with the refined per-frame state,
                            texture.png, gaussians.ply (local values + binding_0 + layer), layers/<layer>.ply
    renders/test_*.png      held-out views
    contact_sheet.png       truth | render | error for held-out views (held-out frames first)
    turntable.gif           the neutral avatar turning
    expressions_sheet.png   a dozen ARKit expressions from three views
    metrics.json            written last: scores of held-out views of trained frames and of held-out frames
    checkpoints/            training checkpoints (``--resume`` continues from the last)

Frames: ``--frames`` chooses the timesteps the rig is fitted to (``first``, ``all`` or a list); ``--test-frames``
keeps some of them out of the Gaussian training, so their held-out views test expressions the Gaussians never saw
(their rig state comes from the fit of their own train views). Output safety is ``reconstruct``'s: a new folder
or ``--resume`` trains in ``OUT/checkpoints`` and merges the final files in with ``metrics.json`` last (a failure
keeps the checkpoints and writes nothing final); ``--overwrite`` builds everything in a staging folder that
replaces ``OUT`` only at the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from headforge import __version__
from headforge.atomic import atomic_directory, atomic_merge, check_output_path, write_text
from headforge.captures.capture import Capture
from headforge.captures.formats import read_capture
from headforge.captures.inspect import summarize
from headforge.errors import HeadforgeError, InputError, Interrupted
from headforge.locks import output_lock
from headforge.pipeline.avatar_file import save_avatar
from headforge.pipeline.avatar_views import evaluate_frames, write_pictures
from headforge.pipeline.fit_rig import default_config, fit_rig, parse_frames
from headforge.pipeline.fit_rig_job import fit_record, template_texture
from headforge.pipeline.fitted_rig import load_fitted_rig
from headforge.pipeline.reconstruct import check_training_output
from headforge.pipeline.rig_fit_file import RigFitRecord
from headforge.stages.avatar import Avatar
from headforge.stages.avatar_init import AvatarInitConfig, initial_bound_splats
from headforge.stages.avatar_train import AvatarTrainConfig, train_avatar
from headforge.stages.gaussian_train import scene_scale
from headforge.stages.rig_params import world_vertices
from headforge.stages.views import load_views
from headforge.validation import Checked, Count, ImageSide, NonNegativeInt

__all__ = ["AvatarJob", "AvatarRun", "run_avatar"]


@dataclass(frozen=True)
class AvatarJob(Checked):
    capture: Path
    out: Path
    rig: str = "builtin"
    rig_fit: Path | None = None  # a fit-rig output folder to start from (its rig, frames and texture)
    frames: str = "all"
    test_frames: str = ""  # comma list of timesteps kept out of the Gaussian training
    resolution: ImageSide = 256
    steps: Count = 3000
    face_points: Count = 30_000
    test_every: NonNegativeInt = 8
    offsets: bool = True
    turntable_frames: Count = 36
    cache_dir: Path | None = None  # landmark cache (default: OUT's parent/.headforge_cache)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True, eq=False)
class AvatarRun:
    avatar: Avatar
    record: RigFitRecord
    metrics: dict
    out: Path


def _say(job: AvatarJob, msg: str) -> None:
    if job.progress:
        print(f"headforge avatar: {msg}", flush=True)


def _fit(job: AvatarJob, capture: Capture, cache: Path):
    """-> (record, texture, rig): from --rig-fit, or a fresh fit of --frames."""
    if job.rig_fit is not None:
        fitted = load_fitted_rig(job.rig_fit)
        missing = [t for t in fitted.record.frames if t not in set(capture.frames.tolist())]
        if missing:
            raise InputError(f"the rig fit covers timesteps {missing} that the capture lacks", path=job.rig_fit,
                             fix="give the fit made on this capture")
        return fitted.record, fitted.texture, fitted.rig
    from headforge.assets.rigs import load_rig, parse_rig_spec

    spec = parse_rig_spec(job.rig)
    rig = load_rig(spec)
    fit = fit_rig(capture, rig, default_config(max(job.resolution, 256), job.offsets), rig_spec=job.rig,
                  frames=job.frames, cache_dir=cache, template_texture=template_texture(spec),
                  progress=(lambda m: _say(job, m)))
    return fit_record(fit, capture.at_resolution(max(job.resolution, 256))), fit.texture, rig


def _test_frames(spec: str, fitted: tuple[int, ...]) -> set[int]:
    if not spec.strip():
        return set()
    chosen = set(parse_frames(spec, list(fitted)))
    if chosen >= set(fitted):
        raise InputError(f"--test-frames {spec!r} holds out every fitted timestep {list(fitted)}",
                         fix="leave at least one timestep for training")
    return chosen


def build_avatar(job: AvatarJob, capture: Capture, out_dir: Path, checkpoint_dir: Path, cache: Path,
                 resume: bool = False) -> AvatarRun:
    start = time.perf_counter()
    record, texture, rig = _fit(job, capture, cache)
    fit_seconds = time.perf_counter() - start
    held = _test_frames(job.test_frames, record.frames)
    work = capture.at_resolution(job.resolution)
    slot = {t: b for b, t in enumerate(record.frames)}
    frames = work.frames.tolist()
    train_idx = [i for i in work.split.train if frames[i] in slot and frames[i] not in held]
    test_idx = [i for i in work.split.test if frames[i] in slot]
    if len(train_idx) < 2:
        raise InputError(f"{len(train_idx)} train views in the trained timesteps: an avatar needs at least two",
                         path=capture.source_path, fix="use a capture with more views, or a smaller --test-every")
    train = load_views(work, train_idx, progress=job.progress)
    if train.alphas is None:
        raise InputError("the capture has no masks: an avatar's layers and background need them",
                         path=capture.source_path, fix="give the capture masks (RGBA images or a masks/ folder)")
    frame_of_view = torch.tensor([slot[frames[i]] for i in train_idx])
    params = record.params
    b0 = int(frame_of_view[0])
    verts0 = world_vertices(rig, params.frame(b0))[0].float()
    first = [k for k in range(len(train_idx)) if int(frame_of_view[k]) == b0]
    summary = summarize(work)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    gen = torch.Generator().manual_seed(0)
    sub = type(train)(tuple(train.indices[k] for k in first), train.cameras[first], train.images[first],
                      train.alphas[first])
    init = initial_bound_splats(rig, verts0, params.similarity, texture, sub, bounds,
                                AvatarInitConfig(face_points=job.face_points), gen)
    _say(job, f"{len(init)} bound Gaussians to start ({init.counts()}); training {job.steps} steps on "
              f"{len(train_idx)} views of {len(set(frame_of_view.tolist()))} timesteps")
    trained = train_avatar(rig, params, init, train, frame_of_view, AvatarTrainConfig(steps=job.steps),
                           checkpoint_dir=checkpoint_dir, resume=resume, scene_scale=scene_scale(train),
                           progress=job.progress)
    # frames kept out of training keep the fit's state; trained frames take the refined one
    keep = torch.tensor([t in held for t in record.frames])
    refined = trained.params
    expr = torch.where(keep[:, None], params.expression, refined.expression)
    rots = torch.where(keep[:, None, None], params.pose.rotations, refined.pose.rotations)
    final = replace(params, expression=expr, pose=replace(params.pose, rotations=rots))
    avatar = Avatar(rig, record.rig_spec, final, texture, trained.gaussians, trained.sh_degree)
    record = replace(record, params=final)
    scores = evaluate_frames(avatar, work, test_idx, slot, held, trained.background)
    save_avatar(avatar, out_dir / "avatar", record)
    pictures = write_pictures(avatar, work, scores, out_dir, summary, trained.background, job.turntable_frames)
    metrics = {"headforge": __version__, "job": "avatar", "capture": str(capture.source_path or "in memory"),
               "rig": {"spec": record.rig_spec, "source": rig.source, "licence": rig.licence},
               "frames": list(record.frames), "test_frames": sorted(held), "resolution": [summary.width,
                                                                                       summary.height],
               "num_train_views": len(train_idx), "num_test_views": len(test_idx),
               "gaussians": avatar.gaussians.counts(), "num_gaussians": len(avatar.gaussians),
               "sh_degree": trained.sh_degree, "steps": trained.steps,
               "seconds": {"fit": round(fit_seconds, 2), "train": round(trained.seconds, 2),
                           "total": round(time.perf_counter() - start, 2)},
               **scores.to_json(), "outputs": ["avatar/", *pictures],
               "history": [list(h) for h in trained.history]}
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1))
    return AvatarRun(avatar, record, metrics, out_dir)


def run_avatar(job: AvatarJob) -> AvatarRun:
    out = check_output_path(job.out, directory=True)
    with output_lock(out):
        check_training_output(out, job.resume, job.overwrite)
        capture = read_capture(job.capture, test_every=job.test_every)
        if job.rig_fit is None:
            from headforge.assets.rigs import parse_rig_spec

            parse_rig_spec(job.rig)  # refused before anything is written
        cache = job.cache_dir or out.parent / ".headforge_cache"
        try:
            if job.overwrite and out.exists():
                with atomic_directory(out, overwrite=True) as stage:
                    run = build_avatar(job, capture, stage, stage / "checkpoints", cache)
            else:
                with atomic_merge(out, last="metrics.json") as stage:
                    run = build_avatar(job, capture, stage, out / "checkpoints", cache, resume=job.resume)
        except Interrupted as stopped:
            if job.overwrite:
                raise stopped.checkpoint_lost("an --overwrite run trains in a staging folder, removed when it "
                                              f"stops; {out} is unchanged") from None
            raise
        except FloatingPointError as err:
            raise HeadforgeError(str(err), fix="lower the learning rates or check the capture") from None
    return replace(run, out=out)
