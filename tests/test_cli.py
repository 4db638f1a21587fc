"""The command line: the main job end to end, inspect, and clear errors with exit status 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from headforge.captures.formats import read_capture
from headforge.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headforge.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_main_job_on_the_sample_head(tmp_path, sample_head):
    out = tmp_path / "job"
    assert main(["run", "--out", str(out), "--resolution", "48", "--steps", "60", "--rig", "sphere"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["input"] == "built-in sample head" and record["capture"]["num_views"] == 32
    recon = out / "reconstruction"
    metrics = json.loads((recon / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["num_test_views"] == 4 and metrics["psnr"] > 15
    for name in ("capture/transforms.json", "capture_sheet.png", "cameras.png", "reconstruction/splats.ply",
                 "reconstruction/contact_sheet.png", "reconstruction/turntable.gif"):
        assert (out / name).is_file(), name
    # a second run refuses to overwrite without --overwrite
    assert main(["run", "--out", str(out), "--resolution", "48", "--steps", "10"]) == 2


def test_inspect_json(tiny_capture_dir, tmp_path, capsys):
    plot = tmp_path / "frusta.png"
    assert main(["inspect", str(tiny_capture_dir), "--json", "--plot", str(plot), "--test-every", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_views"] == 20 and summary["width"] == 64 and summary["height"] == 64
    assert summary["format"] == "nerfstudio" and summary["num_test"] == 4 and summary["num_train"] == 16
    assert plot.stat().st_size > 10_000


def test_inspect_text(tiny_capture_dir, tmp_path, capsys):
    assert main(["inspect", str(tiny_capture_dir / "opencv_cameras.json"), "--plot", str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    counts = re.search(r"(\d+) \((\d+) train, (\d+) test\)", text)  # the capture's own views and split
    capture = read_capture(tiny_capture_dir / "opencv_cameras.json")
    assert counts and tuple(map(int, counts.groups())) == (20, len(capture.split.train), len(capture.split.test))
    assert "opencv" in text.lower() and "64 x 64 px" in text


@pytest.mark.parametrize("args,message", [
    (["inspect", "{missing}"], "does not exist"),
    (["render-capture", "{corrupt}", "--out", "{out}"], "corrupt.obj"),
    (["reconstruct", "{missing}", "--out", "{out}"], "does not exist"),
    (["render-capture", "{corrupt}", "--out", "{out}", "--units", "cm", "--head-width", "0.2"], "not both"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, args, message):
    corrupt = tmp_path / "corrupt.obj"
    corrupt.write_text("v 0 0 0\nthis is not an obj\n")
    paths = {"missing": str(tmp_path / "nope"), "corrupt": str(corrupt), "out": str(tmp_path / "out")}
    result = run_cli(*(a.format(**paths) for a in args))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("headforge: error:") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "a failed command must not leave an output directory"


def test_nan_camera_is_rejected_by_name(tiny_capture_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_capture_dir, bad)
    meta = json.loads((bad / "transforms.json").read_text())
    meta["frames"][3]["transform_matrix"][0][3] = float("nan")
    (bad / "transforms.json").write_text(json.dumps(meta))
    result = run_cli("reconstruct", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "non-finite" in result.stderr and "transforms.json" in result.stderr
