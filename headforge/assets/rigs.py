"""``load_rig(spec)``: the :class:`HeadRig` a :class:`RigSpec` names, for every source.

Here (assets) rather than beside ``RigSpec`` (representations) because the built-in rig is generated from the
sample head asset, and representations may not import assets.
"""

from __future__ import annotations

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.representations.rig.flame import load_flame
from headforge.representations.rig.head_rig import HeadRig
from headforge.representations.rig.ict_facekit import load_ict_facekit
from headforge.representations.rig.sources import RigSource, RigSpec, parse_rig_spec

__all__ = ["load_rig", "parse_rig_spec"]  # parse_rig_spec re-exported: one import for the commands


def load_rig(spec: RigSpec) -> HeadRig:
    """The rig a spec names (each loader raises InputError naming the file it could not use)."""
    if spec.source is RigSource.BUILTIN:
        return load_builtin_rig()
    loaders = {RigSource.ICT_FACEKIT: load_ict_facekit, RigSource.FLAME: load_flame}
    return loaders[spec.source](spec.path)
