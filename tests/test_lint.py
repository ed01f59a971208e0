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


def _package_imports() -> dict[str, set[str]]:
    """Each module of the package (dotted, below pipglr_builder: `cli`, `harness.bench`) and the modules of
    the package it imports, late (in-function) imports included."""
    import ast
    package = ROOT / "pipglr_builder"
    modules: dict[str, tuple[Path, list[str]]] = {}  # name: (file, the package its relative imports start from)
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[0] == "checks":  # pytest's files, which verify runs: not imported by the package
            continue
        if parts[-1] == "__init__":
            parts.pop()
            modules[".".join(parts)] = (path, parts)
        else:
            modules[".".join(parts)] = (path, parts[:-1])
    imports: dict[str, set[str]] = {}
    for module, (path, here) in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - node.level + 1]
                base = [*base, *(node.module.split(".") if node.module else [])]
                # from .x import z: module x, and x.z where z is a module of its own
                found |= {".".join(base), *(".".join([*base, a.name]) for a in node.names)}
        # A package's __init__.py (a docstring) is no stage: only modules count.
        imports[module] = {m for m in found if m in modules and m != module and modules[m][0].name != "__init__.py"}
    return imports


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    """Data flows down from cli.py: no import circle, late (in-function) imports included."""
    imports = _package_imports()

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


def test_the_product_uses_the_harness_only_for_the_bench_command():
    """The harness (tests' GitLab, benchmarks) imports the product, never the other way round: only cli.py
    reaches into it, to offer `bench`."""
    imports = _package_imports()
    assert {"verify", "build"} <= imports["harness.bench"], imports["harness.bench"]  # it stands on the product
    into = {m for m, found in imports.items() if not m.startswith("harness") and any(f.startswith("harness") for f in found)}
    assert into == {"cli"}, into
