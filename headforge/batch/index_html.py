"""Placeholder replaced by the index page module."""
from __future__ import annotations

import json
from pathlib import Path

from headforge.atomic import write_text


def write_index(path: Path, data: dict) -> Path:
    write_text(path, "<pre>" + json.dumps(data, indent=2) + "</pre>")
    return path
