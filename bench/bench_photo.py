"""Benchmark the single-photo path (issue 14 targets). Prints one table per part; 2 torch threads, quiet machine.

Run: ``.venv/bin/python bench/bench_photo.py [--parts lps,portrait] [--rigs builtin,ict]`` under the heavy-job lock
(``flock /tmp/hf-heavy.lock ...``; ../shared/data must hold ict_facekit/ and lps_head/; ../bench_out/photo/ receives
the photos and the outputs). Every ``headforge photo`` run uses the main job's preset (FaceLift's six views, 256 px,
600 steps, 8000 face Gaussians).

* **lps**: the LPS scan rendered by ``headforge render-capture head.obj --rig sphere32 --resolution 512`` (32 views
  with masks and depth). sphere32 has no camera at azimuth 0, elevation 0; the photo is its view nearest to it
  (``captures.capture.viewing_angles``), composited on a plain grey background and written as a PNG (no EXIF: the
  job's 50 mm focal prior is used, not the true focal). ``headforge photo`` runs on it with each rig, then the avatar
  (its fitted frame: the photo's expression) is rendered from the 31 other cameras and scored against the true
  renders (on white): PSNR, PSNR inside the true mask (the scan's shoulders and chest included, which no rig
  models), PSNR over the head (the true surface above the fitted rig's neck cut, back-projected from the capture's
  depth), SSIM, grouped by azimuth (front |az| <= 22.5, 45, 90, back > 112.5 degrees); the photo's own camera is
  scored too (the frame check). ``--reuse`` scores finished outputs again without rerunning the jobs.

  Frames: the avatar lives in the photo camera's world (the rig's head frame found by PnP), the capture in the LPS
  head frame. The avatar's photo camera (``align_photo`` run again on the same file: it is deterministic, checked
  against ``aligned.png``; its roll and crop scale undone to the photo's pixels, focal f_p) and the true camera of
  the photo view (focal f_c) give world_capture <- world_avatar as a similarity: rotation R_c^T R_p, and in the true
  camera's coordinates c_c = s c_p + (0, 0, d_c - s d_a), with d_a the fitted face's depth (mean of the reliable
  fitted landmarks) and s = f_p d_c / (f_c d_a), so the photo projects the same around the face (weak perspective
  about it). The one quantity a single photo cannot give, the true depth d_c, is read from the capture's depth map
  at the fitted landmarks (median of 1-D fits). A camera w2c = [R|t] of the capture renders the avatar as
  [R R_sim | (R t_sim + t) / s] (projection ignores the common scale).

  Face-region Chamfer (mm, as ``bench_rig_fit.py``: mean of fit -> scan over the face-skin vertices and scan -> fit
  near them) of the fitted rig in the photo's frame (its expression and pose) mapped by that similarity; and again
  after a similarity ICP of the face skin onto the scan (the shape error alone, pose and scale errors removed).
* **portrait**: ``headforge photo builtin:astronaut`` (scikit-image's 512 x 512 portrait): the time from photo to
  GLB with stage times and the machine's load, and the landmark reprojection.

Landmark reprojection: the job's ``landmark_median_px`` is in the aligned crop's pixels (FaceLift's crop, the face
~2x the photo's scale); times ``crop.side / size`` gives the input photo's pixels (both photos are 512 px).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import headforge  # noqa: F401  # isort: skip  (before torch: passive OpenMP waiting, see headforge/threads.py)
import numpy as np
import torch
from scipy.spatial import cKDTree

from headforge.captures.capture import Capture, viewing_angles
from headforge.captures.formats import read_capture
from headforge.captures.images import read_image, write_image
from headforge.geometry.cameras import Cameras
from headforge.metrics import psnr, ssim
from headforge.pipeline.avatar_file import load_avatar
from headforge.pipeline.avatar_views import render_avatar
from headforge.representations.rig.deform import landmarks as rig_landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet, Region
from headforge.stages.avatar import Avatar
from headforge.stages.photo_camera import template_landmarks
from headforge.stages.photo_types import AlignedPhoto
from headforge.stages.rig_params import world_vertices

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCH_OUT = ROOT.parent / "bench_out"
OUT = BENCH_OUT / "photo"
D = torch.float64
RIGS = {"builtin": "builtin", "ict": f"ict-facekit:{SHARED / 'ict_facekit'}"}
BACKGROUND = 0.8  # the photo's plain grey wall
GROUPS = (("front", 0.0, 22.5), ("45", 22.5, 67.5), ("90", 67.5, 112.5), ("back", 112.5, 180.1))


def load() -> str:
    """The 1, 5 and 15 minute load averages (2 cores: 2.0 is full)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


