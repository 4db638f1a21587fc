"""Third-party readers open headforge's splat files with the same values and the same "up".

- ``gsply`` (PyPI, dev extra) reads our PLY and .spz and writes a .spz we read (it turns no axes between
  PLY and .spz, so only value agreement is checked there);
- ``@playcanvas/splat-transform`` (npm, installed by tools/install_clients.sh into .cache/clients) reads
  our PLY, .splat and .spz (each converted to CSV, which it writes in its PLY space: the OpenCV / 3DGS
  world) and writes GLB and .spz that we read back.

Facts these tests pin: splat-transform reads .spz as RUB (the head frame) and turns it into its PLY space
by flipping y and z, exactly our SplatFrame.OPENCV turn, so our PLY, .splat and .spz land on the same
values, SH signs included. Its GLB writer goes from PLY space to glTF by a 180-degree turn about z, so
its GLB of our files is upright like ours (the top of the head at +y) but faces -z, where ours faces +z
as glTF defines an asset's front (the two differ by a half turn about the vertical).

Without node, the package or gsply the tests skip with the reason, except under ``CI=true`` (fail), as
tests/gltf_validator.py does.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from headforge.io.spz import SpzOptions, SpzVersion, spz_bounds
from headforge.representations.gaussians import Splats
from headforge.representations.splat_formats import turn_about_x
from headforge.representations.splat_io import (
    load_splats_glb,
    load_splats_spz,
    save_splats_dot_splat,
    save_splats_glb,
    save_splats_ply,
    save_splats_spz,
)

REPO = Path(__file__).resolve().parents[1]
SPLAT_TRANSFORM = REPO / ".cache" / "clients" / "node_modules" / ".bin" / "splat-transform"
INSTALL = "tools/install_clients.sh"


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and a splat client cannot run: {reason}")
    pytest.skip(reason)


def require_splat_transform() -> None:
    if shutil.which("node") is None:
        _require("node is not installed (@playcanvas/splat-transform runs on node)")
    if not SPLAT_TRANSFORM.is_file():
        _require(f"@playcanvas/splat-transform is not installed in {SPLAT_TRANSFORM.parents[2]} (run {INSTALL})")


def require_gsply():
    try:
        import gsply
    except ImportError:
        _require("gsply is not installed (pip install -e '.[dev]')")
    return gsply


def splat_transform(*args: str | Path) -> None:
    done = subprocess.run([str(SPLAT_TRANSFORM), "-w", "-q", *map(str, args)], capture_output=True, text=True,
                          timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"splat-transform {args} failed ({done.returncode}): {done.stderr.strip()}")


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name: np.array([float(r[i]) for r in rows[1:]]) for i, name in enumerate(rows[0])}


def head_like(n: int = 60, degree: int = 3, seed: int = 0) -> Splats:
    """A column of splats from the chin (y = -0.1) to the crown (y = +0.12) leaning toward the face (+z)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n)
    means = torch.stack([0.02 * torch.sin(7 * t), -0.1 + 0.22 * t, 0.03 * t], -1)
    sh = (torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.25).clamp(-0.9, 0.9)
    return Splats(means, torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                  torch.rand(n, 3, generator=g) * 0.01 + 1e-3, torch.rand(n, generator=g) * 0.9 + 0.05, sh)


