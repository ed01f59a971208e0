"""The one way programs run (processes.py): missing programs, failures, timeouts, interruptions."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from pipglr_builder import processes
from pipglr_builder.errors import CommandFailed, ToolMissing

# A command whose child (in the same group) records its pid and outlives the parent unless the group is stopped.
ORPHAN = 'sleep 300 & echo $! > "$1"; wait'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: reaped later by init.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_unit_tests_cannot_start_programs_but_read_only_queries():
    """The guard in conftest sees every way a program starts."""
    for way in (processes.run, processes.call, processes.execute):
        with pytest.raises(AssertionError, match="unit test tried to run podman; mark it @pytest.mark.tools"):
            way(["podman", "--version"])
    with pytest.raises(AssertionError, match="tried to run podman"):
        processes.copy_image("localhost/x", ["podman", "load"])
    assert processes.call(["git", "--version"]).stdout.startswith("git version")


@pytest.mark.tools
@pytest.mark.parametrize("way", [processes.run, processes.call, processes.execute])
def test_a_missing_program_names_its_package(way, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match=r"skopeo not found on this host\. Install with: apt-get install skopeo"):
        way(["skopeo", "--version"])


@pytest.mark.tools
def test_failures_read_the_same_whichever_way_ran_them():
    script = "for i in $(seq 1 50); do echo line $i >&2; done; exit 3"
    for way in (processes.run, processes.execute):
        with pytest.raises(CommandFailed) as failed:
            way(["sh", "-c", script])
        message = str(failed.value)
        assert message.startswith("`sh -c 'for i in") and "failed with exit code 3. Last output:" in message
        assert "    line 50" in message and "line 20\n" not in message  # the last 30 lines only


@pytest.mark.tools
def test_run_streams_lines_and_feeds_stdin():
    seen = []
    out = processes.run(["sh", "-c", "cat; echo done"], stdin="a\nb\n", on_line=seen.append, quiet=True)
    assert seen == ["a", "b", "done"] and out == "a\nb\ndone"


@pytest.mark.tools
@pytest.mark.parametrize("way", ["run", "call"])
def test_a_timeout_stops_the_whole_process_group(tmp_path, way):
    pidfile = tmp_path / "pid"
    argv = ["sh", "-c", ORPHAN, "sh", str(pidfile)]
    started = time.monotonic()
    if way == "run":
        with pytest.raises(CommandFailed, match="no end after 2 s"):
            processes.run(argv, quiet=True, timeout=2)
    else:
        with pytest.raises(subprocess.TimeoutExpired):
            processes.call(argv, timeout=2)
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    processes.wait_for(lambda: not _alive(child), 10, interval=0.1, what=f"sleep {child} to be stopped")


@pytest.mark.tools
def test_an_interruption_stops_the_command_and_its_children(tmp_path):
    """Ctrl-C (or SIGTERM, which the CLI turns into the same) must not leave a build running behind us."""
    pidfile = tmp_path / "pid"
    main = threading.main_thread().ident

    def interrupt():
        processes.wait_for(pidfile.exists, 10, interval=0.05, what="the command to start")
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        processes.run(["sh", "-c", ORPHAN, "sh", str(pidfile)], quiet=True)
    child = int(pidfile.read_text())
    processes.wait_for(lambda: not _alive(child), 10, interval=0.1, what=f"sleep {child} to be stopped")
