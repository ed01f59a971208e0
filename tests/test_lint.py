"""Linters run as tests: ruff over the package, the CLI script and the tests."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.tools
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run([ruff, "check", "pipglr_builder", "tests", "build.py"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.tools
def test_shell_scripts_parse():
    scripts = [*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run",
               *(ROOT / "files" / n for n in ("runner-config", "register", "dumpconfig", "install-runner", "entrypoint", "deny-privileged-jobs"))]
    for script in scripts:
        proc = subprocess.run(["sh" if script.parent.name == "files" else "bash", "-n", str(script)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