def match(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Index into ``theirs`` of the nearest row to each row of ``ours`` ([N, 3] each), one to one."""
    idx = np.linalg.norm(ours[:, None] - theirs[None], axis=-1).argmin(1)
    assert len(set(idx.tolist())) == len(ours), "positions do not match one to one"
    return idx


def covariance(quats_wxyz, scales) -> torch.Tensor:  # [N, 4], [N, 3] linear -> [N, 3, 3]
    from headforge.geometry.rotations import quat_to_rotmat

    q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(quats_wxyz), dtype=torch.float64), dim=-1)
    r = quat_to_rotmat(q) * torch.as_tensor(np.asarray(scales), dtype=torch.float64)[:, None, :]
    return r @ r.transpose(1, 2)


def covariance_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative Frobenius difference of two sets of covariances."""
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


# rotations may differ by a flip of the splat's own axes (R vs R diag(1, -1, -1): same ellipsoid), which is how
# splat-transform turns rotations (T R T, where we use T R); the covariances must agree within the spz bounds:
# scales within exp(1/32) (covariance 6.5 %) and rotation components within 0.0024
COVARIANCE_TOLERANCE = float(np.expm1(2 * spz_bounds().log_scale)) + 4 * spz_bounds().rotation


def quat_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.minimum(np.linalg.norm(a - b, axis=1), np.linalg.norm(a + b, axis=1))


def test_gsply_reads_our_ply_and_spz_with_the_same_values(tmp_path):
    gsply = require_gsply()
    s = head_like()
    stored = turn_about_x(s)  # what the PLY holds (the 3DGS frame)
    d = gsply.plyread(str(save_splats_ply(s, tmp_path / "s.ply")))
    np.testing.assert_array_equal(d.means, stored.means.numpy())
    np.testing.assert_array_equal(d.quats, stored.quats.numpy())
    np.testing.assert_allclose(d.scales, stored.scales.log().numpy(), atol=1e-6)
    np.testing.assert_allclose(d.opacities, torch.logit(stored.opacities.double()).numpy(), atol=1e-5)
    np.testing.assert_array_equal(d.sh0, stored.sh[:, 0].numpy())
    np.testing.assert_array_equal(d.shN, stored.sh[:, 1:].numpy())
    z = gsply.read_spz(str(save_splats_spz(s, tmp_path / "s.spz")))  # .spz holds the head frame
    ours = load_splats_spz(tmp_path / "s.spz")
    np.testing.assert_allclose(z.means, ours.means.numpy(), atol=1e-7)
    assert float(quat_distance(z.quats, ours.quats.numpy()).max()) < 1e-5
    np.testing.assert_allclose(np.exp(z.scales), ours.scales.numpy(), rtol=1e-5)
    np.testing.assert_allclose(z.sh0, ours.sh[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(z.shN, ours.sh[:, 1:].numpy(), atol=1e-6)
    gsply.write_spz(str(tmp_path / "theirs.spz"), z)  # and the other way: gsply writes, we read (v3, gzip)
    theirs = load_splats_spz(tmp_path / "theirs.spz")
    b = spz_bounds()
    torch.testing.assert_close(theirs.means, ours.means, atol=b.position * 1.01, rtol=0)
    torch.testing.assert_close(theirs.sh, ours.sh, atol=b.dc * 1.01, rtol=0)
    assert covariance_error(covariance(theirs.quats, theirs.scales), covariance(ours.quats, ours.scales)) < 1e-2


def test_splat_transform_reads_our_ply_splat_and_spz_alike(tmp_path):
    require_splat_transform()
    s = head_like()
    stored = turn_about_x(s)
    want = stored.means.numpy()
    for name, save in (("s.ply", save_splats_ply), ("s.splat", save_splats_dot_splat), ("s.spz", save_splats_spz)):
        save(s, tmp_path / name)
        splat_transform(tmp_path / name, tmp_path / f"{name}.csv")
    ply, dot, spz = (read_csv(tmp_path / f"{n}.csv") for n in ("s.ply", "s.splat", "s.spz"))
    xyz = lambda c: np.stack([c["x"], c["y"], c["z"]], 1)  # noqa: E731
    np.testing.assert_allclose(xyz(ply), want, atol=1e-7)
    np.testing.assert_allclose(xyz(dot)[match(want, xyz(dot))], want, atol=1e-7)
    b = spz_bounds()
    np.testing.assert_allclose(xyz(spz), want, atol=b.position * 1.01)
    # their spz reader turns RUB into their PLY space itself: covariances and SH must agree with our turn
    cov = {name: covariance(np.stack([c[f"rot_{i}"] for i in range(4)], 1),
                            np.exp(np.stack([c[f"scale_{i}"] for i in range(3)], 1))) for name, c in
           (("ply", ply), ("spz", spz))}
    assert covariance_error(cov["spz"], cov["ply"]) <= COVARIANCE_TOLERANCE
    assert covariance_error(cov["ply"], covariance(stored.quats, stored.scales)) < 1e-5
    assert covariance_error(cov["ply"], covariance(s.quats, s.scales)) > 0.1  # the turn matters (control)
    rest = np.stack([spz[f"f_rest_{i}"] - ply[f"f_rest_{i}"] for i in range(45)], 1)
    k = np.arange(45) % 15  # channel-major: coefficient index 1 + k
    assert np.abs(rest[:, k < 3]).max() <= b.sh1 * 1.01 and np.abs(rest[:, k >= 3]).max() <= b.sh_rest * 1.01
    dc = np.stack([spz[f"f_dc_{i}"] - ply[f"f_dc_{i}"] for i in range(3)], 1)
    assert np.abs(dc).max() <= b.dc * 1.01
    top = int(s.means[:, 1].argmax())  # the crown: +y in the head frame, -y in the 3DGS frame, in all three
    assert xyz(ply)[top, 1] < 0 and xyz(spz)[top, 1] < 0 and xyz(dot)[match(want, xyz(dot))][top, 1] < 0


def test_splat_transform_glb_is_upright_like_ours(tmp_path):
    require_splat_transform()
    s = head_like(degree=1)
    ours = load_splats_glb(save_splats_glb(s, tmp_path / "ours.glb"))
    top = int(s.means[:, 1].argmax())
    assert float(ours.means[top, 1]) > 0.1  # our GLB: glTF's +y up, the crown on top
    half_turn_y = torch.tensor([-1.0, 1.0, -1.0])
    for name, save in (("s.ply", save_splats_ply), ("s.spz", save_splats_spz), ("s.splat", save_splats_dot_splat)):
        save(s, tmp_path / name)
        splat_transform(tmp_path / name, tmp_path / f"{name}.glb")
        theirs = load_splats_glb(tmp_path / f"{name}.glb")
        idx = match((s.means * half_turn_y).numpy(), theirs.means.numpy())
        got = theirs.means[idx]
        assert float(got[top, 1]) > 0.1, f"{name}: splat-transform's GLB is upside down"
        torch.testing.assert_close(got, s.means * half_turn_y, atol=spz_bounds().position * 1.01, rtol=0)


def test_spz_written_by_splat_transform_reads_back(tmp_path):
    require_splat_transform()
    s = head_like()
    save_splats_ply(s, tmp_path / "s.ply")
    splat_transform("--spz-version", "3", tmp_path / "s.ply", tmp_path / "theirs.spz")
    back = load_splats_spz(tmp_path / "theirs.spz")
    b = spz_bounds(SpzOptions(version=SpzVersion.V3))
    torch.testing.assert_close(back.means, s.means, atol=b.position * 1.01, rtol=0)
    assert covariance_error(covariance(back.quats, back.scales), covariance(s.quats, s.scales)) <= COVARIANCE_TOLERANCE
    torch.testing.assert_close(back.sh[:, 0], s.sh[:, 0], atol=b.dc * 1.01, rtol=0)
    torch.testing.assert_close(back.sh[:, 1:4], s.sh[:, 1:4], atol=b.sh1 * 1.01, rtol=0)
    torch.testing.assert_close(back.opacities, s.opacities, atol=b.opacity * 1.01, rtol=0)
    splat_transform(tmp_path / "s.ply", tmp_path / "v4.spz")  # its default, version 4 (ZSTD): refused clearly
    with pytest.raises(Exception, match="version 4 .*ZSTD") as info:
        load_splats_spz(tmp_path / "v4.spz")
    assert "--spz-version 3" in str(info.value)
