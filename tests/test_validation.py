"""headforge.validation: declared ranges checked at construction, on the command line and in presets."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
import typing
from pathlib import Path
from typing import Annotated

import annotated_types as at
import pytest

import headforge
from headforge.config_io import load_config
from headforge.geometry.camera_rigs import RigConfig, RigKind
from headforge.pipeline.methods import GaussianPreset
from headforge.renderers.proposal import ProposalConfig
from headforge.stages.distill import DistillConfig
from headforge.stages.mesh_types import MeshExtractConfig
from headforge.validation import Checked, OptionError, allowed_text, check_value, checked_command, constraints_of


def test_allowed_text_spells_the_declaration():
    assert allowed_text(Annotated[int, at.Ge(1), at.Le(8)]) == "an integer >= 1 and <= 8"
    assert allowed_text(Annotated[float, at.Interval(gt=0, lt=180)]) == "a finite number > 0 and < 180"
    assert allowed_text(RigKind) == "one of ring, sphere, sphere32, nersemble16"
    assert allowed_text(Annotated[int, at.Ge(4)] | None, none=True) == "none, or an integer >= 4"
    assert allowed_text(Annotated[int, at.Ge(4)] | None) == "an integer >= 4"


@pytest.mark.parametrize("value, ok", [
    (1, True), (8, True), (0, False), (9, False), (True, False), (1.0, False), ("3", False), (None, False)])
def test_check_value_int_range(value, ok):
    hint = Annotated[int, at.Ge(1), at.Le(8)]
    if ok:
        check_value("--n", value, hint)
    else:
        with pytest.raises(OptionError, match="--n = "):
            check_value("--n", value, hint)


@pytest.mark.parametrize("value, ok", [(0.5, True), (1, True), (float("nan"), False), (float("inf"), False),
                                       (-0.1, False), (False, False)])
def test_check_value_floats_are_finite_numbers(value, ok):
    hint = Annotated[float, at.Ge(0)]
    if ok:
        check_value("x", value, hint)
    else:
        with pytest.raises(OptionError):
            check_value("x", value, hint)


def test_optional_accepts_none_and_checks_a_value():
    hint = Annotated[int, at.Ge(4)] | None
    check_value("t", None, hint)
    check_value("t", 4, hint)
    with pytest.raises(OptionError, match="t = 3"):
        check_value("t", 3, hint)


def test_constraints_ignore_foreign_metadata():
    constraints, bare = constraints_of(Annotated[int, "a docstring", at.Gt(0)])
    assert bare is int and len(constraints) == 1 and isinstance(constraints[0], at.Gt)


def test_config_fields_checked_at_construction():
    with pytest.raises(OptionError, match=r"RigConfig.fov_deg = 180"):
        RigConfig(fov_deg=180)
    with pytest.raises(OptionError, match=r"RigConfig.resolution = 200000"):
        RigConfig(resolution=200_000)
    with pytest.raises(OptionError, match=r"RigConfig.num_views = 0"):
        RigConfig(num_views=0)
    with pytest.raises(ValueError):  # an OptionError is a ValueError, as the hand-written checks were
        RigConfig(resolution="512")
    assert RigConfig(fov_deg=179.5, resolution=8).fov_deg == 179.5  # negative control: the edges are allowed


def test_strings_become_enum_members_or_name_the_choices():
    assert RigConfig(kind="ring").kind is RigKind.RING
    with pytest.raises(OptionError) as err:
        RigConfig(kind="hexagon")
    assert "ring, sphere, sphere32, nersemble16" in str(err.value)


def test_tuple_items_and_lengths_are_checked():
    with pytest.raises(OptionError, match=r"samples_per_level\[1\] = 0"):
        ProposalConfig(samples_per_level=(64, 0))
    with pytest.raises(OptionError, match="samples_per_level = \\(\\)"):
        ProposalConfig(samples_per_level=())
    assert ProposalConfig(samples_per_level=(3,)).samples_per_level == (3,)


def test_relations_between_fields():
    with pytest.raises(OptionError, match="occupied_share"):
        DistillConfig(uniform_share=0.7, occupied_share=0.5)
    with pytest.raises(OptionError, match="bounds_max"):
        MeshExtractConfig(bounds_min=(0, 0, 0), bounds_max=(1, 1, 0))
    DistillConfig(uniform_share=0.5, occupied_share=0.5)


@pytest.mark.parametrize("text, key, words", [
    ('[train]\nsteps = "five"\n', "train.steps = 'five'", "an integer >= 1"),
    ("[train]\ninit_points = -100\n", "train.init_points = -100", ">= 1"),
    ("[train.densify]\nprune_opa = 2\n", "train.densify.prune_opa = 2.0", "<= 1"),
    ("resolution = 0\n", "resolution = 0", ">= 8"),
    ('[train]\nbackground = "purple"\n', "train.background", "random"),
    ("train = 3\n", "train must be a table", "[train]"),
])
def test_preset_errors_name_file_and_key(tmp_path, text, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(headforge.errors.InputError) as err:
        load_config(GaussianPreset, path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message and words in message


def test_checked_command_names_the_flag_before_running():
    ran = []

    def command(capture: Path, out_size: Annotated[int, at.Ge(1)] = 4, fov: Annotated[float, at.Lt(90)] = 1.0):
        ran.append(capture)

    wrapped = checked_command(command)
    with pytest.raises(OptionError, match="--out-size = 0"):
        wrapped(Path("missing"), out_size=0)
    with pytest.raises(OptionError, match="--fov = 90"):
        wrapped(Path("missing"), fov=90.0)
    assert ran == []
    wrapped(Path("x"), out_size=2)
    assert ran == [Path("x")] and wrapped.__wrapped__ is command


def _checked_classes() -> list[type]:
    for mod in pkgutil.walk_packages(headforge.__path__, "headforge."):
        if mod.name.endswith(("__main__", "_worker")):
            continue
        importlib.import_module(mod.name)
    seen, todo = [], list(Checked.__subclasses__())
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(seen), key=lambda c: c.__qualname__)


# Numeric fields that accept any finite number (the type alone is their declaration).
UNCONSTRAINED = {"MeshExtractConfig.level", "DensityConfig.density_bias"}
DEFAULTS_NEED = {"HeadFrameSpec": {"units": "m"}}  # exactly one of units / head_width_m is required
# Dataclasses named like configs that users never fill: a capture format's registry entry.
# parsed values (a reader's format, the photo command's --generator / --views strings), not configs a user fills
NOT_USER_CONFIG = {"headforge.captures.format_base.FormatSpec", "headforge.stages.multiview_base.GeneratorSpec",
                   "headforge.stages.multiview_base.ViewSpec",
                   "headforge.batch.jobs.JobSpec",  # a row of the jobs table
                   "headforge.batch.spec.AttemptSpec"}  # the driver -> attempt hand-off, built from checked options


def test_every_config_declares_its_numeric_ranges_and_constructs_by_default():
    classes = _checked_classes()
    assert len(classes) >= 15, [c.__name__ for c in classes]
    missing = []
    for cls in classes:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            constraints, bare = constraints_of(hints[f.name])
            union = typing.get_origin(bare) in (typing.Union, types.UnionType)
            numeric = {int, float} & set(typing.get_args(bare) if union else (bare,))  # tuples: any finite values
            if numeric and not constraints and f"{cls.__name__}.{f.name}" not in UNCONSTRAINED:
                missing.append(f"{cls.__name__}.{f.name}")
        if all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls)):
            cls(**DEFAULTS_NEED.get(cls.__name__, {}))  # the defaults satisfy the declarations
    assert not missing, f"numeric fields without a declared range: {missing}"


def test_every_config_dataclass_is_checked():
    """A config, preset or options dataclass that users fill must validate itself (derive from Checked)."""
    checked = set(_checked_classes())
    unchecked = []
    for mod in pkgutil.walk_packages(headforge.__path__, "headforge."):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.name
                    and name.endswith(("Config", "Preset", "Options", "Spec")) and obj not in checked
                    and f"{mod.name}.{name}" not in NOT_USER_CONFIG):
                unchecked.append(f"{mod.name}.{name}")
    assert not unchecked, f"config dataclasses that do not derive from Checked: {unchecked}"
