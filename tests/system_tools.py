"""System programs some tests start for real (dciodvfy, Orthanc, Chromium), and the CI rule.

`require_tool("dciodvfy", "dicom3tools")` returns the program's path. When it is missing the
test is skipped on a developer's machine, but fails under `CI=true`: CI installs these Debian
packages (.ci/run), so a skip there would hide a test that never ran.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(program: str, package: str) -> str:
    """Path of `program` on PATH (or an absolute path that exists); skip, or fail under CI."""
    found = program if Path(program).is_absolute() and Path(program).exists() else shutil.which(program)
    if found:
        return found
    message = f"{program} not found (Debian package {package}; .ci/run installs it)"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
