"""Shared test setup.

Unit tests may not run host programs: an autouse fixture makes tools.run
fail unless the test is marked `tools` or `slow`. Integration tests use
unique names and remove what they create.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipglr_builder import tools


@pytest.fixture(autouse=True)
def _no_host_programs_in_unit_tests(request, monkeypatch):
    if request.node.get_closest_marker("tools") or request.node.get_closest_marker("slow"):
        return

    def refuse(argv, **kwargs):
        raise AssertionError(f"unit test tried to run {argv[0]}; mark it @pytest.mark.tools")

    monkeypatch.setattr(tools, "run", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache directory for tests that must not touch the real one."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PIPGLR_CACHE", str(path))
    return path


def need(*programs: str) -> None:
    """Integration tests need the host set up by scripts/setup-host.sh (make test does it)."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing {missing}: run `make test` (it runs scripts/setup-host.sh) or install them")


def runner_double() -> Path:
    """The gitlab-runner test double built by `make runner-double` (see Makefile)."""
    path = os.environ.get("PIPGLR_RUNNER_DOUBLE")
    if not path or not Path(path.replace("{arch}", "amd64")).exists():
        pytest.fail("PIPGLR_RUNNER_DOUBLE is not set to a built double: run the tests through `make test`")
    return Path(path)
