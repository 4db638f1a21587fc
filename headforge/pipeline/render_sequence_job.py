"""The job behind ``headforge render-capture RIG [--animation CLIP] [--frames N]``: a dynamic capture of a rig.

``render-capture``'s positional MESH_OR_RIG names one of (:func:`source_kind`):

* a mesh file (OBJ / PLY / GLB): the static render of ``stages/render_capture.py``, as before;
* ``builtin``: the built-in rig with its own texture (the sample head's albedo in the rig's UVs, the
  template texture ``fit-rig`` starts from), at its template identity;
* a ``headforge fit-rig`` output folder (or its ``rig_fit.json``): the fitted subject (identity and offsets)
  with its baked texture, through ``pipeline/fitted_rig.load_fitted_rig``.

A rig is rendered with ``stages/render_sequence.py`` in the NeRSemble layout: the clip's frames (all of them at
the clip's fps, or ``--frames N`` spanning it), or one timestep of the neutral rig without ``--animation``.
The clip and the output path are checked before the rig is loaded; the clip against the rig before anything
is rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
from torch import Tensor

from headforge.atomic import check_output_path
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.arkit import NUM_ARKIT
from headforge.representations.rig.clips import Clip, neutral_clip, read_clip, resample
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.render_capture import Supersample
from headforge.stages.render_sequence import RenderedSequence, RenderSequenceConfig, render_sequence
from headforge.stages.rig_params import RigParams, Similarity
from headforge.validation import Checked, Count

BUILTIN_SOURCE = "builtin"
RIG_FIT_FILE = "rig_fit.json"  # what pipeline/rig_fit_file.py writes into a fit-rig folder


class SourceKind(StrEnum):
    MESH = "mesh"  # a textured mesh file: a static capture
    BUILTIN_RIG = "builtin"  # the built-in rig and its template texture
    FITTED_RIG = "fitted"  # a fit-rig output folder: the fitted subject and its baked texture


def source_kind(source: str | Path) -> SourceKind:
    """What MESH_OR_RIG names (nothing is read but the folder listing)."""
    if str(source) == BUILTIN_SOURCE:
        return SourceKind.BUILTIN_RIG
    path = Path(source)
    if path.is_dir():
        if not (path / RIG_FIT_FILE).is_file():
            raise InputError(f"a folder without {RIG_FIT_FILE}: not a fitted rig", path=path,
                             fix="give a mesh file, `builtin`, or a folder that `headforge fit-rig` wrote")
        return SourceKind.FITTED_RIG
    if path.name == RIG_FIT_FILE:
        return SourceKind.FITTED_RIG
    return SourceKind.MESH


def refuse_clip_options(mesh: str | Path, animation: str | None, frames: int | None) -> None:
    """A mesh source takes no clip: ``--animation`` / ``--frames`` are refused, naming the mesh."""
    flags = " and ".join(f for f, v in (("--animation", animation), ("--frames", frames)) if v is not None)
    if flags:
        raise InputError(f"{flags}: a clip animates a head rig, but a mesh has no expressions", path=mesh,
                         fix=f"give `builtin` or a `headforge fit-rig` output folder instead, or drop {flags}")


@dataclass(frozen=True, eq=False)
class AnimatableHead:
    """A rig with a subject and a texture: what a dynamic capture renders."""

    rig: HeadRig
    base: RigParams  # the subject's identity and offsets (expression, pose and similarity are not used)
    mesh_of: Callable[[Tensor], TexturedMesh]  # posed vertices [V, 3] (rig frame) -> the textured mesh to draw
    description: str


def rest_params(rig: HeadRig) -> RigParams:
    """The rig's template subject: zero identity, no offsets, one neutral frame, the identity similarity."""
    f64 = torch.float64
    return RigParams(Similarity(torch.ones((), dtype=f64), torch.eye(3, dtype=f64), torch.zeros(3, dtype=f64)),
                     torch.zeros(rig.num_identity, dtype=f64), torch.zeros(1, NUM_ARKIT, dtype=f64),
                     RigPose.rest(1, dtype=f64))


def builtin_head() -> AnimatableHead:
    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.pipeline.fit_rig_job import template_texture
    from headforge.stages.rig_evaluate import rig_mesh

    spec = parse_rig_spec(BUILTIN_SOURCE)
    rig = load_rig(spec)
    texture = template_texture(spec)
    return AnimatableHead(rig, rest_params(rig), lambda v: rig_mesh(rig, v, texture), "the built-in rig")


def fitted_head(folder: str | Path) -> AnimatableHead:
    from headforge.pipeline.fitted_rig import load_fitted_rig

    fitted = load_fitted_rig(folder)
    return AnimatableHead(fitted.rig, fitted.params, fitted.mesh,
                          f"the {fitted.record.rig_spec} rig fitted in {folder}")


def load_head(source: str | Path) -> AnimatableHead:
    kind = source_kind(source)
    if kind is SourceKind.BUILTIN_RIG:
        return builtin_head()
    if kind is SourceKind.FITTED_RIG:
        return fitted_head(source)
    raise InputError("a mesh has no expressions to animate", path=source,
                     fix="give `builtin` or a `headforge fit-rig` output folder")


def load_clip(animation: str | None, frames: int | None) -> Clip:
    """The clip to render: ``animation`` (builtin:NAME or a JSON file) at its own length or resampled to
    ``frames``; without one, one neutral frame."""
    if animation is None:
        if frames is not None:
            raise InputError("--frames needs --animation (without a clip one neutral timestep is rendered)",
                             fix="add --animation builtin:talk (or a clip file), or drop --frames")
        return neutral_clip()
    clip = read_clip(animation)
    return clip if frames is None else resample(clip, frames)


@dataclass(frozen=True)
class RenderSequenceJob(Checked):
    source: str  # builtin, or a fit-rig output folder
    out: Path
    animation: str | None = None  # builtin:NAME or a clip JSON file
    frames: Count | None = None  # None: the clip's own frames
    cameras: RigConfig = field(default_factory=lambda: RenderSequenceConfig().rig)
    supersample: Supersample = 2
    # options given that only place a mesh (--units, --up ...): refused for a rig (already in the head frame)
    mesh_options: tuple[str, ...] = ()
    overwrite: bool = False


def run_render_sequence(job: RenderSequenceJob, progress: bool = True) -> RenderedSequence:
    if job.mesh_options:
        given = ", ".join(job.mesh_options)
        raise InputError(f"{given}: these options place a mesh in the head frame, but {job.source} is a rig, "
                         "already in it", fix=f"drop {given}")
    out = check_output_path(job.out, directory=True)
    if out.exists() and not job.overwrite:  # refused before the rig is loaded (seconds)
        raise InputError("output directory already exists", path=out, fix="choose another --out or pass --overwrite")
    clip = load_clip(job.animation, job.frames)
    head = load_head(job.source)
    cfg = RenderSequenceConfig(rig=job.cameras, supersample=job.supersample)
    return render_sequence(head.rig, head.base, head.mesh_of, clip, cfg, out, overwrite=job.overwrite,
                           progress=progress)
