"""Neural-field reconstruction end to end: beats its initialisation, resumes, exports a field and a mesh."""

from __future__ import annotations

import pytest
import torch
import trimesh

from headforge.captures.formats import read_capture
from headforge.cli import main
from headforge.errors import InputError
from headforge.pipeline.methods import load_field, load_preset
from headforge.pipeline.reconstruct import Method, ReconstructConfig, run_reconstruct
from headforge.renderers.occupancy import OccupancyConfig, OccupancyGrid
from headforge.stages.evaluate import evaluate
from headforge.stages.field_train import FieldTrainConfig, field_render_fn, make_field
from headforge.stages.views import load_views

TINY = """resolution = 48
[train]
steps = {steps}
rays_per_batch = 512
checkpoint_every = 100
[train.occupancy]
resolution = 32
warmup_steps = 32
[train.field.hashgrid]
n_levels = 8
log2_table_size = 14
max_resolution = 256
[train.field.planes]
resolution = 32
channels = 8
depth = 2
"""


@pytest.fixture
def tiny_preset(tmp_path):
    def make(steps: int):
        path = tmp_path / f"tiny_{steps}.toml"
        path.write_text(TINY.format(steps=steps))
        return str(path)
    return make


@pytest.mark.parametrize("method", [Method.HASHGRID, Method.TRIGRID])
def test_field_training_beats_initialisation(tiny_capture_dir, tmp_path, tiny_preset, method):
    cap = read_capture(tiny_capture_dir, test_every=5).at_resolution(48)
    test = load_views(cap, cap.split.test)
    result = run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "run", method=method,
                                               preset=tiny_preset(250), test_every=5, progress=False))
    model, grid, cfg = load_field(tmp_path / "run" / "field.pt")
    # the same architecture, untrained, rendered through the same pipeline
    init = make_field(cfg, *model.bounds, margin=1.0)
    init_grid = OccupancyGrid(OccupancyConfig(resolution=32), *init.bounds)
    before = evaluate(field_render_fn(init, init_grid, cfg), test, torch.ones(3))
    after = result.metrics
    assert after["psnr"] > before.psnr + 5, (before.psnr, after["psnr"])
    assert after["psnr_masked"] > before.psnr_masked + 3
    assert after["encoding"] == method.value and after["outputs"] == ["field.pt"]
    for name in ("metrics.json", "contact_sheet.png", "turntable.gif", "field.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    # reloaded field renders what the run evaluated
    again = evaluate(field_render_fn(model, grid, cfg), test, torch.ones(3))
    assert again.psnr == pytest.approx(after["psnr"], abs=0.05)


def test_extract_mesh_from_a_finished_run(tiny_capture_dir, tmp_path, tiny_preset):
    run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "run", method=Method.HASHGRID, sdf=True,
                                      preset=tiny_preset(120), test_every=5, progress=False))
    assert main(["extract-mesh", str(tmp_path / "run"), "--resolution", "48", "--target-faces", "4000",
                 "--texture-size", "128"]) == 0
    for name in ("mesh.obj", "mesh.mtl", "mesh.png", "mesh.ply", "mesh.glb"):
        assert (tmp_path / "run" / "mesh" / name).is_file(), name
    scene = trimesh.load(tmp_path / "run" / "mesh" / "mesh.glb")
    geom = list(scene.geometry.values())[0]
    assert len(geom.faces) > 100 and geom.visual.material.baseColorTexture is not None
    # at VolSDF's silhouette level the mesh is the zero level set grown outward by h (a few beta)
    zero = trimesh.load(tmp_path / "run" / "mesh" / "mesh.ply")
    assert main(["extract-mesh", str(tmp_path / "run"), "--resolution", "48", "--target-faces", "4000",
                 "--texture-size", "128", "--silhouette-level"]) == 2  # the mesh folder exists: refused
    assert main(["extract-mesh", str(tmp_path / "run"), "--resolution", "48", "--target-faces", "4000",
                 "--texture-size", "128", "--silhouette-level", "--overwrite"]) == 0
    grown = trimesh.load(tmp_path / "run" / "mesh" / "mesh.ply")
    assert float(grown.extents.max()) > float(zero.extents.max())
    assert main(["extract-mesh", str(tmp_path / "run"), "--silhouette-level", "--level", "0.001"]) == 2


def test_extract_mesh_needs_a_field_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["extract-mesh", str(tmp_path / "empty")]) == 2


def test_field_options_are_checked(tiny_capture_dir, tmp_path):
    with pytest.raises(InputError, match="--sdf applies"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "a", method=Method.GAUSSIANS, sdf=True))
    with pytest.raises(InputError, match="--init-ply applies"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "b", method=Method.TRIPLANE,
                                          init_ply=tmp_path / "x.ply"))


def test_field_preset_is_typed(tmp_path, tiny_capture_dir):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(InputError, match="stepz"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "c", method=Method.HASHGRID, preset=str(bad)))
    partial = tmp_path / "partial.toml"  # a preset lists only what it changes; the rest keeps the defaults
    partial.write_text("resolution = 40\n[train.field.hashgrid]\nn_levels = 4\n")
    loaded = load_preset(Method.HASHGRID, str(partial), resolution=None, steps=None)
    assert (loaded.resolution, loaded.train.field.hashgrid.n_levels) == (40, 4)
    assert loaded.train.steps == FieldTrainConfig().steps and loaded.train.lr == FieldTrainConfig().lr
    negative = tmp_path / "negative.toml"
    negative.write_text("[train]\nsteps = -3\n")
    with pytest.raises(InputError, match=r"train.steps = -3 is not allowed") as err:
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "d", method=Method.HASHGRID,
                                          preset=str(negative)))
    assert "negative.toml" in str(err.value)


def test_sdf_skip_is_read_from_toml_as_its_enum(tmp_path):
    from headforge.config_io import load_config
    from headforge.pipeline.methods import FieldPreset
    from headforge.stages.field_train import OccupancyHook, SdfSkip

    good = tmp_path / "good.toml"
    good.write_text('[train]\nsdf_skip = "density"\n[train.field]\nsdf = true\nprefer_tcnn = false\n')
    cfg = load_config(FieldPreset, good).train
    assert cfg.sdf_skip is SdfSkip.DENSITY
    model = make_field(cfg, torch.full((3,), -0.2), torch.full((3,), 0.2))
    grid = OccupancyGrid(OccupancyConfig(resolution=8), *model.bounds)
    assert OccupancyHook(model, grid, cfg, torch.Generator()).occupancy_fn == model.density  # scored by density
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nsdf_skip = "distanse"\n')
    with pytest.raises(InputError, match="sdf_skip = 'distanse' is not one of: distance, density"):
        load_config(FieldPreset, bad)
    with pytest.raises(ValueError, match="(?s)sdf_skip = .* one of distance, density"):
        FieldTrainConfig(sdf_skip="distanse")


def test_sdf_preset_goes_with_sdf():
    from headforge.pipeline.methods import load_preset

    preset = load_preset(Method.TRIGRID, "sdf", resolution=None, steps=None, sdf=True)
    assert preset.train.field.sdf and preset.train.beta_final == 2e-4 and preset.train.occupancy.step_size == 5e-4
    assert preset.train.field.encoding == "trigrid"
    with pytest.raises(InputError, match=r"needs an SDF field \(--sdf\)") as err:
        load_preset(Method.HASHGRID, "sdf", resolution=None, steps=None, sdf=False)
    assert "fields_sdf.toml" in str(err.value)
