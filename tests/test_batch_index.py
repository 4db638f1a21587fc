"""The batch report page (headforge/batch/index_html.py) on a hand-built ``batch.json`` dict and a batch folder
with real files: rows, the failures section, escaping, relative links, thumbnails; then the page in headless
Chromium (tests/browser/batch_index_check.mjs): no console error, no request off the machine, the rows, sorting
by a header click both ways, the thumbnails decoding at their sizes.
"""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser_support import CHROMIUM, PLAYWRIGHT, REPO, require_browser
from PIL import Image

from headforge.batch.index_html import DASH, format_number, safe_href, write_index

SCRIPT = REPO / "tests" / "browser" / "batch_index_check.mjs"
EVIL = '<script>alert("owned")</script>'
THUMB_SIZES = {"a1/thumbs/input.png": (8, 6), "a1/thumbs/render.png": (5, 7), "g7/thumbs/render.png": (4, 4)}


def _item(item_id: str, job: str, state: str, seconds: float | None, *, attempt: int = 1, error: dict | None = None,
          metrics: dict | None = None, notes: list[str] | None = None, outputs: dict | None = None,
          input: str = "in.jpg", reused: bool = False) -> dict:
    folder = f"items/{item_id}"
    return {"id": item_id, "job": job, "input": input, "line": 1, "state": state, "seconds": seconds,
            "attempt": attempt, "resumed": False, "reused": reused, "error": error, "metrics": metrics or {},
            "notes": notes or [], "folder": folder,
            "outputs": {label: f"{folder}/{rel}" for label, rel in (outputs or {}).items()}}


def batch_data() -> dict:
    crash = {"kind": "crash", "class": "RuntimeError", "traceback": "traceback.txt",
             "message": "line one " + EVIL + "\nline two\nline three\nline four\nline five (only in the details)"}
    bad_input = {"kind": "input", "class": "InputError", "traceback": None,
                 "message": 'x"<y>.jpg: the input does not exist. Fix: correct line 5'}
    items = [
        _item("a1", "photo", "done", 3.5, metrics={"views_psnr": 23.456789, "num_gaussians": 12345, "kind": "png"},
              notes=["no report page: <b>bold</b>"],
              outputs={"input_thumb": "thumbs/input.png", "render_thumb": "thumbs/render.png",
                       "report": "output/report.html", "glb": "output/my head#1.glb", "output": "output"}),
        _item("b2", "reconstruct", "failed", 0.5, attempt=3, error=crash),
        _item("c3", "render-capture", "done", 10.0, reused=True,
              outputs={"render_thumb": "thumbs/render.png", "output": "output"}),  # thumb listed, file missing
        _item("e5", "photo", "failed", None, attempt=0, error=bad_input, input='x"<y>.jpg'),
        _item("f6", "avatar", "pending", None, attempt=0),
        _item("g7", "export", "done", 0.25, metrics={"kind": "glb", "seconds": 0.000123456},
              outputs={"render_thumb": "thumbs/render.png", "escape": "../../../etc/passwd", "output": "output"}),
    ]
    return {"format": "headforge-batch/1", "manifest": "/data/m.jsonl", "out": "/data/out",
            "executor": "local, 2 worker(s)", "started": "2026-11-30T11:26:40.088+00:00",
            "finished": "2026-11-30T11:26:45.213+00:00", "seconds": 15.25,
            "counts": {"items": 6, "done": 3, "failed": 3, "reused": 1, "run_here": 5}, "items": items}


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    """A batch folder: items/<id>/ with status.json for all but f6, log.txt and traceback.txt for b2, real PNGs."""
    out = tmp_path / "batch out"  # a space in the folder: file:// and relative links must cope
    data = batch_data()
    for item in data["items"]:
        if item["id"] != "f6":
            (out / item["folder"]).mkdir(parents=True)
            (out / item["folder"] / "status.json").write_text("{}")
        if item["state"] == "done":
            (out / item["folder"] / "output").mkdir()
    (out / "items/b2/log.txt").write_text("log")
    (out / "items/b2/traceback.txt").write_text("Traceback")
    (out / "items/e5/traceback.txt").write_text("Traceback")  # stale: e5's error names no traceback
    (out / "items/a1/output/report.html").write_text("<html></html>")
    (out / "items/a1/output/my head#1.glb").write_bytes(b"glTF")
    for rel, size in THUMB_SIZES.items():
        (out / "items" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 30, 30)).save(out / "items" / rel)
    (out / "batch.json").write_text(json.dumps(data))
    return out


