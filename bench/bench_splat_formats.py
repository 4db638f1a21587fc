"""Splat file formats on one trained model: file size and PSNR of each format's renders against the PLY's.

Target (issue 13): ``.spz`` >= 8x smaller than the PLY at PSNR >= 40 dB. The PLY and GLB are float32 and
render exactly like the model; ``.splat`` drops the SH bands above 0 and keeps 8-bit colour and rotation;
``.spz`` quantises everything (see headforge/io/spz.py). PSNR is over every pixel of every view (white
background) and, more strictly, over the pixels the model covers (alpha > 0.5 in the PLY's render).

    .venv/bin/python bench/bench_splat_formats.py --splats /work/bench_out/gaussians_256_every/splats.ply \\
        --capture /work/bench_out/lps_capture_256
    .venv/bin/python bench/bench_splat_formats.py --splats /work/bench_out/lps_avatar_256/avatar/layers/*.ply \\
        --capture /work/bench_out/lps_capture_256

``spz_vs_ply(splats, cameras)`` is the one figure the export bench needs.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from headforge.captures.formats import read_capture
from headforge.geometry.cameras import Cameras
from headforge.io.spz import SpzOptions, SpzVersion
from headforge.representations.gaussians import Splats
from headforge.representations.splat_io import (
    load_splats_dot_splat,
    load_splats_glb,
    load_splats_ply,
    load_splats_spz,
    save_splats_dot_splat,
    save_splats_glb,
    save_splats_ply,
    save_splats_spz,
)
from headforge.stages.gaussian_train import render_splats


@dataclass(frozen=True)
class FormatFigure:
    name: str
    size_bytes: int
    smaller_than_ply: float  # PLY bytes / these bytes
    psnr_db: float  # every pixel, against the PLY's render (inf when identical)
    psnr_covered_db: float  # pixels with alpha > 0.5 in the PLY's render


@dataclass(frozen=True)
class SpzVsPly:
    ply_bytes: int
    spz_bytes: int
    smaller: float  # ply_bytes / spz_bytes (target >= 8)
    psnr_db: float  # target >= 40
    psnr_covered_db: float
    views: int

    @property
    def meets_target(self) -> bool:
        return self.smaller >= 8.0 and self.psnr_db >= 40.0


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:  # [C, H, W, 3] x2
    err = (a - b) ** 2
    mse = float(err[mask].mean()) if mask is not None else float(err.mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)


def _render(splats: Splats, cameras: Cameras, degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    background = torch.ones(len(cameras), 3)
    out = render_splats(splats, cameras, degree, background)
    return out.rgb, out.alpha[..., 0]


def format_table(splats: Splats, cameras: Cameras, folder: Path) -> list[FormatFigure]:
    """Write the splats in every format into ``folder``, read each back, render, compare with the PLY."""
    degree = splats.sh_degree
    files = {"ply": save_splats_ply(splats, folder / "s.ply"), "glb": save_splats_glb(splats, folder / "s.glb"),
             "splat": save_splats_dot_splat(splats, folder / "s.splat"),
             "spz v3": save_splats_spz(splats, folder / "s3.spz"),
             "spz v2": save_splats_spz(splats, folder / "s2.spz", SpzOptions(version=SpzVersion.V2))}
    readers = {"ply": load_splats_ply, "glb": load_splats_glb, "splat": load_splats_dot_splat,
               "spz v3": load_splats_spz, "spz v2": load_splats_spz}
    ref, alpha = _render(load_splats_ply(files["ply"]), cameras, degree)
    covered = alpha > 0.5
    ply_bytes = files["ply"].stat().st_size
    rows = []
    for name, path in files.items():
        back = readers[name](path)
        img, _ = _render(back, cameras, min(degree, back.sh_degree))
        size = path.stat().st_size
        rows.append(FormatFigure(name, size, ply_bytes / size, _psnr(img, ref), _psnr(img, ref, covered)))
    return rows


def spz_vs_ply(splats: Splats, cameras: Cameras, options: SpzOptions | None = None) -> SpzVsPly:
    """Size of the PLY and the .spz of ``splats`` and the PSNR between their renders from ``cameras``."""
    with tempfile.TemporaryDirectory(prefix="hf-spz-") as tmp:
        ply = save_splats_ply(splats, Path(tmp) / "s.ply")
        spz = save_splats_spz(splats, Path(tmp) / "s.spz", options)
        ref, alpha = _render(load_splats_ply(ply), cameras, splats.sh_degree)
        img, _ = _render(load_splats_spz(spz), cameras, splats.sh_degree)
        sizes = ply.stat().st_size, spz.stat().st_size
    return SpzVsPly(sizes[0], sizes[1], sizes[0] / sizes[1], _psnr(img, ref), _psnr(img, ref, alpha > 0.5),
                    len(cameras))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splats", type=Path, nargs="+", required=True,
                    help="a trained model's splats.ply (several PLYs of one SH degree are joined, e.g. an avatar's "
                         "layers/*.ply)")
    ap.add_argument("--capture", type=Path, required=True, help="a capture whose cameras to render from")
    ap.add_argument("--every", type=int, default=4, help="render every n-th camera of the capture")
    args = ap.parse_args()
    parts = [load_splats_ply(p) for p in args.splats]
    splats = Splats(*(torch.cat([getattr(p, k) for p in parts]) for k in ("means", "quats", "scales", "opacities",
                                                                          "sh")))
    cameras = read_capture(args.capture).native_cameras
    cameras = cameras[torch.arange(0, len(cameras), args.every)]
    with tempfile.TemporaryDirectory(prefix="hf-formats-") as tmp:
        rows = format_table(splats, cameras, Path(tmp))
    w, h = cameras.same_size()
    print(f"{len(splats)} splats, SH degree {splats.sh_degree}, {len(cameras)} views at {w}x{h}")
    print("| format | bytes | PLY / this | PSNR dB (all) | PSNR dB (covered) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.name} | {r.size_bytes} | {r.smaller_than_ply:.2f} | {r.psnr_db:.2f} | {r.psnr_covered_db:.2f} |")


if __name__ == "__main__":
    main()
