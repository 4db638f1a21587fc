"""An avatar as a folder (``OUT/avatar/``), and back.

Layout (``avatar.json``: ``format`` = ``headforge.avatar``, ``version`` = 1)::

    avatar.json          what the folder holds: the rig spec, SH degree, Gaussian counts per layer, files (last)
    rig_fit.json         the fitted rig (pipeline/rig_fit_file.py) (+ rig_fit_offsets.npy)
    texture.png          the face layer's baked texture (atlas layout, pipeline/fitted_rig.py)
    gaussians.ply        the bound Gaussians in the 3DGS PLY layout with triangle-LOCAL values (x y z in the
                         triangle's frame, in units of its size; log local scales; local wxyz rotations) and
                         two extra columns: ``binding_0`` (the triangle index, as GaussianAvatars writes it) and
                         ``layer`` (0 face, 1 hair, 2 clothing)
    layers/<layer>.ply   each layer posed neutral in the rig frame (metres), stored in the 3DGS viewers' OpenCV
                         frame (y down; the header says so): plain 3DGS PLYs any splat viewer opens upright

``save_avatar`` writes into a folder the caller stages; ``load_avatar`` checks every file and names the one
that is missing or wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from headforge import __version__
from headforge.captures.images import write_image
from headforge.errors import InputError
from headforge.io.files import read_json
from headforge.pipeline.fitted_rig import load_fitted_rig
from headforge.pipeline.rig_fit_file import TEXTURE_FILE, RigFitRecord, write_rig_fit
from headforge.representations.bound_gaussians import Layer, LayerCode
from headforge.representations.splat_io import SplatFrame, load_splats_ply_extra, save_splats_ply
from headforge.stages.avatar import Avatar, BoundSplats, pose_avatar

FORMAT = "headforge.avatar"
VERSION = 1
GAUSSIANS_FILE = "gaussians.ply"
EXTRA_COLUMNS = ("binding_0", "layer")

__all__ = ["load_avatar", "save_avatar"]


def save_avatar(avatar: Avatar, folder: Path, record: RigFitRecord) -> Path:
    """Write the avatar into ``folder`` (created); ``record`` is the rig fit it was built on."""
    folder.mkdir(parents=True, exist_ok=True)
    write_rig_fit(record, folder)
    write_image(folder / TEXTURE_FILE, avatar.texture.texture.numpy())
    g = avatar.gaussians
    save_splats_ply(g.local, folder / GAUSSIANS_FILE, extra={"binding_0": g.binding, "layer": g.layer},
                    frame=SplatFrame.HEAD)  # triangle-local values: never turned
    (folder / "layers").mkdir(exist_ok=True)
    layer_files = {}
    for layer in Layer:
        if bool(g.layer_mask(layer).any()):
            save_splats_ply(pose_avatar(avatar, world=False, layers=(layer,)).detach(),
                            folder / "layers" / f"{layer}.ply", frame=SplatFrame.OPENCV)
            layer_files[str(layer)] = f"layers/{layer}.ply"
    doc = {"format": FORMAT, "version": VERSION, "headforge": __version__, "rig_spec": avatar.rig_spec,
           "rig_source": avatar.rig.source, "rig_licence": avatar.rig.licence, "sh_degree": avatar.sh_degree,
           "num_gaussians": len(g), "layers": g.counts(), "files": {"rig_fit": "rig_fit.json",
                                                                     "texture": TEXTURE_FILE,
                                                                     "gaussians": GAUSSIANS_FILE,
                                                                     "layers": layer_files}}
    path = folder / "avatar.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _bad(path: Path, problem: str) -> InputError:
    return InputError(problem, path=path, fix="give the avatar/ folder `headforge avatar` wrote (or restore it)")


def load_avatar(folder: str | Path) -> Avatar:
    """Read an avatar folder (``OUT/avatar`` or ``OUT`` itself)."""
    folder = Path(folder)
    if (folder / "avatar" / "avatar.json").is_file():
        folder = folder / "avatar"
    manifest = folder / "avatar.json"
    if not manifest.is_file():
        raise _bad(manifest, "not an avatar folder: avatar.json is missing")
    doc = read_json(manifest)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(manifest, f"format is not {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise _bad(manifest, f"version {doc.get('version')!r} is not supported (this headforge reads {VERSION})")
    degree = doc.get("sh_degree")
    if not isinstance(degree, int) or not 0 <= degree <= 3:
        raise _bad(manifest, f"sh_degree {degree!r} must be an integer in 0..3")
    for name in ("rig_fit.json", TEXTURE_FILE, GAUSSIANS_FILE):
        if not (folder / name).is_file():
            raise _bad(folder / name, f"the avatar folder lacks {name}")
    fitted = load_fitted_rig(folder)
    local, cols = load_splats_ply_extra(folder / GAUSSIANS_FILE, EXTRA_COLUMNS)
    binding, layer = cols["binding_0"], cols["layer"]
    F = fitted.rig.faces.shape[0]
    if bool((binding != binding.round()).any()) or bool(((binding < 0) | (binding >= F)).any()):
        raise _bad(folder / GAUSSIANS_FILE, f"binding_0 must hold triangle indices in 0..{F - 1} of the rig "
                                            f"{fitted.record.rig_spec}")
    codes = torch.tensor([int(c) for c in LayerCode], dtype=torch.float64)
    if not bool(torch.isin(layer, codes).all()):
        raise _bad(folder / GAUSSIANS_FILE, f"layer must hold the codes {[int(c) for c in LayerCode]}")
    bound = BoundSplats(local, binding.long(), layer.long())
    return Avatar(fitted.rig, fitted.record.rig_spec, fitted.params, fitted.texture, bound, degree)
