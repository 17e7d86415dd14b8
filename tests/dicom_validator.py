"""David Clunie's DICOM validator `dciodvfy` (Debian dicom3tools), run for real by the tests.

`validate(path)` runs it on one file and returns its findings; `errors` are the lines that
start with "Error", which is how dciodvfy reports a violation of the IOD (its exit status
is also non-zero then, and both are checked, so a crash cannot pass for a clean file).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from system_tools import require_tool


@dataclass(frozen=True)
class Validation:
    path: Path
    iod: str  # the IOD dciodvfy checked against, e.g. "MammographyImageForPresentation"
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    returncode: int

    def report(self) -> str:
        lines = "\n  ".join(self.errors or self.warnings or ("(no findings)",))
        return f"{self.path} [{self.iod}] exit {self.returncode}:\n  {lines}"


def validate(path: str | Path) -> Validation:
    """dciodvfy's verdict on one DICOM file (skips, or fails under CI=true, when dciodvfy is missing)."""
    program = require_tool("dciodvfy", "dicom3tools")
    done = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=120)
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    errors = tuple(line for line in lines if line.startswith("Error"))
    warnings = tuple(line for line in lines if line.startswith("Warning"))
    iods = [line for line in lines if not line.startswith(("Error", "Warning"))]
    return Validation(Path(path), iods[0] if iods else "", errors, warnings, done.returncode)


def assert_conformant(path: str | Path) -> Validation:
    """Fail with dciodvfy's own lines unless it reports no error for `path`."""
    result = validate(path)
    assert not result.errors and result.returncode == 0, result.report()
    assert result.iod, f"dciodvfy did not name an IOD for {path}: it did not check it"
    return result
