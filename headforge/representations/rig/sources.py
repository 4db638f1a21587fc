"""Where a rig comes from: ``SOURCE:PATH`` on the command line (``ict-facekit:FOLDER``, ``flame:FILE.pkl``).

One spelling for every command that takes a rig (``rig-sheet`` now, ``fit-rig`` later); the built-in rig,
which needs no path, joins the enum when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from headforge.errors import InputError
from headforge.representations.rig.flame import load_flame
from headforge.representations.rig.head_rig import HeadRig
from headforge.representations.rig.ict_facekit import load_ict_facekit
from headforge.validation import Checked


class RigSource(StrEnum):
    ICT_FACEKIT = "ict-facekit"  # MIT: the kit's FaceXModel folder or the packed copy (a folder)
    FLAME = "flame"  # non-commercial: the user's own generic_model.pkl / flame2023.pkl (a file)


WANTS = {RigSource.ICT_FACEKIT: "folder", RigSource.FLAME: "file"}


@dataclass(frozen=True)
class RigSpec(Checked):
    source: RigSource
    path: Path


def parse_rig_spec(spec: str) -> RigSpec:
    """``SOURCE:PATH`` -> :class:`RigSpec`; an unknown source or a missing path is an InputError naming the
    sources (``ict-facekit:PATH``, ``flame:PATH``)."""
    known = ", ".join(f"{s}:PATH" for s in RigSource)
    name, sep, path = spec.partition(":")
    if name not in set(RigSource):
        raise InputError(f"unknown rig source {name!r} in {spec!r} (available: {known})",
                         fix=f"spell the rig as one of: {known}")
    source = RigSource(name)
    if not sep or not path:
        raise InputError(f"rig {spec!r} names no path (available: {known})", fix=f"write it as {name}:PATH")
    if not Path(path).exists():
        raise InputError(f"the {name} rig path does not exist", path=path,
                         fix=f"pass the {WANTS[source]} holding the rig ({known})")
    return RigSpec(source, Path(path))


def load_rig(spec: RigSpec) -> HeadRig:
    """The :class:`HeadRig` a spec names (each loader raises InputError naming the file it could not use)."""
    loaders = {RigSource.ICT_FACEKIT: load_ict_facekit, RigSource.FLAME: load_flame}
    return loaders[spec.source](spec.path)
