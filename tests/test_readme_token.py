"""The token steps of the README and docs/ keep the token out of the shell's history and off every command line.

Their own lines run in bash with history on, the token typed on stdin; a
`podman` earlier on PATH records what it got (this checks the shell steps, not podman).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pipglr_builder import processes, render

README = (render.PROJECT / "README.md").read_text()
# The README's shortest path holds the runner token's steps; docs/using.md the registration token's.
DOCS = [README] + [path.read_text() for path in sorted((render.PROJECT / "docs").glob("*.md"))]
TOKEN = "glrt-hIsToRyLeAk_7Zq"


def token_steps(texts: list[str] = DOCS) -> list[list[str]]:
    """Each command block's lines (README first, then docs/) that read the token and create the secret."""
    blocks = [block for text in texts for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)]
    steps = []
    for block in blocks:
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if "secret create REGISTRATION_TOKEN" in line:
                steps.append([text for text in lines[max(0, i - 1):i + 1] if "TOKEN" in text])
    return steps


def test_readme_never_puts_a_token_on_a_command_line():
    assert len(token_steps()) >= 2, "the token steps were not found"
    assert token_steps([README]), "the README's shortest path has no token step"
    for line in "\n".join(DOCS).splitlines():
        assert not re.search(r"echo\s+['\"]?(glrt-|GR1348941|\$REGISTRATION_TOKEN)", line), line


@pytest.mark.tools
@pytest.mark.parametrize("step", range(2))
def test_readme_token_step_leaves_no_trace_in_history(tmp_path: Path, step: int):
    lines = token_steps()[step]
    assert any(line.lstrip().startswith("read ") for line in lines), lines
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "podman"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/argv\ncat >> {tmp_path}/stdin\n')
    fake.chmod(0o755)
    history = tmp_path / "history"
    # bash reads the script from stdin line by line: `read` takes the line after it, as from the keyboard.
    script = "set -o history\n" + lines[0] + "\n" + TOKEN + "\n" + "\n".join(lines[1:]) + "\nhistory -w\n"
    proc = processes.call(["bash", "--norc", "--noprofile", "-s"], input=script,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "HISTFILE": str(history), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "stdin").read_text().strip() == TOKEN  # the secret got the token
    assert "secret create REGISTRATION_TOKEN -" in (tmp_path / "argv").read_text()
    assert TOKEN not in (tmp_path / "argv").read_text()  # not on podman's command line
    assert "secret create REGISTRATION_TOKEN" in history.read_text()  # history was written...
    assert TOKEN not in history.read_text()  # ...without the token
    assert TOKEN not in proc.stdout + proc.stderr  # nor echoed
