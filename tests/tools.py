"""Command-line tools the tests use that are not Python packages."""

import os
import shutil

import pytest


def promtool() -> str:
    """The path of promtool (Debian's prometheus package): required in CI, else optional."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path