class Page(HTMLParser):
    """What the tests read from the page: rows, failures, cells, links, images, scripts."""

    def __init__(self, text: str):
        super().__init__()
        self.rows: list[str] = []
        self.failures: list[str] = []
        self.cells: dict[str, list[str]] = {}  # row id -> cell texts
        self.links: list[tuple[str, str]] = []  # (href, where: a row id or failure id)
        self.images: list[tuple[str, str, str | None]] = []  # (src, row id, loading)
        self.scripts = 0
        self.headers: list[str] = []
        self._row: str | None = None
        self._failure: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        elif tag == "th":
            self.headers.append(a.get("data-key"))
        elif tag == "tr" and "data-id" in a:
            self._row = a["data-id"]
            self.rows.append(self._row)
            self.cells[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "article" and "failure" in a.get("class", ""):
            self._failure = a["data-id"]
            self.failures.append(self._failure)
        elif tag == "a":
            self.links.append((a["href"], self._row or self._failure or ""))
        elif tag == "img":
            self.images.append((a["src"], self._row, a.get("loading")))

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells[self._row].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "article":
            self._failure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def written(batch_dir: Path) -> tuple[str, Page]:
    path = write_index(batch_dir / "index.html", batch_data())
    assert path == batch_dir / "index.html"
    text = path.read_text()
    return text, Page(text)


def test_one_row_per_item_in_manifest_order(batch_dir):
    text, page = written(batch_dir)
    assert page.rows == [item["id"] for item in batch_data()["items"]]
    assert page.headers == ["id", "job", "state", "seconds", "attempts", "input_thumb", "render_thumb", "metrics",
                            "links", "notes"]
    assert all(len(cells) == len(page.headers) for cells in page.cells.values())
    a1 = page.cells["a1"]
    assert a1[:5] == ["a1", "photo", "done", "3.5", "1"]
    assert a1[7] == "views_psnr=23.5num_gaussians=12345kind=png"  # 3 significant digits, ints whole
    assert page.cells["c3"][2] == "done (reused)" and page.cells["b2"][2] == "failed (RuntimeError)"
    assert page.cells["g7"][7] == "kind=glbseconds=0.000123"
    assert 'data-metric="views_psnr" data-sort="23.456789"' in text  # sorting sees the full value
    assert page.cells["e5"][3] == DASH  # no seconds
    assert "3 failed" in " ".join(text.replace("<b>", "").replace("</b>", "").split())


def test_failures_first_with_their_files(batch_dir):
    text, page = written(batch_dir)
    assert page.failures == ["b2", "e5", "f6"]  # every item not done (counts.failed), in manifest order
    assert text.index('id="failures"') < text.index('id="items"')
    links = {where: [h for h, w in page.links if w == where] for where in page.failures}
    # only the files the item folder has
    assert links["b2"] == ["#item-b2", "items/b2/status.json", "items/b2/log.txt", "items/b2/traceback.txt"]
    assert links["e5"] == ["#item-e5", "items/e5/status.json"]
    assert links["f6"] == ["#item-f6"]
    b2 = text[text.index('data-id="b2"'):text.index('data-id="e5"')]
    assert "RuntimeError" in b2 and "crash" in b2 and "<details>" in b2
    first_lines = b2[b2.index('class="message"'):b2.index("<details>")]
    assert "line three" in first_lines and "line four" not in first_lines
    assert "line five (only in the details)" in b2[b2.index("<details>"):]
    e5 = text[text.index('data-id="e5"'):text.index('data-id="f6"')]
    assert "<details>" not in e5  # a one-line message is shown whole
    assert "no error recorded" in text[text.index('data-id="f6"'):]


def test_everything_from_the_data_is_escaped(batch_dir):
    text, page = written(batch_dir)
    assert page.scripts == 1 and text.lower().count("<script") == 1  # the page's own sorting script only
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in text
    assert "x&quot;&lt;y&gt;.jpg" in text and 'x"<y>' not in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "<b>bold</b>" not in text
    assert page.cells["a1"][9] == "no report page: <b>bold</b>"  # the text reads as written


def test_links_are_relative_quoted_and_inside_the_batch(batch_dir):
    text, page = written(batch_dir)
    assert "://" not in text  # nothing from the network
    hrefs = [h for h, _ in page.links if not h.startswith("#")] + [src for src, _, _ in page.images]
    assert hrefs and all(not h.startswith("/") and ".." not in h for h in hrefs)
    from urllib.parse import unquote

    for href in hrefs:
        assert (batch_dir / unquote(href)).exists(), href
    assert ("items/a1/output/my%20head%231.glb", "a1") in page.links
    assert [h for h, w in page.links if w == "a1"] == [
        "items/a1/thumbs/input.png", "items/a1/thumbs/render.png", "items/a1/output/report.html",
        "items/a1/output/my%20head%231.glb", "items/a1/output"]
    g7 = [h for h, w in page.links if w == "g7"]
    assert "../../../etc/passwd" not in " ".join(g7) and "etc/passwd" in page.cells["g7"][8]  # shown, not linked
    assert safe_href("../x") is None and safe_href("/etc/passwd") is None and safe_href("a/b c") == "a/b%20c"
    assert ("batch.json", "") in page.links


def test_missing_thumbnails_are_a_dash(batch_dir):
    _, page = written(batch_dir)
    assert [(src, row) for src, row, _ in page.images] == [
        ("items/a1/thumbs/input.png", "a1"), ("items/a1/thumbs/render.png", "a1"), ("items/g7/thumbs/render.png", "g7")]
    assert all(loading == "lazy" for _, _, loading in page.images)
    assert page.cells["c3"][5:7] == [DASH, DASH]  # render_thumb listed but not on disk: no broken image
    assert page.cells["b2"][5:7] == [DASH, DASH]
    assert page.cells["g7"][5] == DASH and page.cells["g7"][6] == ""  # the image's cell has no text


def test_empty_batch(tmp_path):
    data = {**batch_data(), "items": [], "counts": {"items": 0, "done": 0, "failed": 0, "reused": 0, "run_here": 0}}
    page = Page(write_index(tmp_path / "index.html", data).read_text())
    assert page.rows == [] and page.failures == [] and "No failures." in (tmp_path / "index.html").read_text()


def test_format_number():
    assert [format_number(v) for v in (None, 23.456789, 0.000123456, 12345, 12345.6, True, "x")] == [
        DASH, "23.5", "0.000123", "12345", "1.23e+04", "true", "x"]


# ------------------------------------------------------------------------------------------------------ browser


def test_page_in_chromium(batch_dir, tmp_path):
    require_browser("the batch index page")
    html = write_index(batch_dir / "index.html", batch_data())
    out = tmp_path / "chromium"
    out.mkdir()
    config = {"playwright": str(PLAYWRIGHT), "chromium": str(CHROMIUM), "html": str(html), "out": str(out),
              "sortKey": "seconds"}
    (out / "config.json").write_text(json.dumps(config))
    done = subprocess.run(["node", str(SCRIPT), str(out / "config.json")], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"batch_index_check.mjs failed:\n{done.stdout}\n{done.stderr}"
    result = json.loads((out / "result.json").read_text())
    errors = result["pageErrors"] + [m["text"] for m in result["console"] if m["type"] in ("error", "warning")]
    assert errors == [] and result["failedRequests"] == [] and result["externalRequests"] == [], result
    ids = [item["id"] for item in batch_data()["items"]]
    assert result["rows"] == ids
    assert result["failures"] == ["b2", "e5", "f6"]
    assert result["ariaSortBefore"] == []
    # by seconds, numerically (10.0 after 3.5 and 0.25 before 0.5, unlike a text or natural sort), items without
    # seconds last, in manifest order, both ways
    assert result["rowsAfterOne"] == ["g7", "b2", "a1", "c3", "e5", "f6"]
    assert result["ariaSortAfterOne"] == [["seconds", "ascending"]]
    assert result["rowsAfterTwo"] == ["c3", "a1", "b2", "g7", "e5", "f6"]
    assert result["ariaSortAfterTwo"] == [["seconds", "descending"]]
    expected = [{"src": f"items/{rel}", "row": rel.split("/")[0], "width": w, "height": h}
                for rel, (w, h) in THUMB_SIZES.items()]
    assert result["images"] == expected


def test_browser_missing_skips_or_fails_under_ci(monkeypatch, tmp_path):
    import browser_support

    monkeypatch.setattr(browser_support, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium is missing"):
        require_browser("the batch index page")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the batch index page cannot be checked"):
        require_browser("the batch index page")
