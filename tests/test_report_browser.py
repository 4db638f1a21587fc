"""The report page in headless Chromium (playwright-core from .cache/clients, the machine's /usr/bin/chromium, WebGL
through SwiftShader), on the real rigged head GLB (stages/rig_export.build_rigged_glb of the small export head with
the built-in ``talk`` clip): the viewer gets ready with no console error, moving the page's own ``jawOpen`` slider
changes the picture where the mouth is (the vertices the target moves, read from the GLB and projected with the
page's camera), the clip button plays the clip, reset puts the weights back. The CDN page is checked too (on a
small test head), its three.js requests answered from the installed npm package so that the import map and its
sha384 integrity are really exercised.

Skips with the reason when node, chromium, playwright-core or the three.js bundle are missing, except under
CI=true, where it fails (the pattern of tests/gltf_validator.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from browser_support import CHROMIUM, CLIENTS, PLAYWRIGHT, REPO
from browser_support import require_browser as require_chromium
from export_fixtures import small_export_head
from PIL import Image
from report_fixtures import head_glb, make_run, target_points

from headforge.pipeline import report_job
from headforge.pipeline.report_job import write_report
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.clips import read_clip
from headforge.stages.rig_export import build_rigged_glb
from headforge.stages.rig_export_parts import HEAD_MESH
from headforge.viz.report_html import CDN_BASE, CDN_INTEGRITY

THREE = CLIENTS / "node_modules" / "three"
BUNDLE = CLIENTS / "viewer" / "three_bundle.js"
SCRIPT = REPO / "tests" / "browser" / "report_check.mjs"
TARGET = "jawOpen"
CHANGED = 12  # a pixel changed when a channel moved by more than this (of 255): beyond rasterisation noise
MARGIN = 6  # px around the projected moving vertices (triangles beside them stretch a little)


def require_browser() -> None:
    require_chromium("the report", extra=((THREE / "package.json", "three"), (BUNDLE, "the three.js bundle")))


def run_page(html: Path, out: Path, *, node: str, points: np.ndarray, clip: str | None,
             cdn_dir: Path | None = None) -> dict:
    """Open ``html`` with report_check.mjs; ``cdn_dir`` answers the page's CDN requests (else they fail)."""
    out.mkdir()
    config = {"playwright": str(PLAYWRIGHT), "chromium": str(CHROMIUM), "html": str(html), "out": str(out),
              "target": TARGET, "node": node, "points": points.tolist(), "clip": clip,
              "cdnRoot": {"prefix": CDN_BASE, "dir": str(cdn_dir)} if cdn_dir else None}
    (out / "config.json").write_text(json.dumps(config))
    done = subprocess.run(["node", str(SCRIPT), str(out / "config.json")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"report_check.mjs failed:\n{done.stdout}\n{done.stderr}"
    return json.loads((out / "result.json").read_text())


def errors_of(result: dict) -> list[str]:
    return result["pageErrors"] + [m["text"] for m in result["console"] if m["type"] == "error"]


def changed_mask(a: Path, b: Path) -> np.ndarray:
    x = np.asarray(Image.open(a).convert("RGB"), np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), np.int16)
    assert x.shape == y.shape
    return np.abs(x - y).max(axis=2) > CHANGED  # [H, W]


@pytest.fixture(scope="module")
def rigged_run(tmp_path_factory):
    """A run folder holding the rigged head GLB and the mesh-local points its jawOpen target moves."""
    require_browser()
    glb = build_rigged_glb(small_export_head(), [read_clip("builtin:talk")])
    rest, moved = target_points(glb, TARGET, HEAD_MESH)
    return make_run(tmp_path_factory.mktemp("report") / "run", glb=glb), np.concatenate([rest, moved])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The same with the small test head of report_fixtures (node ``head``)."""
    require_browser()
    glb = head_glb()
    rest, moved = target_points(glb, TARGET, "head")
    return make_run(tmp_path_factory.mktemp("report") / "run", glb=glb), np.concatenate([rest, moved])


def test_slider_moves_the_mouth_and_nothing_else(rigged_run, tmp_path, monkeypatch):
    run, points = rigged_run
    monkeypatch.delenv(report_job.VIEWER_JS_ENV, raising=False)
    html = tmp_path / "report.html"
    written = write_report(run, html, viewer_js=BUNDLE)
    assert written.viewer.origin == str(BUNDLE)
    result = run_page(html, tmp_path / "out", node=HEAD_MESH, points=points, clip="talk")
    assert result["state"] == "ready", result
    assert errors_of(result) == [] and result["failedRequests"] == []
    assert result["revision"] == "187" and "inlined from" in result["sourceLine"]
    assert result["targetNames"] == list(ARKIT_NAMES) and result["clipNames"] == ["talk"]
    assert result["sliderCount"] == 1 and result["weightAfter"] == 1 and result["influenceAfter"] == 1
    # the picture changed, and where the moving vertices project
    changed = changed_mask(tmp_path / "out" / "before.png", tmp_path / "out" / "after.png")
    height, width = changed.shape
    xy = np.asarray(result["projected"])[:, :2]
    lo, hi = np.floor(xy.min(0)) - MARGIN, np.ceil(xy.max(0)) + MARGIN
    assert 0 <= lo[0] and hi[0] <= width and 0 <= lo[1] and hi[1] <= height, "the mouth must be in view"
    assert (hi - lo).prod() < 0.1 * width * height, "the mouth region must be a small part of the view"
    rows, cols = np.nonzero(changed)
    inside = (cols >= lo[0]) & (cols <= hi[0]) & (rows >= lo[1]) & (rows <= hi[1])
    assert len(rows) > 200, f"only {len(rows)} pixels changed"
    assert inside.mean() > 0.97, f"{(~inside).sum()} of {len(rows)} changed pixels lie outside the mouth region"
    # the clip button plays the clip (weights change over time), stop gives the slider its weight back
    assert result["clipPressed"] == "true" and np.ptp(result["clipInfluences"]) > 0.1
    assert result["influenceAfterStop"] == 1
    # reset: weights back to the GLB's defaults and the picture back to the first one
    assert result["weightAfterReset"] == 0
    assert not changed_mask(tmp_path / "out" / "before.png", tmp_path / "out" / "reset.png").any()
    # every picture decodes in the browser at its size
    expected = [(name, *Image.open(run / name).size) for name in written.pictures]
    assert [(im["alt"], im.get("width"), im.get("height")) for im in result["images"]] == expected


def test_cdn_page_loads_pinned_modules(small_run, tmp_path, monkeypatch):
    run, points = small_run
    monkeypatch.delenv(report_job.VIEWER_JS_ENV, raising=False)
    monkeypatch.setattr(report_job, "REPO_BUNDLE", tmp_path / "no_bundle.js")
    html = tmp_path / "report.html"
    assert write_report(run, html).viewer.origin == CDN_BASE
    result = run_page(html, tmp_path / "out", points=points, clip=None, cdn_dir=THREE, node="head")
    assert result["state"] == "ready" and errors_of(result) == [], result
    assert result["revision"] == "187" and CDN_BASE in result["sourceLine"]
    assert {u[len(CDN_BASE):] for u in result["routed"]} >= {"build/three.module.js", "build/three.core.js",
                                                               "examples/jsm/loaders/GLTFLoader.js"}
    assert changed_mask(tmp_path / "out" / "before.png", tmp_path / "out" / "after.png").sum() > 200
    # a module that is not the pinned file is refused by its integrity hash: the page says so
    tampered = tmp_path / "three"
    for path in CDN_INTEGRITY:
        (tampered / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(THREE / path, tampered / path)
    core = tampered / "build" / "three.core.js"
    core.write_text(core.read_text() + "\n// changed\n")
    result = run_page(html, tmp_path / "tampered", points=points, clip=None, cdn_dir=tampered, node="head")
    assert result["state"].startswith(f"error:three.js could not be loaded from {CDN_BASE}"), result["state"]
    assert any("integrity" in e.lower() or "digest" in e.lower() for e in errors_of(result)), errors_of(result)
