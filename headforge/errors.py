"""Errors that name the offending input and say how to fix it.

Every error a user can cause derives from :class:`HeadforgeError`; the CLI prints it without a
traceback and exits non-zero. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class HeadforgeError(Exception):
    """A problem with the user's input or environment, with the file and a fix."""

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        self.fix = fix
        parts = [f"{self.path}: {problem}" if self.path is not None else problem]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))


class InputError(HeadforgeError):
    """A file is missing, unreadable, or its content is malformed."""


class CameraError(HeadforgeError):
    """Camera parameters are missing, non-finite or degenerate."""


class CaptureError(HeadforgeError):
    """A capture is empty or inconsistent (image sizes vs intrinsics, masks vs images)."""


class MeshError(HeadforgeError):
    """A mesh cannot be read or is unusable (no faces, non-finite vertices)."""


class Interrupted(HeadforgeError):
    """Training stopped by SIGINT or SIGTERM after a completed step (the CLI exits 128 + signal number).

    ``checkpoint`` is the checkpoint written at ``step`` (None: none was kept, ``note`` says why)."""

    def __init__(self, step: int, steps: int, signum: int, checkpoint: Path | None, note: str | None = None):
        self.step, self.steps, self.signum, self.checkpoint, self.note = step, steps, signum, checkpoint, note
        where = f"checkpoint {checkpoint}" if checkpoint is not None else f"no checkpoint kept ({note or 'none'})"
        super().__init__(f"interrupted at step {step} of {steps}; {where}")

    def checkpoint_lost(self, note: str) -> Interrupted:
        """The same interruption after its checkpoint was removed with a staging folder."""
        return Interrupted(self.step, self.steps, self.signum, None, note)


class Terminated(BaseException):
    """SIGTERM outside training: unwinds like ctrl-C, so staging folders and output locks are cleaned up. Not an
    ``Exception``: nothing that catches errors catches it. Raised by :func:`raise_terminated`, a SIGTERM handler."""


def raise_terminated(signum, frame):
    raise Terminated