REUSE = False  # --reuse: score the outputs already in ../bench_out/photo (times from their metrics.json)


def photo_job(out: Path, *args: str) -> float:
    """``headforge photo ... --out out`` (unless reusing a finished output) -> wall seconds (NaN when reused)."""
    if REUSE and (out / "metrics.json").is_file():
        print(f"(reusing {out})", flush=True)
        return float("nan")
    return sh("photo", *args, "--out", str(out), "--overwrite")


def sh(*args: str) -> float:
    """Run the worktree's ``headforge`` CLI; -> wall seconds."""
    print("$ headforge " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from headforge.cli import main; sys.exit(main())", *args],
                   check=True, cwd=ROOT)
    return time.perf_counter() - t0


def lps_capture() -> Capture:
    path = BENCH_OUT / "lps_capture_512"
    if not (path / "transforms.json").is_file():
        sh("render-capture", str(SHARED / "lps_head" / "head.obj"), "--rig", "sphere32", "--resolution", "512",
           "--out", str(path))
    return read_capture(path, test_every=0)


def front_index(cap: Capture) -> int:
    a = viewing_angles(cap.cameras).double()
    return int((a[:, 0].pow(2) + a[:, 1].pow(2)).argmin())


def on_white(cap: Capture, i: int, bg: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    v = cap.load(i)
    a = v.alpha[..., None]
    return v.rgb * a + bg * (1 - a), v.alpha


def realign(photo: str, rig_spec: str, out: Path) -> tuple[AlignedPhoto, HeadRig]:
    """``align_photo`` as the job ran it (same photo, rig and default config), checked against ``aligned.png``."""
    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.pipeline.photo_job import load_photo
    from headforge.stages.photo_align import align_photo

    rig = load_rig(parse_rig_spec(rig_spec))
    aligned = align_photo(load_photo(photo), rig)
    saved = torch.from_numpy(read_image(out / "aligned.png")[..., :3]).float()
    diff = float((saved - aligned.image).abs().max())
    if diff > 2.5 / 255:
        raise RuntimeError(f"align_photo did not reproduce {out / 'aligned.png'} (max diff {diff:.4f})")
    return aligned, rig


def photo_camera(aligned: AlignedPhoto) -> tuple[torch.Tensor, float]:
    """The avatar's camera in the input photo's pixels: (w2c [4, 4] float64, focal px); principal point the photo's
    centre (``photo_camera.similarity_camera`` undone: crop scale and roll)."""
    scale = aligned.size / aligned.crop.side
    roll = -math.radians(aligned.crop.roll_deg)
    Rz = torch.eye(4, dtype=D)
    Rz[:2, :2] = torch.tensor([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]], dtype=D)
    return Rz.T @ aligned.camera.world_to_camera[0].double(), float(aligned.camera.fx[0]) / scale


