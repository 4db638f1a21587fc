"""One self-contained HTML page of a run: its metrics, its pictures and an interactive 3D view of a GLB.

Everything the page shows travels inside it: pictures as data URIs, the GLB as base64 (decoded by the
page with ``fetch`` of a data URI, fast for ~10 MB), our viewer code (``assets/report/viewer.js``) and
three.js, either inlined (the IIFE bundle ``tools/install_clients.sh`` builds, global ``HeadforgeThree``)
or, when no bundle was found, imported from a pinned jsDelivr URL of three@0.187.0 whose files are
checked by Subresource Integrity hashes (``CDN_INTEGRITY``, sha384 of the npm package's files). The page
says which, and from where, in its head comment and in a visible line under the 3D view.

The page skeleton is ``assets/report/report.html`` with ``{{name}}`` slots filled in one pass (text put
into a slot is never scanned again, so a ``{{`` inside the metrics or the bundle stays as it is).
"""

from __future__ import annotations

import base64
import enum
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources

from headforge import __version__

THREE_VERSION = "0.187.0"
CDN_BASE = f"https://cdn.jsdelivr.net/npm/three@{THREE_VERSION}/"
# sha384 of the files of the npm package three@0.187.0 the CDN page imports (jsDelivr serves npm files as
# published); tests/test_report.py checks them against the package tools/install_clients.sh installs.
CDN_INTEGRITY = {
    "build/three.module.js": "sha384-T/E3B9AvPtLn5PKD7aTSFqizQcA4kHDfU0lub7u0fvM4w9BMGcSb3yI7r5LqMAMn",
    "build/three.core.js": "sha384-drH6BueSlcvoXCwAqWkNJvXwu2Ax3mnGOmZnIXaomedIw+uXSP9Bf/XIUINgLUW+",
    "examples/jsm/loaders/GLTFLoader.js": "sha384-WH6tljjFikpYMGa2JMqlbJlM1lEMkd/Y6Sqnuog1rX87eShphltUQI5NKByEo4CP",
    "examples/jsm/controls/OrbitControls.js":
        "sha384-ZVBN/wmVxgX0mUGjFJXakzzdZrAF4g4aHfKyusbjoF0WsVXSoGpeM/qRaVnXtaFo",
    "examples/jsm/utils/BufferGeometryUtils.js":
        "sha384-NArny884Zj3HwjLRjeY1kbfLZnAHIElzho3N71FW0eMGxxBT+QuLEiSnSgpSaBXh",
    "examples/jsm/utils/SkeletonUtils.js": "sha384-Pozn8j5+YFr3ak8Pm90ayqDrGYn/DV7vVs/YIIqzJhzeJT0LQksoS1fZQ5lfsYlw",
}
BUNDLE_GLOBAL = "HeadforgeThree"
MAX_TABLE_ROWS = 100  # rows of one list-of-records table; the rest is in the raw JSON
MAX_INLINE_LIST = 16  # scalar lists up to this length are shown in the summary table
MAX_CELL_CHARS = 80
MAX_RECORD_KEYS = 8  # a dict inside a record with more keys is one (shortened) cell, not that many columns
NO_VIEWER_LINE = "3D view: none (no GLB given or found for this run), so no three.js is loaded"


class ViewerSource(enum.StrEnum):
    """Where the page gets three.js from."""

    INLINE = "inline"  # the bundle's text is inside the page: works offline
    CDN = "cdn"  # imported from CDN_BASE when the page opens: needs the network


class ImageMime(enum.StrEnum):
    PNG = "image/png"
    GIF = "image/gif"


@dataclass(frozen=True)
class ViewerScript:
    """three.js for the page: the bundle's code (``INLINE``, ``origin`` = where it was read) or the CDN."""

    source: ViewerSource
    origin: str  # the bundle's path, or CDN_BASE
    code: str = field(default="", repr=False)  # the bundle (INLINE only)

    def __post_init__(self):
        if (self.source is ViewerSource.INLINE) != bool(self.code):
            raise ValueError("an inline viewer script needs the bundle's code, a CDN one none")
        if self.source is ViewerSource.INLINE:
            _check_inlinable(self.code, self.origin)

    @classmethod
    def cdn(cls) -> ViewerScript:
        return cls(ViewerSource.CDN, CDN_BASE)

    def describe(self) -> str:
        """The line the page shows and the command prints."""
        if self.source is ViewerSource.INLINE:
            return (f"3D view: three.js inlined from {self.origin} (the bundle tools/install_clients.sh builds from "
                    f"three@{THREE_VERSION}, MIT); the page works offline")
        return (f"3D view: three.js {THREE_VERSION} (MIT) loaded from {CDN_BASE} when the page opens (needs the "
                "network; files pinned by sha384 integrity); run tools/install_clients.sh to inline it instead")


@dataclass(frozen=True)
class ReportImage:
    name: str  # file name shown as the caption
    data: bytes = field(repr=False)
    mime: ImageMime
    width: int
    height: int


