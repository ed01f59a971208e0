"""Linters run as tests: ruff over the package, the CLI script and the tests; the package's import structure."""

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
               *(ROOT / "files" / n for n in ("runner-config", "register", "dumpconfig", "doctor", "collect-logs", "pipglr-env", "install-ca", "install-runner", "entrypoint", "deny-privileged-jobs", "redact-secrets", "pipglr-prune", "resetcache", "convert-pipglr-config"))]
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


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    """Data flows down from cli.py: no import circle, late (in-function) imports included."""
    import ast
    package = ROOT / "pipglr_builder"
    names = {p.stem for p in package.glob("*.py")}
    imports: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        imports[path.stem] = found & names

    def circle_from(start: str, at: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(imports[at]):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = circle_from(start, nxt, [*path, nxt])
                if found:
                    return found
        return None

    for module in sorted(imports):
        circle = circle_from(module, module, [module])
        assert circle is None, " -> ".join(circle)
