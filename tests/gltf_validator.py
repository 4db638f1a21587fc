"""Run the Khronos glTF Validator (npm ``gltf-validator``, installed by tools/install_clients.sh into
.cache/clients) on a GLB with the machine's node, and return its parsed report.

``require_validator()`` skips the calling test with the reason when node or the package is missing,
except under ``CI=true``, where it fails: CI never skips GLB validation silently.

The validator release on npm (2.0.0-dev.3.10) predates ``KHR_gaussian_splatting``: it reports the
extension as unsupported (an info) and every ``KHR_gaussian_splatting:*`` attribute semantic as
``MESH_PRIMITIVE_INVALID_ATTRIBUTE`` (an error), because core glTF only allows its own semantics and
``_``-prefixed ones. ``extension_semantic_errors`` picks out exactly those errors so a test can
check them one by one, and ``with_renamed_semantics`` builds the same GLB with ``_``-prefixed
semantics so the validator checks every one of those accessors with no exemption at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / ".cache" / "clients"
PACKAGE = CLIENTS / "node_modules" / "gltf-validator"
INSTALL = "tools/install_clients.sh"

_SCRIPT = """
const fs = require('fs');
const validator = require(process.argv[2]);
const bytes = new Uint8Array(fs.readFileSync(process.argv[3]));
validator.validateBytes(bytes, {uri: process.argv[3], format: 'glb', maxIssues: 0, writeTimestamp: false})
  .then((report) => process.stdout.write(JSON.stringify(report)),
        (error) => { process.stderr.write(String(error)); process.exit(3); });
"""

SEVERITY_NAMES = {0: "error", 1: "warning", 2: "info", 3: "hint"}


@dataclass(frozen=True)
class Issue:
    code: str
    severity: int  # 0 error, 1 warning, 2 info, 3 hint
    pointer: str
    message: str


@dataclass(frozen=True)
class ValidationReport:
    num_errors: int
    num_warnings: int
    num_infos: int
    num_hints: int
    issues: tuple[Issue, ...]
    raw: dict

    def of_severity(self, severity: int) -> list[Issue]:
        return [i for i in self.issues if i.severity == severity]

    @property
    def errors(self) -> list[Issue]:
        return self.of_severity(0)

    def summary(self) -> str:
        lines = [f"{self.num_errors} errors, {self.num_warnings} warnings, {self.num_infos} infos, "
                 f"{self.num_hints} hints"]
        lines += [f"  {SEVERITY_NAMES[i.severity]} {i.code} {i.pointer}: {i.message}" for i in self.issues[:40]]
        return "\n".join(lines)


def missing_reason() -> str | None:
    """Why the validator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (the Khronos glTF Validator runs on node)"
    if not (PACKAGE / "package.json").is_file():
        return f"gltf-validator is not installed in {CLIENTS} (run {INSTALL})"
    return None


def require_validator() -> None:
    """Skip (fail under CI=true) the calling test when the validator cannot run."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the glTF validator cannot run: {reason}")
    pytest.skip(reason)


def validate_glb(path: str | Path) -> ValidationReport:
    """Validate one GLB file; raises RuntimeError when node fails or prints no report."""
    reason = missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    with tempfile.NamedTemporaryFile("w", suffix=".cjs", delete=False) as f:
        f.write(_SCRIPT)
        script = f.name
    try:
        done = subprocess.run(["node", script, str(PACKAGE), str(Path(path).resolve())], capture_output=True,
                              text=True, timeout=120)
    finally:
        os.unlink(script)
    if done.returncode != 0:
        raise RuntimeError(f"gltf-validator failed (exit {done.returncode}): {done.stderr.strip()}")
    raw = json.loads(done.stdout)
    counts = raw["issues"]
    issues = tuple(Issue(m["code"], int(m["severity"]), m.get("pointer", ""), m["message"])
                   for m in counts["messages"])
    if counts.get("truncated"):
        raise RuntimeError("the validator truncated its issue list")
    report = ValidationReport(int(counts["numErrors"]), int(counts["numWarnings"]), int(counts["numInfos"]),
                              int(counts["numHints"]), issues, raw)
    for severity, total in enumerate((report.num_errors, report.num_warnings, report.num_infos, report.num_hints)):
        if len(report.of_severity(severity)) != total:
            raise RuntimeError(f"report counts do not match its messages:\n{report.summary()}")
    return report


_EXT_SEMANTIC = re.compile(r"^/meshes/\d+/primitives/\d+/attributes/(KHR_gaussian_splatting:[A-Z0-9_]+)$")


def extension_semantic_errors(report: ValidationReport) -> list[str]:
    """Semantics of the ``MESH_PRIMITIVE_INVALID_ATTRIBUTE`` errors on ``KHR_gaussian_splatting:*``
    attributes (see the module docstring), in report order."""
    out = []
    for issue in report.errors:
        match = _EXT_SEMANTIC.match(issue.pointer)
        if issue.code == "MESH_PRIMITIVE_INVALID_ATTRIBUTE" and match:
            out.append(match.group(1))
    return out


def with_renamed_semantics(glb: bytes, prefix: str = "KHR_gaussian_splatting:") -> bytes:
    """The same GLB (same BIN chunk) with every ``prefix`` attribute semantic renamed ``_KHR_GS_*``,
    an application-specific name core glTF accepts."""
    jlen = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20:20 + jlen])
    for mesh in doc.get("meshes", []):
        for prim in mesh["primitives"]:
            prim["attributes"] = {("_KHR_GS_" + k[len(prefix):] if k.startswith(prefix) else k): v
                                  for k, v in prim["attributes"].items()}
    body = json.dumps(doc, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 4)
    rest = glb[20 + jlen:]
    return struct.pack("<4sII", b"glTF", 2, 20 + len(body) + len(rest)) + struct.pack("<I4s", len(body),
                                                                                     b"JSON") + body + rest