@dataclass(frozen=True)
class ReportInputs:
    title: str
    metrics: dict
    images: list[ReportImage]
    glb: bytes | None = field(repr=False)
    viewer_js: ViewerScript
    glb_name: str = "model.glb"  # shown in the page; which file the GLB came from
    about: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (label, text) lines under the title


class InlineError(ValueError):
    """Text that cannot sit inside a <script> element as it is."""


def _check_inlinable(code: str, origin: str) -> None:
    # "</script" ends the element early and "<!--" can switch the HTML parser into a double-escaped state:
    # refuse rather than rewrite someone's JavaScript.
    found = re.search(r"</script|<!--", code, re.IGNORECASE)
    if found:
        raise InlineError(f"{origin} contains {found.group(0)!r} at character {found.start()}; it cannot be "
                          "inlined in a <script> element")


def _comment_text(text: str) -> str:
    """Text that cannot end or nest an HTML comment (no "--", so no "-->" either)."""
    while "--" in text:
        text = text.replace("--", "- -")
    return text.replace("<!", "< !")


def _json_for_script(value) -> str:
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\u0021--")


# ------------------------------------------------------------------------------------------------ metrics
def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def format_value(value, digits: int = 5) -> str:
    """A metric as the page shows it: floats to ``digits`` significant digits, null as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list | dict):
        text = json.dumps(value, separators=(", ", ": "))
        return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "\u2026"
    return str(value)


def _flat_record(record: dict, prefix: str = "", max_keys: int | None = None) -> dict[str, object]:
    """Nested dicts -> dotted keys (those with more than ``max_keys`` keys stay one value); lists stay values."""
    out: dict[str, object] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and (max_keys is None or len(value) <= max_keys):
            out.update(_flat_record(value, name + ".", max_keys))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class MetricsLayout:
    """How a metrics dict is shown: one table of scalar leaves (dotted paths), one table per list of
    records (dicts), and the lists too long or too nested for a table (counted, in the raw JSON)."""

    summary: list[tuple[str, object]]
    tables: list[tuple[str, list[dict]]]
    long_lists: list[tuple[str, int]]


def layout_metrics(metrics: dict) -> MetricsLayout:
    summary, tables, long_lists = [], [], []
    for path, value in _flat_record(metrics).items():
        if not isinstance(value, list):
            summary.append((path, value))
        elif value and all(isinstance(v, dict) for v in value):
            tables.append((path, value))
        elif all(_is_scalar(v) for v in value) and len(value) <= MAX_INLINE_LIST:
            summary.append((path, value))
        else:
            long_lists.append((path, len(value)))
    return MetricsLayout(summary, tables, long_lists)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _records_table(path: str, records: list[dict]) -> str:
    flat = [_flat_record(r, max_keys=MAX_RECORD_KEYS) for r in records]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    rows = []
    for r in flat[:MAX_TABLE_ROWS]:
        cells = "".join(f"<td>{_esc(format_value(r[c])) if c in r else ''}</td>" for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    more = len(records) - MAX_TABLE_ROWS
    note = f'<p class="note">{more} more rows in the raw JSON below.</p>' if more > 0 else ""
    return (f'<h3>{_esc(path)} <span class="count">({len(records)} rows)</span></h3>'
            f'<div class="scroll"><table class="records" data-path="{_esc(path)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{note}')


def metrics_html(metrics: dict) -> str:
    if not metrics:
        return '<p class="note">This run wrote no metrics.</p>'
    lay = layout_metrics(metrics)
    rows = [f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(format_value(v))}</td></tr>' for k, v in lay.summary]
    rows += [f'<tr><th scope="row">{_esc(k)}</th><td class="note">{n} entries (in the raw JSON below)</td></tr>'
             for k, n in lay.long_lists]
    parts = [f'<table class="metrics" id="hf-metrics"><tbody>{"".join(rows)}</tbody></table>']
    parts += [_records_table(path, records) for path, records in lay.tables]
    raw = _esc(json.dumps(metrics, indent=1))
    parts.append(f'<details><summary>Raw metrics JSON</summary><pre id="hf-metrics-json">{raw}</pre></details>')
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ pictures
def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def pictures_html(images: list[ReportImage]) -> str:
    if not images:
        return '<p class="note">This run wrote no pictures (PNG or GIF) at its top level.</p>'
    figures = [f'<figure id="pic-{i}"><a href="#pic-{i}"><img src="{data_uri(im.data, im.mime.value)}" '
               f'alt="{_esc(im.name)}" width="{im.width}" height="{im.height}" decoding="async"></a>'
               f'<figcaption>{_esc(im.name)} <span class="count">{im.width}\u00d7{im.height}</span></figcaption>'
               '</figure>' for i, im in enumerate(images)]
    return "\n".join(figures)


# ------------------------------------------------------------------------------------------------ 3D view
VIEWER_MARKUP = """<div class="viewer">
  <div class="stage"><canvas id="hf-canvas" tabindex="0" aria-label="3D view of {glb}"></canvas>
    <div id="hf-status">loading {glb} ({mb:.1f} MB)\u2026</div></div>
  <aside class="controls">
    <div class="buttons"><button type="button" id="hf-reset">Reset</button>
      <button type="button" id="hf-stop" disabled>Stop clip</button></div>
    <h3>Clips</h3><div id="hf-clips" class="buttons"></div>
    <h3>Morph targets <span class="count" id="hf-target-count"></span></h3>
    <input type="search" id="hf-filter" placeholder="filter by name" aria-label="filter morph targets">
    <div id="hf-sliders"></div>
  </aside>
