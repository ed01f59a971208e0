"""Linters run as tests: ruff over the package, the CLI script and the tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Bare subprocess here on purpose: the linters judge the package, so they do not run through it
# (a broken processes.py must still be reported by them, not hide them).


@pytest.mark.tools
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    proc = subprocess.run([ruff, "check", "pipglr_builder", "tests", "build.py"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.tools
def test_shell_scripts_parse():
    scripts = [*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run",
               *(ROOT / "files" / n for n in ("runner-config", "register", "dumpconfig", "doctor", "collect-logs", "pipglr-env", "install-ca", "install-runner", "entrypoint", "deny-privileged-jobs", "redact-secrets", "pipglr-prune"))]
    for script in scripts:
        proc = subprocess.run(["sh" if script.parent.name == "files" else "bash", "-n", str(script)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


@pytest.mark.tools
@pytest.mark.parametrize("module", ["moa", "phrasestream"])
def test_runner_go_replacements_vet_and_tests(module):
    """The Go replacements that implement behaviour (expression evaluation, ::add-mask:: masking) and their own tests."""
    env = dict(os.environ, CGO_ENABLED="0")
    for argv in (["go", "vet", "./..."], ["go", "test", "-count=1", "./..."]):
        proc = subprocess.run(argv, cwd=ROOT / "pipglr_builder" / "runner_go_replacements" / module, capture_output=True,
                              text=True, env=env, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
