"""The volume decisions of pipglr-prune and resetcache, fast: the image's scripts run on this machine
with a fake `podman` first on PATH that answers from fixtures and records what it is asked to remove.

`podman unshare CMD` runs CMD here, so "is the data directory there" is looked up for real in tmp_path.
The booted image's podman runs the same scripts in tests/test_prune.py and tests/test_e2e.py (slow).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools

# Answers `podman ps|events|images|volume ls` from fixture files in $FAKE; `volume rm` refuses the
# names in $FAKE/in-use (podman's own message) and records the others in $FAKE/removed, which later
# `volume ls` calls no longer list; `rm` and `rmi` are recorded; anything else is an error.
FAKE_PODMAN = r"""#!/bin/sh
f=$FAKE
case "$1 ${2:-}" in
    "ps --all") cat "$f/ps.json" ;;
    "events --stream=false") cat "$f/events.json" ;;
    "images --format") cat "$f/images.json" ;;
    "volume ls") jq --rawfile gone "$f/removed" \
        '[.[] | select(.Name as $n | $gone | split("\n") | index($n) | not)]' "$f/volumes.json" ;;
    "volume rm")
        if grep -qxF "$3" "$f/in-use"; then
            echo "Error: volume $3 is being used by the following container(s): 0123abcd4567: volume is being used" >&2
            exit 2
        fi
        echo "$3" >> "$f/removed"; echo "$3" ;;
    "unshare "*) shift; exec "$@" ;;
    "rm "*|"rmi "*) echo "$*" >> "$f/removed" ;;
    *) echo "fake podman: unexpected: $*" >&2; exit 125 ;;
esac
"""
CACHE = "runner-t3st0000-project-{}-concurrent-0-cache-c33bcaa1fd2c77edfc3893b41966cea8"


class Nested:
    """A fake nested podman: volumes (name -> data directory, made or not), event log, in-use volumes."""

    def __init__(self, root: Path):
        self.root = root
        self.fake = root / "fake"
        (self.fake / "bin").mkdir(parents=True)
        podman = self.fake / "bin" / "podman"
        podman.write_text(FAKE_PODMAN)
        podman.chmod(0o755)
        for name, text in (("ps.json", "[]"), ("images.json", "[]"), ("events.json", ""), ("removed", ""),
                           ("in-use", "")):
            (self.fake / name).write_text(text)
        self.volumes: list[dict] = []

    def volume(self, name: str, data: bool = True, in_use: bool = False) -> Path:
        path = self.root / "volumes" / name / "_data"
        if data:
            path.mkdir(parents=True)
            (path / "file").write_text("cached\n")
        self.volumes.append({"Name": name, "Mountpoint": str(path)})
        if in_use:
            with (self.fake / "in-use").open("a") as f:
                f.write(name + "\n")
        return path

    def events_since(self, hours_ago: float) -> None:
        """An event log reaching back HOURS_AGO (one event then, one now)."""
        now = int(time.time())
        events = [{"ID": "a1", "Name": "old", "Status": "start", "time": int(now - hours_ago * 3600)},
                  {"ID": "b2", "Name": "new", "Status": "start", "time": now}]
        (self.fake / "events.json").write_text("".join(json.dumps(e) + "\n" for e in events))

    def run(self, script: str, *args: str) -> processes.subprocess.CompletedProcess:
        (self.fake / "volumes.json").write_text(json.dumps(self.volumes))
        path = self.root / script
        path.write_text(render.render_file(config.load(None), f"files/{script}"))
        env = {**os.environ, "FAKE": str(self.fake), "PATH": f"{self.fake / 'bin'}:{os.environ['PATH']}"}
        env.pop("PRUNE_AGE", None)
        return processes.call(["sh", str(path), *args], env=env, timeout=60)

    def removed(self) -> list[str]:
        return (self.fake / "removed").read_text().split()


@pytest.fixture
def nested(tmp_path):
    return Nested(tmp_path)


def test_prune_removes_a_volume_record_whose_data_is_gone_even_with_a_short_event_log(nested):
    """The old README's reset (volume pipglr-cache removed) left records without data: they go at once,
    an intact volume stays, a record a container still uses stays with podman's reason."""
    gone = nested.volume("cachetest", data=False)
    nested.volume(CACHE.format(1))
    busy = nested.volume(CACHE.format(2), data=False, in_use=True)
    nested.events_since(hours_ago=1)  # less than the default age: no image or volume is judged by use
    proc = nested.run("pipglr-prune")
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout
    assert f"removed volume cachetest: its data directory {gone} is gone" in log, log
    assert (f"kept volume {CACHE.format(2)} (its data directory {busy} is gone): Error: volume {CACHE.format(2)} "
            "is being used by the following container(s)") in log, log
    assert "kept all images and volumes: the event log starts at" in log, log
    assert nested.removed() == ["cachetest"]


