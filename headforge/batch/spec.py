"""What the driver hands one attempt (``attempt.json``): plain JSON values, so it crosses to Ray workers as it is.
Imports nothing heavy (Ray workers load it; the child process loads the jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ATTEMPT_FILE = "attempt.json"
PARENT_ENV = "HEADFORGE_BATCH_PARENT"


@dataclass(frozen=True)
class AttemptSpec:
    """One attempt of one item."""

    id: str
    job: str
    input: str  # as the manifest wrote it, relative to ``base``
    input_path: str | None  # resolved, for the thumbnail; None for a built-in
    options: dict[str, Any]  # JSON values (BatchItem.argv_options)
    base: str  # the manifest's folder: the process's working directory
    item_dir: str
    key: str
    attempt: int
    threads: int
    overwrite: bool  # the output exists from an older key, or its attempt could not be continued
    resume: bool  # continue from OUT/checkpoints
    timeout: float | None
    finish_only: bool = False  # the job finished before the batch died: only pictures, report and record

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def folder(self) -> Path:
        return Path(self.item_dir)

    @property
    def output(self) -> Path:
        return self.folder / "output"
