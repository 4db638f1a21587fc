"""The file jobs behind ``headforge hair-swap`` and ``headforge edit-texture``: read avatar folders, edit, write.

``hair-swap RECEIVER DONOR --out DIR``::

    avatar/            the result (pipeline/avatar_file.py layout): the receiver's rig fit, texture, face and
                       clothing Gaussians, the donor's hair Gaussians moved onto the receiver's scalp
    before_after.png   receiver | donor | result, three views each (stages/avatar_sheets.py)
    metrics.json       (last) the face-region PSNR of the result against the receiver's own render, per view, over
                       the receiver's face-skin pixels (stages/rig_evaluate.region_pixels), the neutral rendered
                       in the rig frame from the sheet's three cameras; the Gaussian counts per layer of the
                       receiver, the donor and the result; whether the rigs were the same

``edit-texture AVATAR --out DIR (--tint R,G,B | --texture PNG)``: ``avatar/`` edited and ``before_after.png``.
A texture PNG must be square (the atlas is); another size is resampled to the avatar's (area averaging down,
bilinear up) and the command says so. Both jobs take the output lock, read and check every input before
writing, and write through one staging folder (``atomic_directory``): a failed run leaves no output (or the
previous one, with ``--overwrite``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from headforge import __version__
from headforge.atomic import atomic_directory, check_output_path
from headforge.captures.images import read_image, resize_image, write_image
from headforge.errors import InputError
from headforge.locks import output_lock
from headforge.metrics import psnr
from headforge.pipeline.avatar_file import load_avatar, save_avatar
from headforge.pipeline.rig_fit_file import RigFitRecord, read_rig_fit
from headforge.representations.rig.head_rig import Region
from headforge.stages.avatar import Avatar, avatar_vertices
from headforge.stages.avatar_layers import composite_render, replace_face_texture, same_rig, swap_hair, tint_face
from headforge.stages.avatar_sheets import DEFAULT_VIEWS, avatar_cameras, before_after_sheet, comparison_sheet
from headforge.stages.rig_evaluate import region_pixels
from headforge.validation import Checked
from headforge.viz.rig_sheet import TileSize

__all__ = ["EditTextureJob", "HairSwapJob", "face_region_psnr", "parse_tint", "read_avatar", "run_edit_texture",
           "run_hair_swap"]

AVATAR_DIR = "avatar"
SHEET = "before_after.png"


@dataclass(frozen=True)
class HairSwapJob(Checked):
    receiver: Path
    donor: Path
    out: Path
    size: TileSize = 256  # sheet tile height (pixels); the PSNR is measured at this size too
    overwrite: bool = False


@dataclass(frozen=True)
class EditTextureJob(Checked):
    avatar: Path
    out: Path
    tint: str | None = None  # "R,G,B" factors > 0
    texture: Path | None = None  # a PNG in the avatar's atlas layout
    size: TileSize = 256
    overwrite: bool = False


def read_avatar(path: Path) -> tuple[Avatar, RigFitRecord]:
    """An avatar folder (``OUT/avatar`` or ``OUT``) and its rig fit record."""
    avatar = load_avatar(path)
    folder = path / AVATAR_DIR if (path / AVATAR_DIR / "avatar.json").is_file() else path
    return avatar, read_rig_fit(folder / "rig_fit.json")


def face_region_psnr(reference: Avatar, edited: Avatar, size: int) -> tuple[list[float], list[int]]:
    """Per sheet view: PSNR (dB) of ``edited``'s neutral render against ``reference``'s over ``reference``'s
    front-most face-skin pixels (NaN where a view has none), and how many pixels that is (rig frame, the sheet's
    cameras)."""
    cams = avatar_cameras(reference, size)
    bg = torch.ones(3)
    ref, _ = composite_render(reference, reference.neutral_params(), cams, bg, world=False)
    out, _ = composite_render(edited, edited.neutral_params(), cams, bg, world=False)
    verts = avatar_vertices(reference, reference.neutral_params(), world=False)[0]
    region = region_pixels(reference.rig, verts, cams, Region.FACE_SKIN)
    scores = psnr(out, ref, region.float())
    pixels = [int(n) for n in region.flatten(1).sum(1)]
    return [float(s) if n else math.nan for s, n in zip(scores, pixels, strict=True)], pixels


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InputError("output directory already exists", path=out,
                         fix="pass --overwrite to replace it (when the new result is written), or another --out")


def run_hair_swap(job: HairSwapJob, progress=print) -> tuple[Path, dict]:
    """Swap the donor's hair onto the receiver; -> (the output folder, the metrics written)."""
    out = check_output_path(job.out, directory=True)
    with output_lock(out):
        _refuse_existing(out, job.overwrite)
        start = time.perf_counter()
        receiver, record = read_avatar(job.receiver)
        donor, _ = read_avatar(job.donor)
        if int(donor.gaussians.counts()["hair"]) == 0:
            raise InputError("the donor avatar has no hair Gaussians (layer 'hair' is empty)", path=job.donor,
                             fix="choose a donor whose avatar has a hair layer")
        result = swap_hair(receiver, donor)
        progress(f"swapped {result.gaussians.counts()['hair']} hair Gaussians "
                 f"({'same rig' if same_rig(receiver, donor) else 'across rigs, through the templates'})")
        scores, pixels = face_region_psnr(receiver, result, job.size)
        views = [str(v) for v in DEFAULT_VIEWS]
        finite = [s for s in scores if math.isfinite(s)]
        metrics = {"headforge": __version__, "receiver": str(job.receiver), "donor": str(job.donor),
                   "same_rig": same_rig(receiver, donor),
                   "face_psnr_db": {v: s if math.isfinite(s) else None for v, s in zip(views, scores, strict=True)},
                   "face_psnr_db_min": min(finite) if finite else None,
                   "face_pixels": dict(zip(views, pixels, strict=True)),
                   "counts": {"receiver": receiver.gaussians.counts(), "donor": donor.gaussians.counts(),
                              "result": result.gaussians.counts()},
                   "sh_degree": result.sh_degree}
        with atomic_directory(out, overwrite=job.overwrite) as stage:
            write_image(stage / SHEET, before_after_sheet(receiver, donor, result, tile=job.size))
            save_avatar(result, stage / AVATAR_DIR, record)
            metrics["seconds"] = time.perf_counter() - start
            (stage / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return out, metrics


def parse_tint(text: str) -> tuple[float, float, float]:
    """``R,G,B`` -> three finite factors > 0 (an InputError naming ``--tint`` otherwise)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"--tint {text!r} must be three finite factors > 0 separated by commas",
                         fix="for example --tint 1.1,1.0,0.9 (1 leaves a channel as it is)")
    return values  # type: ignore[return-value]


def read_texture(path: Path, size: int, progress=print) -> torch.Tensor:
    """A square RGB(A) PNG as [size, size, 3] (resampled when its size differs, and said so)."""
    if not path.is_file():
        raise InputError("the texture file does not exist", path=path, fix="give a PNG in the avatar's atlas layout")
    img = read_image(path, "texture")
    if img.shape[2] not in (3, 4):
        raise InputError(f"the texture has {img.shape[2]} channel(s); an RGB image is needed", path=path,
                         fix="save it as an RGB PNG")
    if img.shape[0] != img.shape[1]:
        raise InputError(f"the texture is {img.shape[1]} x {img.shape[0]}; the atlas is square", path=path,
                         fix=f"give a square texture in the atlas layout (the avatar's is {size} x {size})")
    img = img[..., :3]
    if img.shape[0] != size:
        progress(f"resampled the texture from {img.shape[0]} x {img.shape[0]} to the avatar's {size} x {size}")
        img = resize_image(img, size, size)
    return torch.from_numpy(img.copy()).float().clamp(0, 1)


def run_edit_texture(job: EditTextureJob, progress=print) -> Path:
    """Tint or replace the avatar's face texture; -> the output folder."""
    if (job.tint is None) == (job.texture is None):
        raise InputError("give exactly one of --tint R,G,B and --texture PNG",
                         fix="--tint 1.1,1.0,0.9 multiplies the face colours; --texture PNG replaces the texture")
    tint = parse_tint(job.tint) if job.tint is not None else None
    out = check_output_path(job.out, directory=True)
    with output_lock(out):
        _refuse_existing(out, job.overwrite)
        avatar, record = read_avatar(job.avatar)
        if tint is not None:
            edited = tint_face(avatar, tint)
            what = f"tint {','.join(f'{v:g}' for v in tint)}"
        else:
            edited = replace_face_texture(avatar, read_texture(job.texture, avatar.texture.texture.shape[0],
                                                               progress))
            what = f"texture {job.texture.name}"
        with atomic_directory(out, overwrite=job.overwrite) as stage:
            sheet = comparison_sheet(f"texture edit: {what}", [("before", avatar), ("after", edited)], tile=job.size)
            write_image(stage / SHEET, sheet)
            save_avatar(edited, stage / AVATAR_DIR, record)
    return out
