"""The tool as a user installs it: a wheel in a fresh virtual environment, run from an unrelated directory.

Templates, checks and the stand-in host are package data, the harness (the test GitLab `bench` runs, the
benchmarks) a subpackage; pytest and testinfra (which `verify` runs) are dependencies. So render, build and
verify work with no clone anywhere near, and every command `--help` lists is there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
import zipfile

import pytest

from pipglr_builder import config, runner

from .conftest import IMAGE_NAME, ROOT, runner_args, sh

pytestmark = pytest.mark.slow
# Bare subprocess here on purpose: the wheel is built, installed and run as an outsider does it,
# with nothing of the clone's package (processes included) in between.


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pipglr-build from a freshly built wheel, in a new venv (dependencies from PyPI)."""
    work = tmp_path_factory.mktemp("wheel")
    # From a copy of the clone's own files: setuptools reuses a build/ folder left in the clone by an
    # earlier install, which would ship modules since renamed or removed (and hide a missing one).
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    source = work / "source"
    for name in files:
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"),
                    str(source)], check=True, timeout=600)
    wheels = list((work / "dist").glob("pipglr_builder-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        shipped = {n for n in wheel.namelist() if n.startswith("pipglr_builder/")}
    package = {n for n in files if n.startswith("pipglr_builder/") and (ROOT / n).is_file()}
    assert shipped == package, "the wheel must hold the package's files, no more"
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "--quiet", str(wheels[0])], check=True, timeout=900)
    elsewhere = work / "elsewhere"  # no pipglr.toml, no clone
    elsewhere.mkdir()
    return work / "venv" / "bin" / "pipglr-build", elsewhere


def run(installed, *args: str, timeout: float = 3000) -> subprocess.CompletedProcess:
    tool, cwd = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(tool), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def test_installed_tool_renders_builds_and_verifies(installed):
    tool, cwd = installed
    listed = run(installed, "--help").stdout
    assert str(ROOT) not in listed
    commands = [line.split()[0] for line in listed.split("Commands:")[1].splitlines() if line[:3].strip() and line[:2] == "  "]
    assert {"bench", "build", "render", "verify"} <= set(commands), commands
    for command in commands:
        proc = run(installed, command, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr
    # bench imports its modules when it runs: they and the coordinator script it starts are in the wheel.
    probe = ("from pipglr_builder.harness import bench, coordinator; "
             "print(coordinator.SCRIPT.is_file(), coordinator.SCRIPT.parent.parent.parent.name)")
    proc = subprocess.run([str(tool.parent / "python"), "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.split() == ["True", "site-packages"], proc.stdout + proc.stderr
    proc = run(installed, "render", "--output", "ctx")
    assert proc.returncode == 0, proc.stderr
    for name in ("Containerfile", "runner.service", "doctor", "subuid", "register"):
        assert (cwd / "ctx" / name).is_file(), name

    tag = f"t-wheel-{uuid.uuid4().hex[:8]}"
    ref = f"{IMAGE_NAME}:{tag}"
    try:
        # Installed, the tool has no clone beside it: it is told where gitlab-runner's nested module is, as
        # README says for machines whose Go proxy refuses it (the runner it builds is then the cached one).
        nested = runner.nested_module_dir(config.load(None))
        proc = run(installed, "build", "--image-name", IMAGE_NAME, "--tags", tag, *runner_args(),
                   "--runner-nested-module-dir", str(nested))
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proc.stdout.strip().splitlines()[-1] == ref
        proc = run(installed, "verify", ref)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "0 failed" in proc.stderr
    finally:
        sh("podman", "rmi", "--force", ref, check=False)
