"""The Makefile's quick target: `make unit` runs the unit tests and nothing else (no host setup, no Go, no images)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def dry_run(target: str) -> str:
    """What `make TARGET` would run (`make -n`: printed, not run)."""
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.tools
def test_make_unit_runs_only_the_unit_tests():
    commands = dry_run("unit")
    assert '-m pytest -m "not slow and not tools"' in commands
    for heavy in ("setup-host.sh", "build.py runner", "go ", "buildah", "podman"):
        assert heavy not in commands
    # `make test` (what .ci/run runs) stays the whole suite: host setup, the runner build, every test.
    whole = dry_run("test")
    assert "setup-host.sh" in whole and "build.py runner" in whole
    (pytest_line,) = [line for line in whole.splitlines() if "-m pytest" in line]
    assert "not slow" not in pytest_line
