"""Python steps of ``bench/gpu_check.sh`` (one GPU machine, one call): environment, kernel builds, step time.

    python3 bench/gpu_check.py env                      # versions, the GPU, which optional CUDA packages import
    python3 bench/gpu_check.py build                    # compile gsplat / nerfacc on first use (tiny real calls)
    python3 bench/gpu_check.py step-time --work DIR     # headforge's Gaussian training step vs a bare gsplat loop

``step-time`` renders the LPS head (``$HEADFORGE_LPS_HEAD``, default ``../shared/data/lps_head``) into
``DIR/lps_capture_<res>`` exactly as ``bench_gaussian_quality.py --out DIR`` does (so the quality bench reuses it),
starts both loops from the same visual-hull splats, SH degree 3, no densification, and the same loss
(0.8 L1 + 0.2 D-SSIM with ``headforge.metrics.ssim``) and optimiser (Adam, headforge's learning rates): the ratio
is headforge's overhead around gsplat.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

DATA = Path(os.environ.get("HEADFORGE_LPS_HEAD", Path(__file__).resolve().parents[2] / "shared" / "data" / "lps_head"))
OPTIONAL = ("gsplat", "nerfacc", "tinycudann", "nvdiffrast", "tyro", "trimesh", "xatlas", "fast_simplification")


def cmd_env(_: argparse.Namespace) -> int:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
            info[name] = getattr(module, "__version__", "importable")
        except ImportError as err:
            info[name] = f"MISSING ({err})"
    print(json.dumps(info, indent=2))
    return 0 if torch.cuda.is_available() else 1


def _timed(label: str, fn) -> bool:
    t = time.perf_counter()
    try:
        fn()
    except Exception as err:  # a diagnostic step: report which kernel failed and go on to the next
        print(f"{label}: FAILED after {time.perf_counter() - t:.0f} s: {type(err).__name__}: {err}", flush=True)
        return False
    torch.cuda.synchronize()
    print(f"{label}: ok in {time.perf_counter() - t:.0f} s", flush=True)
    return True


def cmd_build(_: argparse.Namespace) -> int:
    """First use compiles the CUDA extensions (JIT); later steps then start warm."""
    from headforge.renderers.gaussian_raster import gsplat_available, rasterize_gaussians
    from headforge.renderers.volume_nerfacc import nerfacc_available, render_weights_nerfacc

    ok = True

    def gsplat_call():
        n, dev = 64, "cuda"
        g = torch.Generator().manual_seed(0)
        means = (torch.rand(n, 3, generator=g) - 0.5) * 0.1 + torch.tensor([0.0, 0.0, 0.5])
        out = rasterize_gaussians(means.to(dev), torch.randn(n, 4, generator=g).to(dev),
                                  torch.full((n, 3), 0.01, device=dev), torch.full((n,), 0.5, device=dev),
                                  torch.rand(n, 16, 3, generator=g).to(dev), torch.eye(4, device=dev)[None],
                                  torch.tensor([[[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]]], device=dev), 64, 64,
                                  sh_degree=3, backend="gsplat")
        assert out.backend == "gsplat" and out.alpha.max() > 0

    def nerfacc_call():
        s = torch.full((8,), 10.0, device="cuda")
        t0 = torch.linspace(0, 0.7, 8, device="cuda")
        weights, _, _ = render_weights_nerfacc(s, t0, t0 + 0.1, torch.zeros(8, dtype=torch.long, device="cuda"), 1)
        assert weights.sum() > 0

    if gsplat_available():
        ok &= _timed("gsplat build + first call", gsplat_call)
    else:
        print("gsplat: not importable (carry its wheel in .whl/)")
        ok = False
    if nerfacc_available():
        ok &= _timed("nerfacc build + first call", nerfacc_call)
    else:
        print("nerfacc: not importable (carry its wheel in .whl/)")
        ok = False
    return 0 if ok else 1


def lps_capture(work: Path, resolution: int) -> Path:
    """The capture bench_gaussian_quality.py / bench_field_quality.py render into ``--out`` (same name and rig)."""
    from headforge.geometry.camera_rigs import RigConfig, RigKind
    from headforge.geometry.head_frame import HeadFrameSpec
    from headforge.representations.mesh_io import load_mesh
    from headforge.stages.render_capture import RenderCaptureConfig, render_capture

    capture = work / f"lps_capture_{resolution}"
    if not capture.exists():
        cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.SPHERE32, resolution=resolution),
                                  head_frame=HeadFrameSpec(head_width_m=0.155), test_every=4)
        render_capture(load_mesh(DATA / "head.obj"), cfg, capture, progress=False)
    return capture


def bare_gsplat_seconds(train, init, cfg, scale: float, steps: int, warmup: int) -> float:
    """Seconds per step of a plain loop: gsplat.rasterization, the same loss, Adam; median of 5 blocks."""
    from gsplat import rasterization

    from headforge.metrics import ssim
    from headforge.stages.views import composite

    dev = "cuda"
    params = {"means": init.means, "quats": init.quats, "log_scales": init.scales.log(),
              "logit_opacities": torch.logit(init.opacities.clamp(1e-4, 1 - 1e-4)), "sh": init.sh}
    params = {k: torch.nn.Parameter(v.detach().clone().to(dev)) for k, v in params.items()}
    lrs = {"means": cfg.means_lr * scale, "quats": cfg.quats_lr, "log_scales": cfg.scales_lr,
           "logit_opacities": cfg.opacities_lr, "sh": cfg.sh0_lr}
    opt = torch.optim.Adam([{"params": [p], "lr": lrs[k]} for k, p in params.items()], eps=1e-15)
    images = train.images.to(dev)
    alphas = train.alphas.to(dev) if train.alphas is not None else None
    viewmats, Ks = train.cameras.world_to_camera.to(dev), train.cameras.intrinsics().to(dev)
    w, h = train.cameras.same_size()
    g = torch.Generator().manual_seed(0)

    def step():
        i = int(torch.randint(len(images), (1,), generator=g))
        bg = torch.rand(3, generator=g).to(dev)
        target = composite(images[i:i + 1], None if alphas is None else alphas[i:i + 1], bg)
        rgb, _, _ = rasterization(params["means"], params["quats"], params["log_scales"].exp(),
                                  params["logit_opacities"].sigmoid(), params["sh"], viewmats[i:i + 1], Ks[i:i + 1],
                                  w, h, sh_degree=3, backgrounds=bg[None])
        loss = 0.8 * (rgb - target).abs().mean() + 0.2 * (1 - ssim(rgb, target).mean())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    blocks = []
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(max(1, steps // 5)):
            step()
        torch.cuda.synchronize()
        blocks.append((time.perf_counter() - t) / max(1, steps // 5))
    return statistics.median(blocks)


def cmd_step_time(args: argparse.Namespace) -> int:
    from headforge.captures.formats import read_capture
    from headforge.captures.inspect import summarize
    from headforge.pipeline.methods import Method, load_preset
    from headforge.stages.gaussian_train import initial_splats, scene_scale, train_gaussians
    from headforge.stages.views import load_views

    capture = read_capture(lps_capture(args.work, args.resolution), test_every=4)
    summary = summarize(capture)
    bounds = tuple(torch.tensor(b, dtype=torch.float32) for b in (summary.bounds_min, summary.bounds_max))
    train = load_views(capture, capture.split.train)
    preset = load_preset(Method.GAUSSIANS, args.preset, resolution=args.resolution, steps=args.steps)
    cfg = replace(preset.train, sh_degree_interval=1, checkpoint_every=10**9,
                  densify=replace(preset.train.densify, refine_stop=0))
    init = initial_splats(train, *bounds, cfg, torch.Generator().manual_seed(cfg.seed))
    train_gaussians(train, bounds, replace(cfg, steps=args.warmup), init=init, device="cuda", progress=False)
    runs = [train_gaussians(train, bounds, cfg, init=init, device="cuda", progress=False).seconds / cfg.steps
            for _ in range(3)]
    ours = statistics.median(runs)
    bare = bare_gsplat_seconds(train, init, cfg, scene_scale(train), args.steps, args.warmup)
    title = (f"Gaussian training step on {torch.cuda.get_device_name(0)}: LPS head {args.resolution} px, "
             f"{len(init)} Gaussians, SH degree 3, no densification, median s/step ({args.steps} steps)")
    print(title)
    print("| loop | s/step | vs bare gsplat |\n|---|---|---|")
    print(f"| bare gsplat (rasterization + L1/D-SSIM + Adam) | {bare:.4f} | 1.00x |")
    print(f"| headforge train_gaussians (backend gsplat) | {ours:.4f} | {ours / bare:.2f}x |")
    print(json.dumps({"bare_s": bare, "headforge_s": ours, "ratio": ours / bare, "gaussians": len(init)}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("env").set_defaults(fn=cmd_env)
    sub.add_parser("build").set_defaults(fn=cmd_build)
    st = sub.add_parser("step-time")
    st.add_argument("--work", type=Path, required=True, help="capture folder (shared with the quality bench)")
    st.add_argument("--resolution", type=int, default=512)
    st.add_argument("--steps", type=int, default=300)
    st.add_argument("--warmup", type=int, default=20)
    st.add_argument("--preset", default="default")
    st.set_defaults(fn=cmd_step_time)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