def capture_from_avatar(avatar: Avatar, rig: HeadRig, aligned: AlignedPhoto, cap: Capture, p: int
                        ) -> tuple[float, torch.Tensor, torch.Tensor, dict]:
    """The similarity world_capture <- world_avatar (see the module doc) -> (s, R [3, 3], t [3], notes)."""
    W_p, f_p = photo_camera(aligned)
    W_c = cap.native_cameras.world_to_camera[p].double()
    f_c = float(cap.native_cameras.fx[p])
    verts = world_vertices(rig, avatar.params.frame(0))[0].double()
    lm = rig_landmarks(rig, verts[None], LandmarkSet.MEDIAPIPE_478)[0]
    lm = lm[template_landmarks(rig)[1]]
    c_p = lm @ W_p[:3, :3].T + W_p[:3, 3]  # [L, 3] fitted landmarks in the photo camera
    u = f_p * c_p[:, :2] / c_p[:, 2:] + torch.tensor([aligned.crop.original_size[0] / 2,
                                                      aligned.crop.original_size[1] / 2], dtype=D)
    depth = cap.load_depth(p)
    ij = u.floor().long()
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < depth.shape[1]) & (ij[:, 1] >= 0) & (ij[:, 1] < depth.shape[0])
    z_true = torch.zeros(len(u), dtype=D)
    z_true[inside] = depth[ij[inside, 1], ij[inside, 0]]
    ok = inside & (z_true > 0)
    d_a = float(c_p[ok, 2].mean())
    k = f_p * (c_p[ok, 2] - d_a) / (f_c * d_a) + 1
    d_c = float((z_true[ok] / k).median())
    s = f_p * d_c / (f_c * d_a)
    R = W_c[:3, :3].T @ W_p[:3, :3]
    t = W_c[:3, :3].T @ (s * W_p[:3, 3] + torch.tensor([0.0, 0.0, d_c - s * d_a], dtype=D) - W_c[:3, 3])
    return s, R, t, {"f_photo_px": f_p, "f_true_px": f_c, "d_avatar": d_a, "d_true_m": d_c, "scale": s,
                     "landmarks_on_depth": int(ok.sum())}


def cameras_in_avatar_world(cams: Cameras, s: float, R: torch.Tensor, t: torch.Tensor) -> Cameras:
    W = cams.world_to_camera.double()
    out = W.clone()
    out[:, :3, :3] = W[:, :3, :3] @ R
    out[:, :3, 3] = ((W[:, :3, :3] @ t) + W[:, :3, 3]) / s
    return replace(cams, world_to_camera=out.to(cams.world_to_camera.dtype))


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:  # [P, 3] -> dst ~ s R src + t
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    E = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(U @ Vt)))])
    R = U @ E @ Vt
    s = float((S * np.diag(E)).sum() / (a * a).sum(1).mean())
    return s, R, md - s * R @ ms


def face_icp(face: np.ndarray, tree: cKDTree, scan: np.ndarray, iters: int = 30) -> np.ndarray:
    """[F, 3] face-skin vertices moved by the similarity that best lays them on the scan (ICP, trimmed 90 %)."""
    cur = face.copy()
    for _ in range(iters):
        d, idx = tree.query(cur)
        keep = d <= np.quantile(d, 0.9)
        s, R, t = umeyama(cur[keep], scan[idx[keep]])
        cur = s * cur @ R.T + t
    return cur


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def head_region(cap: Capture, i: int, y_cut: float) -> torch.Tensor:
    """[H, W] bool: view ``i``'s true surface above ``y_cut`` (capture frame, +y up): the scan without the shoulders
    and chest that no rig models (back-projected from the capture's depth map)."""
    depth = cap.load_depth(i)
    cam = cap.native_cameras[i]
    H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=D) + 0.5, torch.arange(W, dtype=D) + 0.5, indexing="ij")
    x = torch.stack([(u - float(cam.cx[0])) / float(cam.fx[0]) * depth,
                     (v - float(cam.cy[0])) / float(cam.fy[0]) * depth, depth], -1)  # [H, W, 3] camera
    w2c = cam.world_to_camera[0].double()
    world = (x - w2c[:3, 3]) @ w2c[:3, :3]  # R^T (x - t)
    return (depth > 0) & (world[..., 1] >= y_cut)


