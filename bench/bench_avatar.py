"""Benchmark animatable avatars (issue 12 targets). Prints one table per part; 2 torch threads, quiet machine.

Run: ``.venv/bin/python bench/bench_avatar.py [--parts dynamic,static,render,swap] [--steps 3000]``
(../shared/data must hold ict_facekit/ and lps_head/; ../bench_out/ receives the captures and outputs).

* **dynamic**: the built-in rig (the sample head's albedo) driven by the built-in clips, rendered by
  ``headforge render-capture builtin --animation ... --rig nersemble16 --resolution 256`` into a 16-view, 20-frame
  NeRSemble-layout sequence with its ground-truth weights. 14 timesteps (talk and blink) train the avatar; 6
  (smile: expressions never seen in training) are held out. Held-out views (every 8th camera, the same ones in
  every timestep) of the held-out timesteps are scored (masked PSNR), posed with the true rig state (the
  tracking is given, as GaussianAvatars evaluates with tracked FLAME parameters).
* **static**: ``headforge avatar`` on the LPS scan's 32-view 256 px capture (24 train / 8 held out, every 4th
  view, as ``bench_gaussian_quality.py``), from an ICT-FaceKit ``fit-rig`` of the same capture; compared with
  the unbound Gaussians of ``bench_gaussian_quality.py`` (37.9 dB masked): the price of binding.
* **render**: posing (deform + bind) and rasterizing (CPU kernel) an avatar of about 50k Gaussians at 512 px,
  median of 20 frames with changing expressions.
* **swap**: the hair layer of the built-in head's avatar moved onto the LPS avatar and back; the receiving face
  region's PSNR against the receiver's own render (three views), and the before / after sheet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import torch

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.assets.sample_head import load_sample_head
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.stages.avatar import Avatar, pose_avatar
from headforge.stages.avatar_init import AvatarInitConfig, initial_bound_splats
from headforge.stages.gaussian_train import render_splats
from headforge.stages.rig_params import RigParams, Similarity, world_vertices

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCH_OUT = ROOT.parent / "bench_out"
HEADFORGE = str(ROOT / ".venv" / "bin" / "headforge")
D = torch.float64


def sh(*args: str) -> None:
    print("$ headforge " + " ".join(args), flush=True)
    subprocess.run([HEADFORGE, *args], check=True)


def builtin_avatar(face_points: int) -> Avatar:
    """A built-in-rig avatar of ``face_points`` Gaussians as initialised (texture: the sample head's)."""
    from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
    from headforge.renderers.mesh_render import render_mesh
    from headforge.representations.rig.deform import RigPose
    from headforge.stages.rig_evaluate import rig_mesh  # noqa: F401  (documents the texture's layout)
    from headforge.stages.rig_texture import RigTextureConfig, bake_rig_texture

    rig = load_builtin_rig()
    params = RigParams(Similarity(torch.tensor(1.0, dtype=D), torch.eye(3, dtype=D), torch.zeros(3, dtype=D)),
                       torch.zeros(rig.num_identity, dtype=D), torch.zeros(1, len(ARKIT_NAMES), dtype=D),
                       RigPose.rest(1, dtype=D))
    v = world_vertices(rig, params)[0].float()
    tex = load_sample_head().mesh.texture
    cams = make_rig(RigConfig(kind=RigKind.SPHERE, num_views=16, resolution=256))
    r = render_mesh(rig_mesh(rig, v, tex), cams)
    texture = bake_rig_texture(rig, v, cams, r.rgb, r.alpha, RigTextureConfig(size=512), tex)
    g = initial_bound_splats(rig, v, params.similarity, texture, None, None,
                             AvatarInitConfig(face_points=face_points), torch.Generator().manual_seed(0))
    return Avatar(rig, "builtin", params, texture, g, 3)


def part_render(frames: int = 20) -> None:
    from headforge.pipeline.animate_job import sweep_cameras

    avatar = builtin_avatar(50_000)
    cams = sweep_cameras(frames, 512, 30.0, 0.75, 25.0)
    g = torch.Generator().manual_seed(1)
    pose_s, raster_s = [], []
    for k in range(frames + 2):
        w = torch.zeros(len(ARKIT_NAMES), dtype=D)
        w[torch.randint(len(ARKIT_NAMES), (5,), generator=g)] = torch.rand(5, generator=g, dtype=D)
        params = avatar.frame_params(w * avatar.rig.expression_present.double())
        with torch.no_grad():
            t0 = time.perf_counter()
            splats = pose_avatar(avatar, params, world=False)
            t1 = time.perf_counter()
            render_splats(splats, cams[[k % frames]], 3, torch.ones(3))
            t2 = time.perf_counter()
        if k >= 2:  # the first two warm the kernel and caches
            pose_s.append(t1 - t0)
            raster_s.append(t2 - t1)
    total = [a + b for a, b in zip(pose_s, raster_s, strict=True)]
    print(f"\n## render: posed avatar, {len(avatar.gaussians)} Gaussians, 512 px, SH 3, CPU kernel, "
          f"{torch.get_num_threads()} threads, median of {frames}")
    print("| pose (deform + bind) ms | rasterize ms | total ms | fps |\n| --- | --- | --- | --- |")
    med = statistics.median(total)
    print(f"| {1e3 * statistics.median(pose_s):.0f} | {1e3 * statistics.median(raster_s):.0f} | "
          f"{1e3 * med:.0f} | {1 / med:.1f} |")


def part_static(steps: int) -> dict:
    cap = BENCH_OUT / "lps_capture_256"
    if not cap.exists():
        sh("render-capture", str(SHARED / "lps_head" / "head.obj"), "--out", str(cap), "--resolution", "256")
    fit = BENCH_OUT / "lps_fit_ict_256"
    if not (fit / "texture.png").exists():
        shutil.rmtree(fit, ignore_errors=True)
        sh("fit-rig", str(cap), "--rig", f"ict-facekit:{SHARED / 'ict_facekit'}", "--out", str(fit), "--resolution",
           "256", "--test-every", "4", "--cache-dir", str(BENCH_OUT / ".landmark_cache"))
    out = BENCH_OUT / "lps_avatar_256"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    sh("avatar", str(cap), "--rig-fit", str(fit), "--out", str(out), "--resolution", "256", "--test-every", "4",
       "--steps", str(steps))
    m = json.loads((out / "metrics.json").read_text())
    print(f"\n## static: LPS capture, ICT-FaceKit fit, {steps} steps ({time.perf_counter() - t0:.0f} s wall)")
    print("| Gaussians (face / hair / clothing) | held-out PSNR masked | PSNR | SSIM | train s |")
    print("| --- | --- | --- | --- | --- |")
    p = m["trained_frames"]
    g = m["gaussians"]
    print(f"| {m['num_gaussians']} ({g['face']} / {g['hair']} / {g['clothing']}) | {p['psnr_masked']:.2f} | "
          f"{p['psnr']:.2f} | {p['ssim']:.4f} | {m['seconds']['train']:.0f} |")
    return m


TRAIN_CLIPS, TEST_CLIP = (("talk", 10), ("blink", 4)), ("smile", 6)


def dynamic_capture() -> tuple[Path, Path, list[int]]:
    """The 20-timestep built-in-rig sequence and a rig-fit folder with its true state -> (capture, fit, held-out
    timesteps)."""
    from headforge.captures.formats import read_capture
    from headforge.captures.images import write_image
    from headforge.pipeline.rig_fit_file import TEXTURE_FILE, RigFitRecord, write_rig_fit
    from headforge.representations.rig.clips import Clip, read_clip, resample, write_clip
    from headforge.representations.rig.deform import RigPose
    from headforge.representations.rig.head_rig import LandmarkSet
    from headforge.stages.rig_texture import RigTextureConfig, bake_rig_texture
    from headforge.stages.views import load_views

    parts = [resample(read_clip(f"builtin:{name}"), n) for name, n in (*TRAIN_CLIPS, TEST_CLIP)]
    clip = Clip("bench_dynamic", 25.0, torch.cat([c.weights for c in parts]), torch.cat([c.rotations for c in parts]),
                "talk + blink (trained) then smile (held out)")
    root = BENCH_OUT / "avatar_dynamic"
    cap, fit = root / "capture", root / "truth_fit"
    held = list(range(clip.num_frames - TEST_CLIP[1], clip.num_frames))
    if not (cap / "expressions.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        write_clip(clip, root / "clip.json")
        sh("render-capture", "builtin", "--animation", str(root / "clip.json"), "--rig", "nersemble16",
           "--resolution", "256", "--out", str(cap))
    if not (fit / "rig_fit.json").exists():
        fit.mkdir(parents=True, exist_ok=True)
        rig = load_builtin_rig()
        truth = read_clip(cap / "expressions.json")
        T = truth.num_frames
        sim = Similarity(torch.tensor(1.0, dtype=D), torch.eye(3, dtype=D), torch.zeros(3, dtype=D))
        params = RigParams(sim, torch.zeros(rig.num_identity, dtype=D), truth.weights,
                           RigPose(truth.rotations, torch.zeros(T, 3, dtype=D)))
        capture = read_capture(cap, test_every=8)
        first = [i for i in capture.split.train if int(capture.frames[i]) == 0]
        views = load_views(capture, first)
        texture = bake_rig_texture(rig, world_vertices(rig, params.frame(0))[0].float(), views.cameras, views.images,
                                   views.alphas, RigTextureConfig(size=512), load_sample_head().mesh.texture)
        write_image(fit / TEXTURE_FILE, texture.texture.numpy())
        names = tuple(() for _ in range(T))
        write_rig_fit(RigFitRecord("builtin", rig.source, rig.licence, rig.num_vertices, params, tuple(range(T)),
                                   names, LandmarkSet.MEDIAPIPE_478, {"note": "the true state (bench)"}), fit)
    return cap, fit, held


def part_dynamic(steps: int) -> dict:
    cap, fit, held = dynamic_capture()
    out = BENCH_OUT / "avatar_dynamic" / "avatar"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    sh("avatar", str(cap), "--rig-fit", str(fit), "--out", str(out), "--resolution", "256", "--test-every", "8",
       "--steps", str(steps), "--test-frames", ",".join(map(str, held)))
    m = json.loads((out / "metrics.json").read_text())
    print(f"\n## dynamic: built-in rig, NeRSemble16 256 px, 20 timesteps ({len(held)} held out), {steps} steps "
          f"({time.perf_counter() - t0:.0f} s wall)")
    print("| views scored | masked PSNR | PSNR | SSIM |\n| --- | --- | --- | --- |")
    for key, label in (("trained_frames", "held-out views, trained timesteps"),
                       ("held_out_frames", "held-out views, held-out timesteps (unseen expressions)")):
        p = m[key]
        print(f"| {label} ({p['num_views']}) | {p['psnr_masked']:.2f} | {p['psnr']:.2f} | {p['ssim']:.4f} |")
    g = m["gaussians"]
    print(f"Gaussians {m['num_gaussians']} (face {g['face']}, hair {g['hair']}, clothing {g['clothing']}), "
          f"train {m['seconds']['train']:.0f} s")
    return m


def part_swap() -> None:
    pairs = (("lps_avatar_256", "avatar_dynamic/avatar", "swap_builtin_hair_onto_lps"),
             ("avatar_dynamic/avatar", "lps_avatar_256", "swap_lps_hair_onto_builtin"))
    print("\n## swap: hair layer moved between the built-in head (built-in rig) and the LPS head (ICT-FaceKit)")
    print("| receiver <- donor | hair Gaussians moved | receiver face-region PSNR (3 views) | sheet |")
    print("| --- | --- | --- | --- |")
    for receiver, donor, name in pairs:
        out = BENCH_OUT / name
        shutil.rmtree(out, ignore_errors=True)
        sh("hair-swap", str(BENCH_OUT / receiver), str(BENCH_OUT / donor), "--out", str(out))
        m = json.loads((out / "metrics.json").read_text())
        psnr = ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} -" for k, v in m["face_psnr_db"].items())
        print(f"| {receiver} <- {donor} | {m['counts']['donor']['hair']} | {psnr} (min {m['face_psnr_db_min']}) | "
              f"{out / 'before_after.png'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="dynamic,static,render,swap")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    parts = args.parts.split(",")
    if "dynamic" in parts:
        part_dynamic(args.steps)
    if "render" in parts:
        part_render()
    if "static" in parts:
        part_static(args.steps)
    if "swap" in parts:
        part_swap()
    return 0


if __name__ == "__main__":
    sys.exit(main())
