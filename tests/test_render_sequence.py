"""Dynamic captures: a rig driven by a clip, rendered in the NeRSemble layout and read back; ground truth; the
rendered frames are exactly the deformed rig; render-capture's rig sources through the CLI; failures leave no
output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headforge.captures.capture import CaptureFormat
from headforge.captures.formats import read_capture
from headforge.captures.images import read_image, write_image
from headforge.cli import main
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.rig.arkit import NUM_ARKIT, arkit_index
from headforge.representations.rig.clips import Clip, read_clip
from headforge.representations.rig.deform import RigPose, deform
from headforge.representations.rig.head_rig import JOINTS, Joint
from headforge.stages.render_sequence import RenderSequenceConfig, render_sequence

CFG = RenderSequenceConfig(rig=RigConfig(kind=RigKind.NERSEMBLE16, resolution=48), supersample=1)


@pytest.fixture(scope="module")
def head():
    from headforge.pipeline.render_sequence_job import builtin_head

    return builtin_head()


def make_clip() -> Clip:
    """Three frames: neutral; jaw open, left eye shut, head turned; a smile with the head pitched."""
    w = torch.zeros(3, NUM_ARKIT, dtype=torch.float64)
    r = torch.zeros(3, len(JOINTS), 3, dtype=torch.float64)
    w[1, arkit_index("jawOpen")], w[1, arkit_index("eyeBlinkLeft")] = 0.8, 1.0
    r[1, JOINTS.index(Joint.HEAD)] = torch.tensor([0.0, 0.35, 0.0])
    w[2, arkit_index("mouthSmileLeft")] = w[2, arkit_index("mouthSmileRight")] = 0.9
    r[2, JOINTS.index(Joint.NECK)] = torch.tensor([0.2, 0.0, 0.0])
    return Clip("test", 12.0, w, r, "test")


@pytest.fixture(scope="module")
def rendered(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequence") / "capture"
    return render_sequence(head.rig, head.base, head.mesh_of, make_clip(), CFG, out, progress=False)


def direct_render(head, clip: Clip, frame: int, base=None):
    """The frame rendered straight from ``deform`` (no files, no stage)."""
    base = head.base if base is None else base
    ident = base.identity[None] if head.rig.num_identity else None
    pose = RigPose(clip.rotations[frame:frame + 1], torch.zeros(1, 3, dtype=torch.float64))
    verts = deform(head.rig, ident, clip.weights[frame:frame + 1], pose, offsets=base.offsets)[0]
    cameras = make_rig(CFG.rig)
    far = float(cameras.centers().norm(dim=-1).max()) * 3  # the stage's far plane (depth precision)
    return render_mesh(head.mesh_of(verts.float()), cameras, far=far, supersample=CFG.supersample)


def test_sequence_reads_back_with_its_frames(rendered):
    cap = read_capture(rendered.out_dir, test_every=0)
    assert cap.source_format is CaptureFormat.NERSEMBLE and len(cap) == 3 * 16 == len(rendered.capture)
    assert cap.frames.tolist() == [f for f in range(3) for _ in range(16)]
    assert torch.equal(cap.native_cameras.world_to_camera[:16].float(), rendered.cameras.world_to_camera.float())
    assert all(v.mask_path is not None and v.mask_path.parent.name == "alpha_map" for v in cap.views)
    view = cap.load(16 + 11)  # frame 1, the frontal camera
    assert view.rgb.shape == (48, 33, 3) and 0.05 < float(view.alpha.mean()) < 0.8
    assert rendered.serials == tuple(f"{i:02d}" for i in range(16))


def test_ground_truth_is_the_clip(rendered):
    truth = read_clip(rendered.out_dir / "expressions.json")
    clip = make_clip()
    assert truth.name == "test" and truth.fps == 12.0 and truth.num_frames == 3
    assert torch.equal(truth.weights, clip.weights) and torch.equal(truth.rotations, clip.rotations)
    doc = json.loads((rendered.out_dir / "expressions.json").read_text())
    assert len(doc["frames"][1]["expression"]) == NUM_ARKIT and doc["frames"][1]["expression"]["jawOpen"] == 0.8


@pytest.mark.parametrize("frame", [1, 2])
def test_a_frame_is_the_deformed_rig(rendered, head, frame):
    clip = make_clip()
    want = direct_render(head, clip, frame)
    other = direct_render(head, clip, 0)
    for cam in (2, 11, 15):
        folder = rendered.out_dir / f"timesteps/frame_{frame:05d}"
        rgb = torch.from_numpy(read_image(folder / f"images/cam_{cam:02d}.png"))
        alpha = torch.from_numpy(read_image(folder / f"alpha_map/cam_{cam:02d}.png"))[..., 0]
        assert (rgb - want.rgb[cam]).abs().max() <= 0.5 / 255 + 1e-6
        assert (alpha - want.alpha[cam]).abs().max() <= 0.5 / 255 + 1e-6
        assert (rgb - other.rgb[cam]).abs().max() > 0.2  # the frame differs visibly from the neutral one


def test_a_clip_the_rig_cannot_play_leaves_no_output(head, tmp_path):
    import dataclasses

    present = head.rig.expression_present.clone()
    present[arkit_index("jawOpen")] = False
    basis = head.rig.expression_basis.clone()
    basis[arkit_index("jawOpen")] = 0
    rig = dataclasses.replace(head.rig, expression_basis=basis, expression_present=present)
    with pytest.raises(InputError, match="lacks: jawOpen"):
        render_sequence(rig, head.base, head.mesh_of, make_clip(), CFG, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_mid_sequence_keeps_the_old_output(head, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    calls = []

    def failing(vertices):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return head.mesh_of(vertices)

    with pytest.raises(RuntimeError, match="disk full"):
        render_sequence(head.rig, head.base, failing, make_clip(), CFG, out, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["old.txt"]


def run_cli(*args):
    return main(["render-capture", *map(str, args), "--rig", "ring", "--num-views", "2", "--resolution", "16",
                 "--supersample", "1"])


def test_cli_builtin_rig(tmp_path, capsys):
    assert run_cli("builtin", "--out", tmp_path / "blink", "--animation", "builtin:blink", "--frames", "4") == 0
    cap = read_capture(tmp_path / "blink")
    assert cap.frames.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    truth = read_clip(tmp_path / "blink" / "expressions.json")
    assert truth.name == "blink" and truth.num_frames == 4 and truth.fps == pytest.approx(1.0)  # 3 s in 4 frames
    assert "4 timesteps x 2 views of 'blink'" in capsys.readouterr().out
    assert run_cli("builtin", "--out", tmp_path / "neutral") == 0  # no clip: one neutral timestep
    neutral = read_clip(tmp_path / "neutral" / "expressions.json")
    assert neutral.num_frames == 1 and not neutral.weights.any()
    assert read_capture(tmp_path / "neutral").frames.tolist() == [0, 0]


@pytest.mark.parametrize(("args", "words"), [
    (["head.obj", "--animation", "builtin:talk"], ["head.obj", "--animation", "a mesh has no expressions"]),
    (["head.obj", "--frames", "3"], ["--frames", "a mesh"]),
    (["builtin", "--frames", "3"], ["--frames needs --animation"]),
    (["builtin", "--animation", "builtin:wink"], ["builtin:blink"]),
    (["builtin", "--animation", "builtin:talk", "--units", "cm"], ["--units", "rig"]),
    (["builtin", "--animation", "{tmp}/missing.json"], ["missing.json"]),
    (["{tmp}", "--animation", "builtin:talk"], ["without rig_fit.json", "fit-rig"]),
])
def test_cli_refusals(tmp_path, capsys, args, words):
    assert run_cli(*[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_cli_fitted_rig_renders_the_subject_in_the_rig_frame(head, tmp_path):
    """A fit-rig folder: the subject's identity and offsets are rendered, its similarity is not applied."""
    from headforge.pipeline.rig_fit_file import RigFitRecord, write_rig_fit
    from headforge.representations.rig.head_rig import LandmarkSet
    from headforge.stages.rig_params import RigParams, Similarity

    rig = head.rig
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    base = RigParams(Similarity(torch.tensor(1.7, dtype=f64), torch.eye(3, dtype=f64), torch.tensor([0.3, 0, 0.])),
                     torch.randn(rig.num_identity, generator=g, dtype=f64) * 0.5,
                     torch.zeros(1, NUM_ARKIT, dtype=f64), RigPose.rest(1, dtype=f64),
                     torch.randn(rig.num_vertices, 3, generator=g, dtype=f64) * 1e-3)
    fit = tmp_path / "fit"
    fit.mkdir()
    write_rig_fit(RigFitRecord("builtin", rig.source, rig.licence, rig.num_vertices, base, (0,), (("cam_00",),),
                               LandmarkSet.MEDIAPIPE_478, {}), fit)
    write_image(fit / "texture.png", np.linspace(0, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3))
    argv = ["render-capture", fit, "--out", tmp_path / "out", "--rig", "nersemble16", "--resolution", "48",
            "--supersample", "1", "--animation", "builtin:smile", "--frames", "2"]
    assert main([str(a) for a in argv]) == 0
    from headforge.pipeline.render_sequence_job import fitted_head

    fitted = fitted_head(fit)
    clip = read_clip(tmp_path / "out" / "expressions.json")
    assert torch.equal(fitted.base.identity, base.identity)
    want = direct_render(fitted, clip, 1)
    rgb = torch.from_numpy(read_image(tmp_path / "out/timesteps/frame_00001/images/cam_11.png"))
    assert (rgb - want.rgb[11]).abs().max() <= 0.5 / 255 + 1e-6
    template = direct_render(head, clip, 1)  # the template subject: not what was rendered
    alpha = torch.from_numpy(read_image(tmp_path / "out/timesteps/frame_00001/alpha_map/cam_11.png"))[..., 0]
    assert (alpha - template.alpha[11]).abs().max() > 0.5
