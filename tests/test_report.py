"""The report page without a browser: structure, every picture embedded, the metrics tables, the line that says
where three.js comes from, how the GLB and the bundle are chosen, and the inputs refused."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import METRICS, head_glb, make_run

from headforge.errors import InputError
from headforge.pipeline import report_job
from headforge.pipeline.report_job import find_run_glb, resolve_viewer_js, write_report
from headforge.viz.report_html import (
    CDN_BASE,
    CDN_INTEGRITY,
    NO_VIEWER_LINE,
    ReportInputs,
    ViewerScript,
    ViewerSource,
    fill_template,
    format_value,
    report_html,
)

REPO = Path(__file__).resolve().parents[1]
THREE_PACKAGE = REPO / ".cache" / "clients" / "node_modules" / "three"
FAKE_BUNDLE = "var HeadforgeThree = (() => ({ REVISION: 'fake' }))();\n"


class Page(HTMLParser):
    """The parts of a page the tests look at: elements by id, images, scripts, table rows, comments."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, dict] = {}
        self.images: list[dict] = []
        self.scripts: list[tuple[dict, str]] = []
        self.comments: list[str] = []
        self.body: dict = {}
        self.rows: list[list[str]] = []
        self.text: dict[str, str] = {}
        self._script: dict | None = None
        self._open: list[str] = []  # ids of elements whose text is being collected
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = {"tag": tag, **a}
            self.text[a["id"]] = ""
            if tag not in ("img", "input", "canvas"):
                self._open.append(a["id"])
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self._script = a
            self.scripts.append((a, ""))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag in ("p", "pre", "div", "h1", "title") and self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        if self._cell is not None:
            self._cell.append(data)
        for key in self._open:
            self.text[key] += data

    def handle_comment(self, data):
        self.comments.append(data)


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run", glb=head_glb())


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "bundle.js"
    path.write_text(FAKE_BUNDLE)
    monkeypatch.setenv(report_job.VIEWER_JS_ENV, str(path))
    return path


@pytest.fixture
def no_bundle(tmp_path, monkeypatch):
    """Neither option, variable nor checkout bundle: the page must use the CDN."""
    monkeypatch.delenv(report_job.VIEWER_JS_ENV, raising=False)
    monkeypatch.setattr(report_job, "REPO_BUNDLE", tmp_path / "nowhere" / "three_bundle.js")


def test_page_embeds_pictures_glb_metrics_and_states_the_inlined_bundle(run, fake_bundle, tmp_path):
    out = tmp_path / "report.html"
    written = write_report(run, out)
    text = out.read_text()
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>") and page.body["data-viewer-state"] == "loading"
    # every top-level picture, known sheets first, the rest by name; renders/ is not top level
    names = [im["alt"] for im in page.images]
    assert names == ["contact_sheet.png", "turntable.gif", "expressions_sheet.png", "aaa_extra.png"]
    assert written.pictures == tuple(names)
    for im in page.images:
        mime, data = re.fullmatch(r"data:(image/\w+);base64,(.*)", im["src"]).groups()
        assert mime == ("image/gif" if im["alt"].endswith(".gif") else "image/png")
        assert base64.b64decode(data) == (run / im["alt"]).read_bytes()
    # the GLB: picked from RUN/**/*.glb (checkpoints/ skipped), embedded byte for byte
    assert written.glb == run / "export" / "head.glb" and "picked from 1 *.glb" in written.glb_note
    scripts = {a.get("id") or a.get("type") or f"#{i}": body for i, (a, body) in enumerate(page.scripts)}
    assert base64.b64decode(scripts["hf-glb"]) == (run / "export" / "head.glb").read_bytes()
    config = json.loads(scripts["hf-viewer-config"])
    assert config["glbBytes"] == (run / "export" / "head.glb").stat().st_size and config["source"] == "inline"
    # three.js: the bundle inlined as it is, our viewer after it, then the start call; no CDN
    bodies = [body for _, body in page.scripts]
    assert FAKE_BUNDLE.strip() in bodies[2] and "window.startHeadforgeViewer" in bodies[3]
    assert "startHeadforgeViewer(() => Promise.resolve(window.HeadforgeThree))" in bodies[4]
    assert CDN_BASE not in text and "importmap" not in text
    # the line that says so: visible, in the head comment, and printed
    line = page.text["hf-viewer-source"]
    assert f"three.js inlined from {fake_bundle}" in line and "offline" in line
    assert f"three.js inlined from {fake_bundle}" in page.comments[0]
    assert line in written.lines()
    # page elements the viewer needs
    for key in ("hf-canvas", "hf-sliders", "hf-clips", "hf-reset", "hf-stop", "hf-status", "metrics", "pictures"):
        assert key in page.ids
    assert not list(tmp_path.glob("report*.partial-*"))


