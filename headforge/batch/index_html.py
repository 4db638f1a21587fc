"""``OUT/index.html``: the batch's report page, written from ``batch.json``'s dict (``command.summary_json``).

One self-contained HTML file: inline CSS and one small inline script, no network request of any kind (a
Content-Security-Policy allows the inline script by its hash, images only from the batch folder). Everything but
the sorting works without JavaScript. The page, top to bottom:

* **header**: manifest, output folder, executor, started / finished, total seconds, and the counts (items, done,
  failed, reused, run here), with a link to ``batch.json``.
* **failures** (``<section id="failures">``), first: every item whose state is not ``done`` (the same items
  ``counts.failed`` counts: failed, and pending / running ones of a stopped batch), in manifest order, each an
  ``<article class="failure" data-id=ID>`` with its job, input, manifest line, error kind, class and the first
  :data:`MESSAGE_LINES` lines of its message (the whole message in a ``<details>`` when longer), and links to the
  item's ``status.json``, ``log.txt`` and the traceback file its error names, each only when it exists there.
* **items** (``<table id="items">``): one ``<tr data-id=ID id="item-ID">`` per item in ``<tbody>``, in manifest
  order, columns :data:`COLUMNS`: id, job, state (with the error class, reused, resumed), seconds, attempts, the
  input and render thumbnails (``outputs["input_thumb"]``, ``outputs["render_thumb"]`` as lazy ``<img>``, an em
  dash when the item has none or the file is missing), the headline metrics (``key=value``, floats to 3
  significant digits; each ``<span data-metric=KEY data-sort=VALUE>``), links (every other ``outputs`` label, e.g.
  report, glb, turntable, sheet, output) and notes. Text-sorted cells sort naturally ("item2" before "item10").
* **sorting**: each header is a button; a click sorts the rows by that column (the cells' ``data-sort``: numbers
  numerically for ``data-type="number"`` columns, text otherwise; empty values always last), a second click on the
  same header reverses; the active header carries ``aria-sort`` (``ascending`` / ``descending``).

Every string from the data (ids, inputs, messages, notes, metric keys and values) is HTML-escaped; link and image
paths are relative to the batch folder (``items/<id>/...``), URL-quoted, and only linked when they stay inside it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from headforge.atomic import write_text
from headforge.viz.report_html import format_value

MESSAGE_LINES = 3  # lines of an error message shown before the <details>
THUMBS = ("input_thumb", "render_thumb")
DASH = "\u2014"
# (key, header, numeric): the table's columns
COLUMNS = (("id", "id", False), ("job", "job", False), ("state", "state", False), ("seconds", "seconds", True),
           ("attempts", "attempts", True), ("input_thumb", "input", False), ("render_thumb", "render", False),
           ("metrics", "metrics", False), ("links", "links", False), ("notes", "notes", False))
ITEM_FILES = (("status.json", "status.json"), ("log", "log.txt"))  # (label, name in the item folder)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .4em}h2{font-size:1.15em;margin:1.2em 0 .5em}
dl.head{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:0}dl.head dt{color:#666}
dl.head dd{margin:0}.counts b{font-size:1.1em}
.failure{border-left:4px solid #c62828;background:#fdecea;padding:.5em .8em;margin:.6em 0}
.failure h3{margin:0 0 .3em;font-size:1em}.failure pre{white-space:pre-wrap;margin:.3em 0;font-size:13px}
.none{color:#2e7d32}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;
vertical-align:top}
th button{font:inherit;font-weight:bold;background:none;border:0;padding:0;cursor:pointer}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fdecea}img.thumb{max-width:96px;max-height:96px;display:block}
.metrics span,.links a,.notes div{display:block;white-space:nowrap}.notes div{white-space:normal}
"""

# Sorts the table by a clicked header (see the module docstring); reads only data-* attributes.
_SCRIPT = """
(function () {
  var table = document.getElementById("items");
  if (!table) return;
  var heads = table.tHead.rows[0].cells;
  function value(row, i, numeric) {
    var s = row.cells[i].getAttribute("data-sort");
    if (s === null || s === "") return null;
    return numeric ? parseFloat(s) : s;
  }
  function sortBy(i) {
    var th = heads[i], numeric = th.getAttribute("data-type") === "number";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, k) {
      return { row: r, key: value(r, i, numeric), k: k };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return a.key === b.key ? a.k - b.k : (a.key === null ? 1 : -1);
      }
      var c = numeric ? a.key - b.key : a.key.localeCompare(b.key, undefined, { numeric: true });
      return c !== 0 ? dir * c : a.k - b.k;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    for (var j = 0; j < heads.length; j++) heads[j].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(heads, function (th, i) {
    th.addEventListener("click", function () { sortBy(i); });
  });
})();
"""


