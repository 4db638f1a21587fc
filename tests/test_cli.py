"""The command line: the main job end to end, inspect, and clear errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from headforge.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "headforge.cli", *args], capture_output=True, text=True,
                          timeout=600)


def test_main_job_on_the_sample_head(tmp_path, sample_head, capsys):
    out = tmp_path / "job"
    assert main(["run", "--out", str(out), "--resolution", "48", "--steps", "60", "--rig", "sphere"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["input"] == "built-in sample head" and record["capture"]["num_views"] == 32
    assert record["capture"]["source_path"] == str(out / "capture" / "transforms.json")  # not the staging dir
    recon = out / "reconstruction"
    metrics = json.loads((recon / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["num_test_views"] == 4 and metrics["psnr"] > 15
    assert metrics["capture"] == str(out / "capture")
    assert record["reconstruction"]["psnr"] == metrics["psnr"]
    # the held-out views go round the head and one of them sees the face
    azimuths = sorted(v["azimuth_deg"] % 360 for v in metrics["test_views"])
    assert min(min(a, 360 - a) for a in azimuths) < 45, azimuths
    assert max(b - a for a, b in zip(azimuths, azimuths[1:] + [azimuths[0] + 360], strict=True)) < 150
    assert f"{metrics['num_gaussians']} Gaussians" in printed and f"{metrics['psnr']:.2f} dB" in printed
    for name in ("capture/transforms.json", "capture_sheet.png", "cameras.png", "reconstruction/splats.ply",
                 "reconstruction/contact_sheet.png", "reconstruction/turntable.gif"):
        assert (out / name).is_file(), name
    assert [p.name for p in tmp_path.iterdir()] == ["job"]  # nothing staged is left beside it
    # a second run refuses to overwrite without --overwrite
    assert main(["run", "--out", str(out), "--resolution", "48", "--steps", "10"]) == 2


TINY_PRESET = "resolution = 32\n[train]\nsteps = 15\ninit_points = 500\n"


def test_reconstruct_reports_typed_results(tiny_capture_dir, tmp_path, capsys):
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY_PRESET)
    out = tmp_path / "run"
    args = ["reconstruct", str(tiny_capture_dir), "--preset", str(preset), "--device", "cpu"]
    assert main([*args, "--out", str(out), "--test-every", "5"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and f"{metrics['num_gaussians']} Gaussians" in printed
    for v in metrics["test_views"]:
        assert f"{v['view']} ({v['azimuth_deg']:.0f} deg)" in printed
    assert main([*args, "--out", str(tmp_path / "all"), "--test-every", "0"]) == 0
    assert "not scored (no held-out views)" in capsys.readouterr().out
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["psnr"] is None


@pytest.mark.parametrize("args", [["reconstruct", "x", "--out", "y", "--device", "tpu"],
                                  ["reconstruct", "x", "--out", "y", "--method", "GAUSSIANS"],
                                  ["run", "--rig", "cube"],
                                  ["render-capture", "x", "--out", "y", "--test-every", "4"]])
def test_closed_sets_take_their_values_only(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert args[-1] in capsys.readouterr().err


def test_inspect_json(tiny_capture_dir, tmp_path, capsys):
    plot = tmp_path / "frusta.png"
    assert main(["inspect", str(tiny_capture_dir), "--json", "--plot", str(plot), "--test-every", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_views"] == 20 and summary["width"] == 64 and summary["height"] == 64
    assert summary["format"] == "nerfstudio" and summary["num_test"] == 4 and summary["num_train"] == 16
    assert plot.stat().st_size > 10_000


def test_inspect_text(tiny_capture_dir, tmp_path, capsys):
    assert main(["inspect", str(tiny_capture_dir / "opencv_cameras.json"), "--plot", str(tmp_path / "p.png"),
                 "--test-every", "4"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["Format"].split()[1] == "opencv_json" and lines["Format"].endswith("opencv_cameras.json")
    assert lines["Views"].startswith("Views       20 (15 train, 5 test)")


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