def test_metrics_tables_show_every_value(run, fake_bundle, tmp_path):
    page = Page(report_html(report_job.collect_report(run)[0]))
    rows = {r[0]: r[1] for r in page.rows if len(r) == 2}
    assert rows["job"] == "avatar" and rows["num_gaussians"] == "40435" and rows["resolution"] == "[256, 256]"
    assert rows["seconds.train"] == format_value(984.57123) == "984.57"
    assert rows["trained_frames.psnr"] == "38.291" and rows["held_out_frames.psnr"] == "\u2014"
    assert rows["note"] == METRICS["note"]  # escaped in the HTML, the text as written; its {{slot}} left alone
    assert rows["history"] == "39 entries (in the raw JSON below)"
    start = page.rows.index(["view", "frame", "psnr", "held_out_frame"])
    per_view = page.rows[start:start + 6]
    assert [len(r) for r in per_view] == [4] * 6 and page.rows[start + 6][0] == "frame"  # 5 rows, then frames
    assert per_view[2] == ["1", "0", "30.333", "false"]
    # a small dict inside a record is spread over columns, a large one is one shortened cell
    frames = [r for r in page.rows if r and r[0] == "frame"]
    assert frames[0] == ["frame", "scores.a", "scores.b", "views"]
    cells = page.rows[page.rows.index(frames[0]) + 1]
    assert cells[:3] == ["0", "1", "0.5"] and cells[3].startswith('{"view 0": {"iou": 0.9}') and len(cells[3]) == 80
    assert json.loads(page.text["hf-metrics-json"]) == METRICS


def test_cdn_when_no_bundle_is_found(run, no_bundle, tmp_path):
    out = tmp_path / "report.html"
    written = write_report(run, out)
    assert written.viewer == ViewerScript.cdn()
    text = out.read_text()
    page = Page(text)
    line = page.text["hf-viewer-source"]
    assert f"three.js 0.187.0 (MIT) loaded from {CDN_BASE}" in line and "network" in line
    assert CDN_BASE in page.comments[0] and line in written.lines()
    imports = json.loads(next(body for a, body in page.scripts if a.get("type") == "importmap"))
    assert imports["imports"]["three"] == CDN_BASE + "build/three.module.js"
    assert imports["imports"]["three/addons/"] == CDN_BASE + "examples/jsm/"
    assert imports["integrity"] == {CDN_BASE + path: sri for path, sri in CDN_INTEGRITY.items()}
    assert "var HeadforgeThree" not in text


def test_cdn_integrity_hashes_match_the_installed_three():
    if not (THREE_PACKAGE / "package.json").is_file():
        reason = f"three is not installed in {THREE_PACKAGE.parent} (run tools/install_clients.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    assert json.loads((THREE_PACKAGE / "package.json").read_text())["version"] == "0.187.0"
    for path, sri in CDN_INTEGRITY.items():
        digest = base64.b64encode(hashlib.sha384((THREE_PACKAGE / path).read_bytes()).digest()).decode()
        assert sri == f"sha384-{digest}", path
    # every module the page imports, and every module those import, has a hash
    imported = set()
    for path in CDN_INTEGRITY:
        for spec in re.findall(r"from '(\.[^']+)'", (THREE_PACKAGE / path).read_text()):
            imported.add(posixpath.normpath(posixpath.join(posixpath.dirname(path), spec)))
    assert "build/three.core.js" in imported and imported <= set(CDN_INTEGRITY)


def test_viewer_js_order_option_then_variable_then_checkout(tmp_path, monkeypatch):
    a, b, c = (tmp_path / f"{n}.js" for n in "abc")
    for p in (a, b, c):
        p.write_text(FAKE_BUNDLE + f"// {p.name}\n")
    monkeypatch.setattr(report_job, "REPO_BUNDLE", c)
    monkeypatch.setenv(report_job.VIEWER_JS_ENV, str(b))
    assert resolve_viewer_js(a).origin == str(a)
    assert resolve_viewer_js(None).origin == str(b)
    monkeypatch.delenv(report_job.VIEWER_JS_ENV)
    found = resolve_viewer_js(None)
    assert found.origin == str(c) and found.source is ViewerSource.INLINE and found.code.endswith("// c.js\n")
    monkeypatch.setattr(report_job, "REPO_BUNDLE", tmp_path / "missing.js")
    assert resolve_viewer_js(None).source is ViewerSource.CDN


def test_glb_given_or_picked_shallowest(run, fake_bundle, tmp_path):
    (run / "zzz.glb").write_bytes(head_glb())
    assert [p.relative_to(run).as_posix() for p in find_run_glb(run)] == ["zzz.glb", "export/head.glb"]
    written = write_report(run, tmp_path / "a.html")
    assert written.glb == run / "zzz.glb" and "also there: export/head.glb" in written.glb_note
    written = write_report(run, tmp_path / "b.html", glb=run / "export" / "head.glb")
    assert written.glb == run / "export" / "head.glb" and "(given)" in written.glb_note