def write_index(path: Path, data: dict) -> Path:
    """Write the page for ``data`` (``command.summary_json``) to ``path`` (atomically), beside the items folder."""
    write_text(path, index_html(data, Path(path).parent))
    return path


def index_html(data: dict, base: Path) -> str:
    """The page; ``base`` is the batch folder the page's relative paths start from (files are checked there)."""
    items = list(data.get("items", []))
    failed = [item for item in items if item.get("state") != "done"]
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src 'self' file:")
    title = f"headforge batch: {Path(str(data.get('manifest', ''))).name}"
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_esc(csp)}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
        _header_html(data, base),
        _failures_html(failed, base),
        _table_html(items, base),
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n",
    ])


# ---------------------------------------------------------------------------------------------------------- pieces


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_number(value: Any) -> str:
    """A metric or a time as the page shows it: the report page's format, with floats to 3 significant digits."""
    return format_value(value, digits=3)


def _sort_value(value: Any) -> str:
    """A cell's ``data-sort``: a number's full repr, a string as is, empty for none (sorted last)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def safe_href(rel: str) -> str | None:
    """``rel`` URL-quoted for an href or src, or None when it is absolute or leaves the batch folder."""
    posix = PurePosixPath(str(rel))
    if posix.is_absolute() or ".." in posix.parts or not posix.parts:
        return None
    return quote(posix.as_posix(), safe="/")


def _link(rel: str, label: str) -> str:
    href = safe_href(rel)
    if href is None:
        return f"<span title=\"outside the batch folder\">{_esc(label)}: {_esc(rel)}</span>"
    return f"<a href=\"{_esc(href)}\">{_esc(label)}</a>"


def _exists(base: Path, rel: str) -> bool:
    return safe_href(rel) is not None and (base / rel).exists()


def _header_html(data: dict, base: Path) -> str:
    counts = data.get("counts", {})
    rows = [("manifest", _esc(data.get("manifest", DASH))), ("output", _esc(data.get("out", DASH))),
            ("executor", _esc(data.get("executor", DASH))), ("started", _esc(data.get("started", DASH))),
            ("finished", _esc(data.get("finished", DASH))),
            ("seconds", _esc(format_number(data.get("seconds"))) + " s")]
    count_text = ", ".join(f"<b>{_esc(counts.get(key, DASH))}</b> {name}" for key, name in (
        ("items", "items"), ("done", "done"), ("failed", "failed"), ("reused", "reused"), ("run_here", "run here")))
    rows.append(("counts", f"<span class=\"counts\">{count_text}</span>"))
    if _exists(base, "batch.json"):
        rows.append(("summary", _link("batch.json", "batch.json")))
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f"<header>\n<h1>headforge batch</h1>\n<dl class=\"head\">{body}</dl>\n</header>\n"


def _item_file_links(item: dict, base: Path) -> list[str]:
    folder = str(item.get("folder", ""))
    names = list(ITEM_FILES)
    traceback = (item.get("error") or {}).get("traceback")
    if traceback:  # the file the error names (an older one beside it belongs to an earlier failure)
        names.append(("traceback", str(traceback)))
    return [_link(f"{folder}/{name}", label) for label, name in names if _exists(base, f"{folder}/{name}")]


def _message_html(message: str) -> str:
    lines = message.splitlines() or [""]
    head = "\n".join(lines[:MESSAGE_LINES])
    out = f"<pre class=\"message\">{_esc(head)}</pre>"
    if len(lines) > MESSAGE_LINES:
        out += (f"<details><summary>whole message ({len(lines)} lines)</summary>"
                f"<pre class=\"message-full\">{_esc(message)}</pre></details>")
    return out


def _failure_html(item: dict, base: Path) -> str:
    item_id = str(item.get("id", ""))
    error = item.get("error")
    anchor = quote(f"item-{item_id}", safe="")
    head = (f"<h3><a href=\"#{_esc(anchor)}\">{_esc(item_id)}</a>: {_esc(item.get('job', ''))} on "
            f"<code>{_esc(item.get('input', ''))}</code> (manifest line {_esc(item.get('line', DASH))}, "
            f"state {_esc(item.get('state', DASH))})</h3>")
    if error:
        what = (f"<div class=\"error\"><b>{_esc(error.get('kind', ''))}</b>: "
                f"<code>{_esc(error.get('class', ''))}</code></div>" + _message_html(str(error.get("message", ""))))
    else:
        what = "<div class=\"error\">no error recorded (the batch stopped before the item finished)</div>"
    links = _item_file_links(item, base)
    files = f"<div class=\"files\">{' | '.join(links)}</div>" if links else ""
    return f"<article class=\"failure\" data-id=\"{_esc(item_id)}\">{head}{what}{files}</article>\n"


def _failures_html(failed: list[dict], base: Path) -> str:
    if not failed:
        return "<section id=\"failures\">\n<h2>Failures</h2>\n<p class=\"none\">No failures.</p>\n</section>\n"
    body = "".join(_failure_html(item, base) for item in failed)
    return f"<section id=\"failures\">\n<h2>Failures ({len(failed)})</h2>\n{body}</section>\n"


def _thumb_cell(item: dict, label: str, base: Path) -> str:
    rel = (item.get("outputs") or {}).get(label)
    if rel is None or not _exists(base, rel):
        return f"<td class=\"thumb\" data-sort=\"\">{DASH}</td>"
    href = _esc(safe_href(rel))
    alt = _esc(f"{label.removesuffix('_thumb')} of {item.get('id', '')}")
    return (f"<td class=\"thumb\" data-sort=\"{_esc(rel)}\"><a href=\"{href}\"><img class=\"thumb\" src=\"{href}\" "
            f"alt=\"{alt}\" loading=\"lazy\"></a></td>")


def _metrics_cell(metrics: dict) -> str:
    spans = "".join(f"<span data-metric=\"{_esc(key)}\" data-sort=\"{_esc(_sort_value(value))}\">"
                    f"{_esc(key)}={_esc(format_number(value))}</span>" for key, value in metrics.items())
    first = _sort_value(next(iter(metrics.values()))) if metrics else ""
    return f"<td class=\"metrics\" data-sort=\"{_esc(first)}\">{spans or DASH}</td>"


def _row_html(item: dict, base: Path) -> str:
    item_id = str(item.get("id", ""))
    state = str(item.get("state", ""))
    flags = [flag for flag in ("reused", "resumed") if item.get(flag)]
    if item.get("error"):
        flags.insert(0, str(item["error"].get("class", "")))
    state_text = _esc(state) + (f" <small>({', '.join(flags)})</small>" if flags else "")
    outputs = item.get("outputs") or {}
    links = [_link(rel, label) for label, rel in outputs.items() if label not in THUMBS]
    notes = [str(n) for n in item.get("notes") or []]
    cells = [
        f"<td data-sort=\"{_esc(item_id)}\">{_esc(item_id)}</td>",
        f"<td data-sort=\"{_esc(item.get('job', ''))}\">{_esc(item.get('job', ''))}</td>",
        f"<td data-sort=\"{_esc(state)}\">{state_text}</td>",
        f"<td class=\"num\" data-sort=\"{_esc(_sort_value(item.get('seconds')))}\">"
        f"{_esc(format_number(item.get('seconds')))}</td>",
        f"<td class=\"num\" data-sort=\"{_esc(_sort_value(item.get('attempt')))}\">"
        f"{_esc(format_number(item.get('attempt')))}</td>",
        _thumb_cell(item, "input_thumb", base),
        _thumb_cell(item, "render_thumb", base),
        _metrics_cell(dict(item.get("metrics") or {})),
        f"<td class=\"links\" data-sort=\"{_esc(' '.join(l for l in outputs if l not in THUMBS))}\">"
        f"{''.join(links) or DASH}</td>",
        f"<td class=\"notes\" data-sort=\"{_esc(' '.join(notes))}\">"
        f"{''.join(f'<div>{_esc(n)}</div>' for n in notes) or DASH}</td>",
    ]
    css = " class=\"failed\"" if state != "done" else ""
    return (f"<tr data-id=\"{_esc(item_id)}\" id=\"{_esc(f'item-{item_id}')}\"{css}>"
            + "".join(cells) + "</tr>\n")


def _table_html(items: list[dict], base: Path) -> str:
    number = " data-type=\"number\""
    heads = "".join(f"<th data-key=\"{key}\"{number if numeric else ''} scope=\"col\">"
                    f"<button type=\"button\">{name}</button></th>" for key, name, numeric in COLUMNS)
    rows = "".join(_row_html(item, base) for item in items)
    return (f"<section>\n<h2>Items ({len(items)})</h2>\n<table id=\"items\">\n<thead><tr>{heads}</tr></thead>\n"
            f"<tbody>\n{rows}</tbody>\n</table>\n</section>\n")