def test_prune_no_longer_keeps_a_record_it_cannot_look_into(nested):
    """With an event log long enough the age pass runs too: it never sees the removed record
    (before: "kept volume cachetest: cannot look into it"), and judges the intact volume by age."""
    nested.volume("cachetest", data=False)
    nested.volume(CACHE.format(1))
    nested.events_since(hours_ago=100)
    proc = nested.run("pipglr-prune", "72h")
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout
    assert "removed volume cachetest: its data directory" in log, log
    assert "cannot look into it" not in log, log
    assert f"kept volume {CACHE.format(1)}: changed within 72h" in log, log
    assert nested.removed() == ["cachetest"]


def test_prune_keeps_a_volume_when_podman_unshare_cannot_look(nested):
    """Not knowing is not "gone": a failing `podman unshare` removes nothing."""
    nested.volume("cachetest", data=False)
    nested.events_since(hours_ago=1)
    (nested.fake / "bin" / "podman").write_text(FAKE_PODMAN.replace('shift; exec "$@"', "exit 125"))
    proc = nested.run("pipglr-prune")
    assert proc.returncode == 0, proc.stderr
    assert "cachetest" not in proc.stdout and nested.removed() == [], proc.stdout


def test_resetcache_removes_every_cache_volume_and_nothing_else(nested):
    for n in (1, 2):
        nested.volume(CACHE.format(n))
    nested.volume(CACHE.format(3), data=False)  # a record the old reset left: removed all the same
    nested.volume("cachetest")
    nested.volume("pipglr-job-made")
    proc = nested.run("resetcache")
    assert proc.returncode == 0, proc.stderr
    assert nested.removed() == [CACHE.format(n) for n in (1, 2, 3)]
    for n in (1, 2, 3):
        assert f"resetcache: removed volume {CACHE.format(n)}\n" in proc.stdout
    assert proc.stdout.endswith("resetcache: removed 3 cache volume(s)\n"), proc.stdout


def test_resetcache_leaves_a_volume_a_job_uses_and_says_so(nested):
    nested.volume(CACHE.format(1))
    nested.volume(CACHE.format(2), in_use=True)
    proc = nested.run("resetcache")
    assert proc.returncode == 1
    assert nested.removed() == [CACHE.format(1)]
    assert (f"resetcache: kept volume {CACHE.format(2)}: Error: volume {CACHE.format(2)} is being used by the "
            "following container(s): 0123abcd4567") in proc.stdout, proc.stdout
    assert ("kept 1 cache volume(s) a container still uses: run resetcache again when the jobs have finished"
            in proc.stdout), proc.stdout


def test_resetcache_without_a_nested_podman_fails_clearly(nested):
    (nested.fake / "bin" / "podman").write_text("#!/bin/sh\necho 'Error: cannot connect' >&2\nexit 125\n")
    proc = nested.run("resetcache")
    assert proc.returncode == 1
    assert "Error: cannot connect" in proc.stderr
    assert "resetcache: cannot list the nested podman's volumes" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