def test_run_without_glb_has_no_viewer_scripts(tmp_path, fake_bundle):
    run = make_run(tmp_path / "run")
    written = write_report(run, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text())
    assert written.glb is None and "pass --glb PATH" in written.glb_note
    assert page.body["data-viewer-state"] == "none" and page.scripts == [] and "hf-canvas" not in page.ids
    assert "3D view: none" in page.text["hf-viewer-source"] and "3D view: none" in page.comments[0]
    assert len(page.images) == 4


def test_main_job_folder_reads_run_json(tmp_path, fake_bundle):
    run = tmp_path / "sample"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"job": "run", "seconds": 12.5, "outputs": ["reconstruction/"]}))
    written = write_report(run, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    rows = {r[0]: r[1] for r in Page(text).rows if len(r) == 2}
    assert rows["job"] == "run" and rows["seconds"] == "12.5" and "<dt>metrics</dt><dd>run.json</dd>" in text
    assert written.pictures == () and NO_VIEWER_LINE in written.lines()


def test_template_slots_are_filled_once_and_checked():
    assert fill_template("a {{x}} b", {"x": "{{y}}"}) == "a {{y}} b"
    with pytest.raises(KeyError, match="no value"):
        fill_template("{{x}} {{z}}", {"x": ""})
    with pytest.raises(KeyError, match="no slot"):
        fill_template("{{x}}", {"x": "", "y": ""})


def test_bad_inputs_are_refused_with_a_fix(run, tmp_path, fake_bundle, monkeypatch):
    out = tmp_path / "report.html"
    cases = [
        (dict(run=tmp_path / "missing"), "run folder not found"),
        (dict(run=run / "metrics.json"), "run folder is not a folder"),
        (dict(run=run / "renders"), "not a headforge output folder"),
        (dict(glb=tmp_path / "nope.glb"), "GLB not found"),
        (dict(glb=run / "metrics.json"), "not a binary glTF|GLB"),
        (dict(out=tmp_path), "the output path is a directory"),
        (dict(viewer_js=tmp_path / "no.js"), "--viewer-js bundle not found"),
        (dict(viewer_js=run / "metrics.json"), "does not define the global HeadforgeThree"),
    ]
    for kwargs, message in cases:
        args = dict(run=run, out=out, glb=None, viewer_js=None) | kwargs
        with pytest.raises(InputError, match=message) as caught:
            write_report(**args)
        assert caught.value.fix, message
        assert not out.exists(), message
    avatar = tmp_path / "avatar"
    avatar.mkdir()
    (avatar / "avatar.json").write_text("{}")
    with pytest.raises(InputError, match="not a headforge output folder") as caught:
        write_report(avatar, out)
    assert "avatar run's folder" in caught.value.fix
    (tmp_path / "evil.js").write_text(FAKE_BUNDLE + "x = '</script>';\n")
    with pytest.raises(InputError, match="cannot be inlined"):
        write_report(run, out, viewer_js=tmp_path / "evil.js")
    monkeypatch.setenv(report_job.VIEWER_JS_ENV, str(tmp_path / "gone.js"))
    with pytest.raises(InputError, match=r"\$HEADFORGE_VIEWER_JS bundle not found"):
        write_report(run, out)
    monkeypatch.delenv(report_job.VIEWER_JS_ENV)
    out.write_text("old")
    with pytest.raises(InputError, match="already exists"):
        write_report(run, out)
    write_report(run, out, overwrite=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_report_inputs_reject_inline_without_code():
    with pytest.raises(ValueError):
        ViewerScript(ViewerSource.INLINE, "x.js")
    page = report_html(ReportInputs("t", {}, [], None, ViewerScript.cdn()))
    assert "This run wrote no metrics" in page and "wrote no pictures" in page


def test_text_cannot_break_out_of_the_page(tmp_path):
    title = "a --> <!-- </script> b"
    page = Page(report_html(ReportInputs(title, {"k</td>": "<script>x</script>"}, [], head_glb(),
                                         ViewerScript(ViewerSource.INLINE, "/odd--path/b.js", FAKE_BUNDLE))))
    assert page.comments[0].strip().startswith("a - -> < !- - </script> b: written by headforge")
    assert page.text["hf-viewer-source"].startswith("3D view: three.js inlined from /odd--path/b.js")
    assert [r for r in page.rows if r[0] == "k</td>"] == [["k</td>", "<script>x</script>"]]
    assert [a.get("id") for a, _ in page.scripts][:2] == ["hf-viewer-config", "hf-glb"] and len(page.scripts) == 5