def score_views(avatar: Avatar, cap: Capture, cams: Cameras, views: list[int], y_cut: float) -> list[dict]:
    rows = []
    angles = viewing_angles(cap.cameras)
    for i in views:
        truth, alpha = on_white(cap, i)
        head = (head_region(cap, i, y_cut) & (alpha > 0.5)).float()
        with torch.no_grad():
            rgb, _ = render_avatar(avatar, 0, cams[[i]], torch.ones(3))
        pred = rgb.clamp(0, 1).float()
        rows.append({"view": i, "azimuth": float(angles[i, 0]), "elevation": float(angles[i, 1]),
                     "psnr": float(psnr(pred, truth[None])[0]),
                     "psnr_masked": float(psnr(pred, truth[None], alpha[None])[0]),
                     "psnr_head": float(psnr(pred, truth[None], head[None])[0]),
                     "ssim": float(ssim(pred, truth[None])[0]), "render": pred[0]})
    return rows


def part_lps(rigs: list[str], extra: tuple[str, ...]) -> dict:
    from bench_rig_fit import face_chamfer_mm, scan_points

    cap = lps_capture()
    p = front_index(cap)
    az, el = viewing_angles(cap.cameras)[p].tolist()
    OUT.mkdir(parents=True, exist_ok=True)
    photo = OUT / "lps_photo.png"
    rgb, _ = on_white(cap, p, BACKGROUND)
    write_image(photo, rgb.numpy())
    print(f"\n## lps: photo = sphere32 view {p} (azimuth {az:+.1f}, elevation {el:+.1f}), 512 px, grey background, "
          f"{photo}", flush=True)
    scan = scan_points()
    tree = cKDTree(scan)
    others = [i for i in range(len(cap)) if i != p]
    results = {}
    for name in rigs:
        out = OUT / f"lps_{name}"
        before = load()
        wall = photo_job(out, str(photo), "--rig", RIGS[name], *extra)
        m = json.loads((out / "metrics.json").read_text())
        aligned, rig = realign(str(photo), RIGS[name], out)
        avatar = load_avatar(out)
        s, R, t, notes = capture_from_avatar(avatar, rig, aligned, cap, p)
        cams = cameras_in_avatar_world(cap.cameras, s, R, t)
        verts = world_vertices(rig, avatar.params.frame(0))[0].double()
        v_cap = (s * verts @ R.T + t).numpy()
        y_cut = float(v_cap[:, 1].min())  # the rig's neck cut: the scan below it (shoulders, chest) is not scored
        chin = float(rig_landmarks(rig, torch.from_numpy(v_cap)[None], LandmarkSet.MEDIAPIPE_478)[0][152, 1])
        rows = score_views(avatar, cap, cams, [p, *others], y_cut)
        write_image(OUT / f"lps_{name}_views.png", torch.cat([
            torch.cat([on_white(cap, r["view"])[0] for r in rows[:16]], 1),
            torch.cat([r["render"] for r in rows[:16]], 1),
            torch.cat([on_white(cap, r["view"])[0] for r in rows[16:]], 1),
            torch.cat([r["render"] for r in rows[16:]], 1)], 0)[::2, ::2].numpy())
        chamfer = face_chamfer_mm(rig, torch.from_numpy(v_cap), scan, tree)
        face = rig.region_mask(Region.FACE_SKIN).numpy()
        v_icp = v_cap.copy()
        v_icp[face] = face_icp(v_cap[face], tree, scan)
        chamfer_icp = face_chamfer_mm(rig, torch.from_numpy(v_icp), scan, tree)
        lm_photo = m["landmark_median_px"] * aligned.crop.side / aligned.size
        results[name] = {"rows": rows, "chamfer": chamfer, "chamfer_icp": chamfer_icp,
                         "lm_crop": m["landmark_median_px"], "lm_photo": lm_photo, "seconds": m["seconds"],
                         "wall": wall, "load": before, "frame": notes, "cut_cm": 100 * (chin - y_cut),
                         "views_psnr": m["views_psnr"]}
        print(f"[{name}] frames: {', '.join(f'{k} {v:.4g}' for k, v in notes.items())}; photo view PSNR "
              f"{rows[0]['psnr']:.2f} (masked {rows[0]['psnr_masked']:.2f}, head {rows[0]['psnr_head']:.2f}); "
              f"chamfer {chamfer:.2f} mm "
              f"(after ICP {chamfer_icp:.2f}); landmarks {lm_photo:.2f} px; {wall:.0f} s", flush=True)
    print("\n### LPS: the avatar against the true renders of the 31 other sphere32 views (512 px, white background)")
    print("(masked: inside the true mask, shoulders and chest included; head: the true surface above the rig's neck "
          "cut, " + ", ".join(f"{n} {r['cut_cm']:.1f} cm below the chin" for n, r in results.items()) + ")")
    print("| rig | views | azimuth group | PSNR dB | PSNR masked dB | PSNR head dB | SSIM |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        groups = [(f"photo view ({r['rows'][0]['azimuth']:+.0f})", r["rows"][:1])]
        groups += [(label, [x for x in r["rows"][1:] if lo <= abs(x["azimuth"]) < hi]) for label, lo, hi in GROUPS]
        groups.append(("all 31", r["rows"][1:]))
        for label, g in groups:
            print(f"| {name} | {len(g)} | {label} | {_mean(g, 'psnr'):.2f} | {_mean(g, 'psnr_masked'):.2f} | "
                  f"{_mean(g, 'psnr_head'):.2f} | {_mean(g, 'ssim'):.4f} |")
    print("\n### LPS: fit geometry, landmarks, time")
    print("| rig | face Chamfer mm (photo camera) | after similarity ICP mm | landmarks median px (crop / photo) | "
          "generated views PSNR | total s | stages s | load before |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items() if k != "total")
        print(f"| {name} | {r['chamfer']:.2f} | {r['chamfer_icp']:.2f} | {r['lm_crop']:.2f} / {r['lm_photo']:.2f} | "
              f"{r['views_psnr']:.2f} | {r['seconds']['total']:.0f} | {stages} | {r['load']} |")
    print("\n### per view (PSNR head dB)\n| view | azimuth | elevation | " + " | ".join(results) + " |")
    print("| --- | --- | --- |" + " --- |" * len(results))
    first = next(iter(results.values()))["rows"]
    for k, row in enumerate(first):
        vals = " | ".join(f"{r['rows'][k]['psnr_head']:.2f}" for r in results.values())
        print(f"| {row['view']}{' (photo)' if k == 0 else ''} | {row['azimuth']:+.0f} | {row['elevation']:+.0f} | "
              f"{vals} |")
    return results


def part_portrait(extra: tuple[str, ...]) -> dict:
    out = OUT / "astronaut"
    before = load()
    wall = photo_job(out, "builtin:astronaut", *extra)
    after = load()
    m = json.loads((out / "metrics.json").read_text())
    aligned, _ = realign("builtin:astronaut", "builtin", out)
    lm_photo = m["landmark_median_px"] * aligned.crop.side / aligned.size
    glb = (out / "head.glb").stat().st_size / 1e6
    print("\n## portrait: headforge photo builtin:astronaut (default preset, built-in rig)")
    print("| wall s (CLI) | job total s | stages s | landmarks median px (crop / photo) | generated views PSNR | "
          "GLB MB | load before / after |\n| --- | --- | --- | --- | --- | --- | --- |")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in m["seconds"].items() if k != "total")
    print(f"| {wall:.0f} | {m['seconds']['total']:.0f} | {stages} | {m['landmark_median_px']:.2f} / {lm_photo:.2f} | "
          f"{m['views_psnr']:.2f} | {glb:.1f} | {before} / {after} |")
    return m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="lps,portrait")
    parser.add_argument("--rigs", default="builtin,ict")
    parser.add_argument("--reuse", action="store_true", help="score finished outputs again without rerunning")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 steps at 128 px (not the preset)")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse
    torch.set_num_threads(2)
    sys.path.insert(0, str(ROOT / "bench"))
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load {load()}")
    parts = args.parts.split(",")
    extra = ("--steps", "20", "--resolution", "128") if args.quick else ()
    if "lps" in parts:
        part_lps(args.rigs.split(","), extra)
    if "portrait" in parts:
        part_portrait(extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