</div>"""

_CDN_LOADER = ("startHeadforgeViewer(() => Promise.all([import(\"three\"), "
               "import(\"three/addons/loaders/GLTFLoader.js\"), import(\"three/addons/controls/OrbitControls.js\")])"
               ".then(([three, gltf, orbit]) => ({...three, GLTFLoader: gltf.GLTFLoader, "
               "OrbitControls: orbit.OrbitControls}), (e) => { throw new Error("
               f"\"three.js could not be loaded from {CDN_BASE} (no network, or a file that does not match its "
               "pinned sha384): \" + e.message); }));")
_INLINE_LOADER = f"startHeadforgeViewer(() => Promise.resolve(window.{BUNDLE_GLOBAL}));"


def import_map() -> dict:
    return {"imports": {"three": CDN_BASE + "build/three.module.js", "three/addons/": CDN_BASE + "examples/jsm/"},
            "integrity": {CDN_BASE + path: sri for path, sri in CDN_INTEGRITY.items()}}


def _asset(name: str) -> str:
    return (resources.files("headforge.assets") / "report" / name).read_text(encoding="utf-8")


def viewer_scripts(inputs: ReportInputs) -> str:
    """The <script> elements of the 3D view: config, GLB, three.js (inline or import map), ours, start."""
    assert inputs.glb is not None
    own = _asset("viewer.js")
    _check_inlinable(own, "assets/report/viewer.js")
    config = {"glbName": inputs.glb_name, "glbBytes": len(inputs.glb), "source": inputs.viewer_js.source.value,
              "sourceLine": inputs.viewer_js.describe()}
    parts = [f'<script type="application/json" id="hf-viewer-config">{_json_for_script(config)}</script>',
             f'<script type="application/octet-stream" id="hf-glb">{base64.b64encode(inputs.glb).decode("ascii")}'
             '</script>']
    vs = inputs.viewer_js
    if vs.source is ViewerSource.INLINE:
        parts.append(f"<!-- three.js bundle inlined from {_comment_text(vs.origin)} (three.js is MIT licensed, "
                     "https://threejs.org) -->")
        parts.append(f"<script>\n{vs.code}\n</script>")
    else:
        parts.append(f'<script type="importmap">{_json_for_script(import_map())}</script>')
    parts.append(f"<script>\n{own}\n</script>")
    parts.append(f"<script>{_INLINE_LOADER if vs.source is ViewerSource.INLINE else _CDN_LOADER}</script>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ page
_SLOT = re.compile(r"\{\{([a-z_]+)\}\}")


def fill_template(template: str, slots: dict[str, str]) -> str:
    """Replace every ``{{name}}`` in one pass; a slot missing from ``slots`` or a value never used is an error."""
    used: set[str] = set()

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in slots:
            raise KeyError(f"the report template has a slot {{{{{name}}}}} with no value")
        used.add(name)
        return slots[name]

    page = _SLOT.sub(one, template)
    unused = set(slots) - used
    if unused:
        raise KeyError(f"the report template has no slot for {sorted(unused)}")
    return page


def report_html(inputs: ReportInputs) -> str:
    """The whole page as one string."""
    if inputs.glb is None:
        source_line = NO_VIEWER_LINE
        viewer, scripts, state = f'<p class="note">{_esc(source_line)}.</p>', "", "none"
    else:
        source_line = inputs.viewer_js.describe()
        viewer = VIEWER_MARKUP.format(glb=_esc(inputs.glb_name), mb=len(inputs.glb) / 2**20)
        scripts, state = viewer_scripts(inputs), "loading"
    about = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in inputs.about)
    comment = "\n  ".join([f"{inputs.title}: written by headforge {__version__}.", source_line])
    return fill_template(_asset("report.html"), {
        "head_comment": _comment_text(comment),
        "version": _esc(__version__),
        "title": _esc(inputs.title),
        "about": about,
        "viewer_state": state,
        "viewer": viewer,
        "viewer_source": _esc(source_line),
        "metrics": metrics_html(inputs.metrics),
        "pictures": pictures_html(inputs.images),
        "picture_count": str(len(inputs.images)),
        "scripts": scripts,
    })
