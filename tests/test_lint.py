"""ruff, as configured in pyproject.toml: lint and formatting are part of the test run (and so of CI)."""

import subprocess
import sys

from conftest import REPO


def test_ruff_check_and_format():
  for args in (["check", "."], ["format", "--check", "."]):
    result = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"
