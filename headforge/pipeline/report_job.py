"""The job behind ``headforge report RUN --out report.html``: one self-contained HTML page of a run.

It reads a headforge output folder (one holding ``metrics.json``, or ``run.json`` for ``headforge run``):
the metrics, every PNG and GIF at the folder's top level (``contact_sheet.png``, ``turntable.gif``,
``expressions_sheet.png``, ``overlay_sheet.png``, ... the known sheets first), and a GLB for the 3D view:
the one given, else for an avatar or fit-rig run its rigged head exported in memory (``export_job``), else the
first ``RUN/**/*.glb`` (fewest folders deep, then by name; staging leftovers and
``checkpoints/`` skipped), named in the result with the others found. three.js comes from, in order:
``viewer_js``, ``$HEADFORGE_VIEWER_JS``, the checkout's ``.cache/clients/viewer/three_bundle.js`` (the
bundle ``tools/install_clients.sh`` builds; found from this package's location, i.e. an editable install),
else the page imports three@0.187.0 from jsDelivr (viz/report_html.py). The page is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from headforge.atomic import check_output_path, write_text
from headforge.errors import InputError
from headforge.io.files import InputKind, image_header, is_missing, read_bytes, read_json, read_text, resolve_input
from headforge.io.glb import read_glb
from headforge.viz.report_html import (
    BUNDLE_GLOBAL,
    NO_VIEWER_LINE,
    ImageMime,
    InlineError,
    ReportImage,
    ReportInputs,
    ViewerScript,
    ViewerSource,
    report_html,
)

__all__ = ["ReportWritten", "collect_report", "find_run_glb", "resolve_viewer_js", "write_report"]

VIEWER_JS_ENV = "HEADFORGE_VIEWER_JS"
REPO = Path(__file__).resolve().parents[2]
REPO_BUNDLE = REPO / ".cache" / "clients" / "viewer" / "three_bundle.js"
RUN_MARKERS = ("metrics.json", "run.json")  # what every headforge job writes last
PICTURE_ORDER = ("contact_sheet.png", "turntable.gif", "expressions_sheet.png", "overlay_sheet.png",
                 "before_after.png", "capture_sheet.png", "cameras.png")
PICTURE_SUFFIXES = {".png": ImageMime.PNG, ".gif": ImageMime.GIF}
SKIPPED_FOLDERS = ("checkpoints",)
_BUNDLE_FIX = "run tools/install_clients.sh (it builds .cache/clients/viewer/three_bundle.js) and pass that file"


@dataclass(frozen=True)
class ReportWritten:
    """What ``write_report`` wrote and chose."""

    out: Path
    run: Path
    glb: Path | None  # the GLB file shown (None: none, or the rigged head exported in memory)
    has_model: bool  # the page has a 3D view
    glb_note: str  # how the GLB was chosen (exported from the run, given, found among others, none)
    viewer: ViewerScript
    pictures: tuple[str, ...]
    num_bytes: int

    def lines(self) -> list[str]:
        """What the command prints."""
        return [f"wrote {self.out} ({self.num_bytes / 2**20:.1f} MB): {len(self.pictures)} pictures, "
                f"metrics of {self.run}", self.glb_note,
                self.viewer.describe() if self.has_model else NO_VIEWER_LINE]


def _is_leftover(path: Path, top: Path) -> bool:
    """A staging name of headforge.atomic, or a file under a skipped folder (e.g. training checkpoints)."""
    parts = path.relative_to(top).parts
    return any(".partial-" in p or ".old-" in p for p in parts) or any(p in SKIPPED_FOLDERS for p in parts[:-1])


def find_run_glb(run: Path) -> list[Path]:
    """Every ``RUN/**/*.glb``, the one a report picks first: fewest folders deep, then by path."""
    found = [p for p in run.rglob("*") if p.suffix.lower() == ".glb" and p.is_file() and not _is_leftover(p, run)]
    return sorted(found, key=lambda p: (len(p.relative_to(run).parts), p.relative_to(run).as_posix()))


def _read_bundle(path: Path, what: str) -> ViewerScript:
    code = read_text(path, what, fix=_BUNDLE_FIX)
    if BUNDLE_GLOBAL not in code:
        raise InputError(f"{what} does not define the global {BUNDLE_GLOBAL}: it is not the report's three.js bundle",
                         path=path, fix=_BUNDLE_FIX)
    try:
        return ViewerScript(ViewerSource.INLINE, str(path), code)
    except InlineError as e:
        raise InputError(str(e), path=path, fix=_BUNDLE_FIX) from None


def resolve_viewer_js(viewer_js: Path | None) -> ViewerScript:
    """three.js for the page: ``viewer_js``, then ``$HEADFORGE_VIEWER_JS``, then the checkout's bundle, else the CDN.
    A path that is given (option or variable) must be a readable bundle: it is never skipped silently."""
    if viewer_js is not None:
        return _read_bundle(Path(viewer_js), "--viewer-js bundle")
    env = os.environ.get(VIEWER_JS_ENV, "")
    if env:
        return _read_bundle(Path(env), f"${VIEWER_JS_ENV} bundle")
    if (REPO / "pyproject.toml").is_file() and REPO_BUNDLE.is_file():
        return _read_bundle(REPO_BUNDLE, "the checkout's three.js bundle")
    return ViewerScript.cdn()


def _check_run(run: Path) -> Path:
    run = resolve_input(run, kind=InputKind.DIRECTORY, what="run folder",
                        fix="give the output folder of a headforge command (reconstruct, fit-rig, avatar, run)")
    if not any((run / m).is_file() for m in RUN_MARKERS):
        fix = "give the --out folder of headforge reconstruct, fit-rig, avatar or run, once the run has finished"
        if (run / "avatar.json").is_file():
            fix = f"this is an avatar folder; give the avatar run's folder that holds it ({run.resolve().parent})"
        raise InputError(f"not a headforge output folder: it holds neither {' nor '.join(RUN_MARKERS)} (every "
                         "headforge job writes one last, so an unfinished run has none)", path=run, fix=fix)
    return run


def _pictures(run: Path) -> list[ReportImage]:
    files = [p for p in run.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file()
             and not _is_leftover(p, run)]
    rank = {name: i for i, name in enumerate(PICTURE_ORDER)}
    files.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    images = []
    for p in files:
        width, height, _ = image_header(p, "picture", fix="re-run the job that wrote it, or remove the file")
        images.append(ReportImage(p.name, read_bytes(p, "picture"), PICTURE_SUFFIXES[p.suffix.lower()], width,
                                  height))
    return images


def _glb(run: Path, glb: Path | None) -> tuple[Path | None, str]:
    """-> (the GLB, how it was chosen)."""
    if glb is not None:
        if is_missing(glb):
            raise InputError("GLB not found", path=glb,
                             fix="check the path, or leave out --glb to use the GLB the run folder holds")
        return Path(glb), f"3D model: {glb} (given)"
    found = find_run_glb(run)
    if not found:
        return None, (f"3D model: none (no *.glb under {run}; pass --glb PATH, e.g. a rigged GLB exported from an "
                      "avatar or fit-rig run)")
    others = ", ".join(p.relative_to(run).as_posix() for p in found[1:])
    return found[0], (f"3D model: {found[0]} (picked from {len(found)} *.glb under {run}"
                      + (f"; also there: {others}; pass --glb to choose)" if others else ")"))


def _rigged_run_glb(run: Path) -> tuple[bytes, str] | None:
    """An avatar or fit-rig run shows its rigged head (exported in memory, with the built-in clips)."""
    if not ((run / "avatar" / "avatar.json").is_file() or (run / "avatar.json").is_file()
            or (run / "rig_fit.json").is_file()):
        return None
    from headforge.pipeline.export_job import rigged_glb_of_run

    data, kind = rigged_glb_of_run(run)
    return data, (f"3D model: the rigged head of this {kind} run, exported for the page (52 ARKit targets, the "
                  "built-in clips; headforge export writes the same GLB); pass --glb to show another")


def collect_report(run: Path, glb: Path | None = None, viewer_js: Path | None = None
                   ) -> tuple[ReportInputs, Path | None, str]:
    """Read and check everything the page needs -> (inputs, the GLB file used or None, how the model was chosen)."""
    run = _check_run(Path(run))
    marker = next(run / m for m in RUN_MARKERS if (run / m).is_file())
    metrics = read_json(marker, "metrics file", expect=dict, fix="re-run the job that wrote it")
    rigged = _rigged_run_glb(run) if glb is None else None
    glb_path, glb_bytes, glb_name = None, None, "head.glb"
    if rigged is not None:
        glb_bytes, glb_note = rigged
    else:
        glb_path, glb_note = _glb(run, glb)
    if glb_path is not None:
        glb_bytes = read_bytes(glb_path, "GLB", fix="give a binary glTF (.glb) file")
        read_glb(glb_bytes, glb_path)  # refuse a file that is not a GLB before writing a page that cannot show it
        glb_name = glb_path.name
    viewer = resolve_viewer_js(viewer_js)  # also without a GLB: a bundle that is given is checked, never ignored
    about = [("run", str(run.resolve())), ("metrics", marker.name)]
    job = metrics.get("job") or metrics.get("method")
    if job is not None:
        about.append(("job", str(job)))
    if glb_bytes is not None:
        about.append(("3D model", f"{glb_path or 'rigged head, exported from the run'} "
                                  f"({len(glb_bytes) / 2**20:.1f} MB)"))
    inputs = ReportInputs(title=f"{run.resolve().name}: headforge report", metrics=metrics, images=_pictures(run),
                          glb=glb_bytes, viewer_js=viewer, glb_name=glb_name, about=tuple(about))
    return inputs, glb_path, glb_note


def write_report(run: Path, out: Path, glb: Path | None = None, viewer_js: Path | None = None, *,
                 overwrite: bool = False) -> ReportWritten:
    """Write the report page of ``run`` to ``out`` (atomically; an existing file only with ``overwrite``)."""
    out = check_output_path(out, directory=False)
    if out.exists() and not overwrite:
        raise InputError("output file already exists", path=out, fix="pass --overwrite, or choose another --out")
    inputs, glb_path, glb_note = collect_report(run, glb, viewer_js)
    page = report_html(inputs)
    write_text(out, page)
    return ReportWritten(out, Path(run), glb_path, inputs.glb is not None, glb_note, inputs.viewer_js,
                         tuple(im.name for im in inputs.images), len(page.encode("utf-8")))
