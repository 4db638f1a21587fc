"""Headless Chromium for page tests: playwright-core from .cache/clients (tools/install_clients.sh) driving the
machine's /usr/bin/chromium with node.

``require_browser(what, extra)`` skips the calling test with the reason when node, chromium, playwright-core (or one
of the ``extra`` files a test also needs) is missing, except under ``CI=true``, where it fails (the pattern of
tests/gltf_validator.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / ".cache" / "clients"
PLAYWRIGHT = CLIENTS / "node_modules" / "playwright-core"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "tools/install_clients.sh"


def missing_reason(extra: tuple[tuple[Path, str], ...] = ()) -> str | None:
    """Why the browser cannot run, or None; ``extra``: (file, what it is) pairs that must exist too."""
    if shutil.which("node") is None:
        return "node is not installed (playwright-core runs on node)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium, or run {INSTALL})"
    for path, what in ((PLAYWRIGHT / "package.json", "playwright-core"), *extra):
        if not path.is_file():
            return f"{what} is not installed in {CLIENTS} (run {INSTALL})"
    return None


def require_browser(what: str, extra: tuple[tuple[Path, str], ...] = ()) -> None:
    """Skip (fail under CI=true) when ``what`` (e.g. "the report") cannot be checked in Chromium."""
    reason = missing_reason(extra)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {what} cannot be checked in Chromium: {reason}")
    pytest.skip(reason)
