"""Multi-view generation (stages/multiview*.py): the spec parser; FaceLift's six views at their documented angles,
field of view and framing; the prior's renders (masks = the rendered alpha, the cameras look at the head, the photo
view, the folder read back); the external command (a known capture read back equal, exit 1, garbage, a wrong
frame, a hang); the tiny learned model (loads through the real code, runs, one DDIM step equals the formula by
hand; missing files, malformed json, a wrong class name refused)."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from avatar_fixtures import make_avatar
from multiview_fixtures import rendered_photo, script, tiny_model

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.captures.capture import CaptureFormat, viewing_angles
from headforge.captures.formats import read_capture, write_capture
from headforge.errors import InputError
from headforge.geometry.head_frame import transform_cameras
from headforge.geometry.rays import project_points
from headforge.stages.avatar_layers import composite_render
from headforge.stages.multiview import (
    FACELIFT_AZIMUTHS_DEG,
    FACELIFT_FOV_DEG,
    GeneratorKind,
    PriorConfig,
    PriorGenerator,
    ViewSet,
    ViewSpec,
    facelift_cameras,
    head_geometry,
    make_generator,
    parse_generator_spec,
    parse_view_spec,
    view_cameras,
)
from headforge.stages.multiview_external import ExternalConfig, ExternalGenerator, command_words
from headforge.stages.multiview_model import ModelConfig, ModelGenerator, denoise_views, load_model, photo_condition

SIZE = 64


@pytest.fixture(scope="module")
def head():
    return make_avatar(load_builtin_rig(), "builtin", n_face=800, n_hair=200)


@pytest.fixture(scope="module")
def photo(head):
    return rendered_photo(head, SIZE)


@pytest.fixture(scope="module")
def prior_capture(head, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "views"
    return PriorGenerator(PriorConfig(resolution=SIZE)).generate(photo, head, out), out


def centre_of(head) -> torch.Tensor:
    return head.params.similarity.translation.double().reshape(1, 3)


# ------------------------------------------------------------------------------------------ specs
def test_generator_spec_parses_the_three_kinds_and_refuses_others(tmp_path):
    assert parse_generator_spec("prior").kind is GeneratorKind.PRIOR
    ext = parse_generator_spec("external:python run.py {input} {output}")
    assert ext.kind is GeneratorKind.EXTERNAL and ext.command == "python run.py {input} {output}"
    mod = parse_generator_spec(f"model:{tmp_path}")
    assert mod.kind is GeneratorKind.MODEL and mod.path == tmp_path
    for bad in ("diffusion", "external:", "model:  ", "prior:facelift6", ""):
        with pytest.raises(InputError):
            parse_generator_spec(bad)
    assert parse_view_spec("sphere32") == ViewSpec(ViewSet.SPHERE32)
    with pytest.raises(InputError, match="neither a view set"):
        parse_view_spec(str(tmp_path / "nope.json"))
    assert isinstance(make_generator(parse_generator_spec("prior")), PriorGenerator)
    assert isinstance(make_generator(ext), ExternalGenerator) and isinstance(make_generator(mod), ModelGenerator)


def test_command_words_fill_placeholders_and_refuse_unknown_or_missing():
    argv = command_words("gen --in {input} --out={output} -s {size}", {"input": "/a b/in.png", "output": "/o",
                                                                         "size": "64", "camera": "/c.json"})
    assert argv == ["gen", "--in", "/a b/in.png", "--out=/o", "-s", "64"]
    with pytest.raises(InputError, match="lacks {output}"):
        command_words("gen {input}", {})
    with pytest.raises(InputError, match="not a placeholder"):
        command_words("gen {input} {output} {seed}", {})


# ------------------------------------------------------------------------------------------ view sets
def test_facelift_views_have_the_documented_angles_fov_and_framing():
    cams = facelift_cameras(512, head_width_m=0.155)
    angles = viewing_angles(cams)
    want = torch.deg2rad(torch.tensor(FACELIFT_AZIMUTHS_DEG, dtype=torch.float64))
    got = torch.deg2rad(angles[:, 0])
    assert torch.allclose(torch.stack([got.cos(), got.sin()]), torch.stack([want.cos(), want.sin()]), atol=1e-5)
    assert torch.allclose(angles[:, 1], torch.zeros(6, dtype=torch.float64), atol=1e-3)
    assert FACELIFT_FOV_DEG == pytest.approx(50.0, abs=0.01)
    fov = 2 * torch.rad2deg(torch.atan(cams.width / 2 / cams.fx))
    assert torch.allclose(fov.double(), torch.full((6,), 50.0, dtype=torch.float64), atol=0.01)
    dist = cams.centers().norm(dim=-1)
    assert torch.allclose(dist, torch.full((6,), 2.7 / 0.87 * 0.155), atol=1e-5)
    # the front view sees the face: azimuth 0 sits on +z, "right" (index 2) on the subject's right (-x)
    assert cams.centers()[0, 2] > 0 and cams.centers()[2, 0] < 0


@pytest.mark.parametrize("view_set", [ViewSet.FACELIFT6, ViewSet.SPHERE32])
def test_view_sets_follow_the_fitted_head(head, view_set):
    geo = head_geometry(head)
    cams = view_cameras(ViewSpec(view_set), SIZE, geo)
    assert len(cams) == (6 if view_set is ViewSet.FACELIFT6 else 32)
    uv, z = project_points(cams.to(dtype=torch.float64), centre_of(head))  # the head centre, in the world
    assert bool((z > 0).all())
    assert torch.allclose(uv[:, 0], torch.full_like(uv[:, 0], SIZE / 2), atol=1e-3)  # every camera aims at it
    if view_set is ViewSet.FACELIFT6:  # azimuth 0 faces the fitted face: the rig frame's +z through the similarity
        sim = head.params.similarity
        face_dir = sim.rotation.double() @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        to_cam = cams.centers()[0].double() - sim.translation.double()
        assert float(torch.nn.functional.cosine_similarity(face_dir, to_cam, dim=0)) > 0.9999
        assert float(to_cam.norm()) == pytest.approx(2.7 / 0.87 * geo.width_m * float(sim.scale), rel=1e-4)


def test_a_camera_file_gives_its_cameras_as_they_are(head, prior_capture):
    capture, out = prior_capture
    cams = view_cameras(parse_view_spec(str(out / "opencv_cameras.json")), 999, head_geometry(head))
    assert torch.allclose(cams.world_to_camera, capture.native_cameras.world_to_camera, atol=1e-5)
    assert cams.width.tolist() == [SIZE] * len(capture)


# ------------------------------------------------------------------------------------------ prior
def test_prior_masks_are_the_rendered_alpha_and_the_views_see_the_head(head, photo, prior_capture):
    capture, _ = prior_capture
    assert len(capture) == 7 and capture.split.test == ()  # six views + the photo, nothing held out
    assert capture.images.shape == (7, SIZE, SIZE, 4)
    cams = capture.native_cameras
    _, alpha = composite_render(head, head.params.frame(0), cams[list(range(6))], torch.zeros(3))
    assert torch.allclose(capture.images[:6, ..., 3], alpha[..., 0], atol=1e-6)
    centre = capture.images[:6, SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2, 3]
    assert bool((centre.mean((1, 2)) > 0.99).all())  # the head covers every view's centre
    assert bool((capture.images[:6, 0, :, 3] == 0).all())  # and not the top rows: it is framed, not cut
    # the photo view: its pixels where the head renders, its mask within the person mask
    pv = capture.images[6]
    assert bool((pv[..., 3] <= photo.person_mask + 1e-6).all()) and float(pv[..., 3].sum()) > 0.5 * float(
        photo.person_mask.sum())
    covered = pv[..., 3] > 0.99
    assert torch.allclose(pv[covered][:, :3], photo.image[covered], atol=1e-5)


def test_prior_folder_reads_back_as_the_capture(prior_capture):
    capture, out = prior_capture
    read = read_capture(out / "opencv_cameras.json", test_every=0)
    assert len(read) == len(capture)
    assert torch.allclose(read.native_cameras.world_to_camera, capture.native_cameras.world_to_camera, atol=1e-5)
    for i in range(len(read)):
        v = read.load(i)
        assert torch.allclose(v.alpha, capture.images[i, ..., 3], atol=1 / 255)


def test_prior_needs_a_head_and_the_photo_view_is_optional(head, photo, tmp_path):
    with pytest.raises(InputError, match="completed head"):
        PriorGenerator().generate(photo, None, tmp_path / "a")
    cap = PriorGenerator(PriorConfig(views=ViewSpec(ViewSet.FACELIFT6), resolution=32, include_photo=False)
                         ).generate(photo, head, tmp_path / "b")
    assert len(cap) == 6 and not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------ external
def copy_script(tmp_path, source):
    return script(tmp_path / "copy_views.py", f"""
        import argparse, pathlib, shutil
        p = argparse.ArgumentParser(); p.add_argument("--image"); p.add_argument("--out"); p.add_argument("--size")
        a = p.parse_args()
        assert pathlib.Path(a.image).is_file() and a.size == "64"
        shutil.copytree({str(source)!r}, a.out, dirs_exist_ok=True)
        """)


def test_external_reads_a_known_capture_back_equal(head, photo, prior_capture, tmp_path):
    capture, _ = prior_capture
    known = capture.subset(range(6))
    write_capture(known, tmp_path / "known", CaptureFormat.OPENCV_JSON)
    gen = ExternalGenerator(copy_script(tmp_path, tmp_path / "known"), ExternalConfig(size=SIZE))
    got = gen.generate(photo, head, tmp_path / "out")
    assert len(got) == 6 and got.split.test == ()
    assert torch.allclose(got.native_cameras.world_to_camera, known.native_cameras.world_to_camera, atol=1e-5)
    assert torch.allclose(got.images[..., 3], known.images[..., 3], atol=1 / 255)
    covered = known.images[..., 3] > 0.5
    assert torch.allclose(got.images[..., :3][covered], known.images[..., :3][covered], atol=1 / 255)
    assert read_capture(tmp_path / "out", test_every=0).native_cameras.world_to_camera.shape == (6, 4, 4)
    assert not list(tmp_path.glob(".out.external-*"))  # the work folder is gone


def test_external_derives_masks_from_a_plain_background(head, photo, prior_capture, tmp_path):
    capture, _ = prior_capture
    known = capture.subset(range(6))
    a = known.images[..., 3:]
    on_white = known.images[..., :3] * a + (1 - a)
    solid = replace(known, images=torch.cat([on_white, torch.ones_like(a)], -1))  # opaque: alpha carries nothing
    write_capture(solid, tmp_path / "rgb", CaptureFormat.OPENCV_JSON)
    from headforge.captures.images import read_image, write_image

    for p in (tmp_path / "rgb" / "images").iterdir():
        write_image(p, read_image(p)[..., :3])  # RGB files
    got = ExternalGenerator(copy_script(tmp_path, tmp_path / "rgb"), ExternalConfig(size=SIZE)).generate(
        photo, head, tmp_path / "out")
    agree = ((got.images[..., 3] > 0.5) == (known.images[..., 3] > 0.5)).float().mean()
    assert float(agree) > 0.97


@pytest.mark.parametrize("body, match", [
    ("import sys; sys.stderr.write('CUDA out of memory\\n'); sys.exit(1)", "(?s)exit code 1.*CUDA out of memory"),
    ("import sys, pathlib; pathlib.Path(sys.argv[4], 'opencv_cameras.json').write_text('garbage {')",
     "opencv_cameras.json"),
    ("pass", "no opencv_cameras.json"),
])
def test_external_failures_name_the_command(head, photo, tmp_path, body, match):
    cmd = script(tmp_path / "bad.py", body)
    with pytest.raises(InputError, match=match) as e:
        ExternalGenerator(cmd, ExternalConfig(size=SIZE)).generate(photo, head, tmp_path / "out")
    assert "bad.py" in str(e.value) or "opencv_cameras.json" in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.external-*"))


def test_external_refuses_too_few_views_and_a_missing_program(head, photo, prior_capture, tmp_path):
    capture, _ = prior_capture
    write_capture(capture.subset(range(2)), tmp_path / "two", CaptureFormat.OPENCV_JSON)
    with pytest.raises(InputError, match="wrote 2 view"):
        ExternalGenerator(copy_script(tmp_path, tmp_path / "two"), ExternalConfig(size=SIZE, min_views=4)).generate(
            photo, head, tmp_path / "out")
    with pytest.raises(InputError, match="cannot be started"):
        ExternalGenerator("no-such-generator-program {input} {output}").generate(photo, head, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_external_refuses_cameras_in_another_frame(head, photo, prior_capture, tmp_path):
    capture, _ = prior_capture
    known = capture.subset(range(6))
    z_up = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # y-up world -> Blender z-up
    sim = head.params.similarity
    T, back = torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    T[:3, 3], back[:3, 3] = -sim.translation.double(), sim.translation.double()
    turned = back @ z_up.double() @ T  # turned about the head centre: still aimed at it, but z up
    blender = replace(known, native_cameras=transform_cameras(known.native_cameras, turned))
    write_capture(blender, tmp_path / "z_up", CaptureFormat.OPENCV_JSON)
    with pytest.raises(InputError, match="not upright in the head frame"):
        ExternalGenerator(copy_script(tmp_path, tmp_path / "z_up"), ExternalConfig(size=SIZE)).generate(
            photo, head, tmp_path / "out")


def test_external_timeout_stops_a_hanging_command_and_its_children(head, photo, tmp_path):
    pids = tmp_path / "pids"
    cmd = script(tmp_path / "hang.py", f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "120"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
        """)
    with pytest.raises(InputError, match="did not finish within 2 s"):
        ExternalGenerator(cmd, ExternalConfig(size=SIZE, timeout_s=2.0)).generate(photo, head, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for pid in map(int, pids.read_text().split()):  # the command and its child are gone (or dead, unreaped)
        stat = Path(f"/proc/{pid}/stat")
        for _ in range(50):
            if not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z":
                break
            time.sleep(0.1)
        assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


# ------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def model_dir(head, tmp_path_factory):
    cams = facelift_cameras(16, 0.155)
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny", cams)


def test_tiny_model_loads_and_generates_the_declared_views(head, photo, model_dir, tmp_path):
    model = load_model(model_dir)
    assert sum(p.numel() for p in model.unet.parameters()) < 15000
    cap = ModelGenerator(model_dir, ModelConfig(steps=3)).generate(photo, None, tmp_path / "a")
    assert cap.images.shape == (6, 16, 16, 4) and bool(torch.isfinite(cap.images).all())
    assert torch.allclose(cap.native_cameras.world_to_camera, model.cameras.world_to_camera.float(), atol=1e-6)
    again = ModelGenerator(model_dir, ModelConfig(steps=3)).generate(photo, head, tmp_path / "b")
    assert torch.equal(again.images, cap.images)  # seeded
    geo = head_geometry(head)  # with a head the views move with its similarity
    moved = transform_cameras(model.cameras, geo.world_from_rig)
    assert torch.allclose(again.native_cameras.world_to_camera, moved.world_to_camera.float(), atol=1e-5)
    assert read_capture(tmp_path / "a", test_every=0).native_cameras.width.tolist() == [16] * 6


def test_one_ddim_step_is_the_epsilon_formula(photo, model_dir):
    model = load_model(model_dir)
    cond = photo_condition(photo, 16)
    got = denoise_views(model, cond, steps=1, seed=3)
    sched = model.scheduler
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    x = torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eps = model.unet(torch.cat([x, cond[None].expand(6, -1, -1, -1)], 1), t,
                         class_labels=torch.arange(6)).sample
    abar = sched.alphas_cumprod[int(t)]
    x0 = (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)  # DDIM to alpha_bar = 1 (set_alpha_to_one)
    want = ((x0.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    assert torch.allclose(got, want, atol=1e-5)


def test_model_folder_problems_are_named(photo, model_dir, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nope")

    def broken(name, edit):
        d = tmp_path / name
        shutil.copytree(model_dir, d)
        edit(d)
        return d

    cases = [
        (broken("no_index", lambda d: (d / "model_index.json").unlink()), "lacks model_index.json"),
        (broken("bad_json", lambda d: (d / "model_index.json").write_text("{not json")), "not valid JSON"),
        (broken("wrong_class", lambda d: (d / "model_index.json").write_text(json.dumps(
            {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDIMScheduler"]}))), "StableDiffusionPipeline"),
        (broken("no_weights", lambda d: (d / "unet" / "diffusion_pytorch_model.safetensors").unlink()),
         "lacks unet/diffusion_pytorch_model.safetensors"),
        (broken("no_views", lambda d: (d / "views.json").unlink()), "lacks views.json"),
        (broken("bad_views", lambda d: (d / "views.json").write_text(json.dumps({"frames": [{"w": 16}]}))),
         "views.json frames are malformed"),
        (broken("bad_weights", lambda d: (d / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"xx")),
         "cannot be loaded"),
    ]
    for folder, match in cases:
        with pytest.raises(InputError, match=match):
            load_model(folder)
    other = rendered_photo_like(photo)
    with pytest.raises(InputError, match="trained on facelift crops"):
        ModelGenerator(model_dir).generate(other, None, tmp_path / "out")


def rendered_photo_like(photo):
    from headforge.stages.photo_types import AlignConvention

    return replace(photo, convention=AlignConvention.PANOHEAD)
