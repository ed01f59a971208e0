"""pipglr-prune's decisions, fast: the script itself, with a `podman` earlier on PATH that answers from
fixtures shaped as podman 5.4's JSON and records what it is asked to remove.

What each answer means is proven in place by tests/test_prune.py (slow, real podman in a booted image).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools
HELPER = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.0"
PINNED = "registry.example.com/ci/helper:x86_64-v19.4.0"
FAKE = """#!/bin/sh
# podman, as far as pipglr-prune asks it: answers from $FIXTURES, removals logged.
echo "$*" >> "$FIXTURES/asked"
case "$*" in
    "ps --all --format json") cat "$FIXTURES/ps.json" ;;
    "events --stream=false --format json") cat "$FIXTURES/events-all.json" ;;
    "events --stream=false --since "*) cat "$FIXTURES/events-since.json" ;;
    "images --format json") cat "$FIXTURES/images.json" ;;
    "volume ls --format json") cat "$FIXTURES/volumes.json" ;;
    # find -newerct in the volume: what changed within the age (ctime cannot be set back in a test).
    "unshare find "*) case "$3" in *changed*) echo "$3/file" ;; esac ;;
    "rm "*|"rmi "*|"volume rm "*) echo "$*" >> "$FIXTURES/removed" ;;
    *) echo "fake podman: not expected: $*" >&2; exit 125 ;;
esac
"""


def write(folder: Path, name: str, data) -> None:
    text = "\n".join(json.dumps(e) for e in data) if name.startswith("events") else json.dumps(data)
    (folder / name).write_text(text + "\n")


@pytest.fixture
def prune(tmp_path):
    now = int(time.time())
    old, recent = now - 3 * 86400, now - 600  # the age is 1h
    fx = tmp_path / "fixtures"
    fx.mkdir()
    write(fx, "ps.json", [
        {"Id": "a" * 64, "Names": ["running-job"], "State": "running", "Created": old, "ExitedAt": 0},
        {"Id": "b" * 64, "Names": ["old-stopped"], "State": "exited", "Created": old, "ExitedAt": old + 60},
        {"Id": "c" * 64, "Names": ["recent-stopped"], "State": "exited", "Created": old, "ExitedAt": recent},
        {"Id": "d" * 64, "Names": ["never-started"], "State": "created", "Created": old, "ExitedAt": 0},
    ])
    write(fx, "events-all.json", [{"ID": "e" * 64, "Status": "pull", "Type": "image", "time": old - 86400}])
    write(fx, "events-since.json", [
        {"ID": "f" * 64, "Image": "docker.io/library/debian:trixie", "Name": "job-1", "Status": "create",
         "Type": "container", "time": recent},
        {"ID": "0" * 64, "Image": "docker.io/library/alpine:3", "Name": "job-0", "Status": "remove",
         "Type": "container", "time": recent},  # a removal is no use
        {"ID": "1" * 64, "Image": HELPER, "Name": "runner-x-project-7-concurrent-0-cache-perm-set-permission-1a2b",
         "Status": "start", "Type": "container", "time": recent},
    ])
    write(fx, "images.json", [
        {"Id": "2" * 64, "Names": [HELPER], "Containers": 0},
        {"Id": "3" * 64, "Names": [PINNED], "Containers": 0},
        {"Id": "4" * 64, "Names": ["docker.io/library/debian:trixie"], "Containers": 0},
        {"Id": "5" * 64, "Names": ["docker.io/library/alpine:3", "localhost/alpine:mine"], "Containers": 0},
        {"Id": "6" * 64, "Names": ["localhost/in-use:1"], "Containers": 1},
        {"Id": "7" * 64, "Names": None, "Containers": 0},
    ])
    volumes = {name: str(tmp_path / "volumes" / name / "_data")
               for name in ("runner-x-project-7-concurrent-0-cache-perm", "runner-x-project-8-concurrent-0-cache-changed",
                            "runner-x-project-9-concurrent-0-cache-old")}
    write(fx, "volumes.json", [{"Name": name, "Mountpoint": path} for name, path in volumes.items()])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(FAKE)
    (bin_dir / "podman").chmod(0o755)
    run_root = tmp_path / "run-root"
    run_root.mkdir()
    (run_root / "prune-helpers").write_text(PINNED + "\n")  # what --helpers took from the live config
    values = {**render.template_values(config.load(None)), "run_root_dir": str(run_root)}
    script = tmp_path / "pipglr-prune"
    script.write_text(render._environment().get_template("files/pipglr-prune").render(values))

    def run(*args: str):
        proc = processes.call(["sh", str(script), *args],
                              env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "FIXTURES": str(fx), "PRUNE_AGE": "1h"})
        removed = (fx / "removed").read_text().splitlines() if (fx / "removed").exists() else []
        return proc, removed
    return run


def test_prune_removes_exactly_what_was_unused_for_the_age(prune):
    proc, removed = prune()
    assert proc.returncode == 0, proc.stderr
    assert sorted(removed) == sorted([
        "rm " + "b" * 12, "rm " + "d" * 12,  # stopped, and created never started, before the cutoff
        "rmi docker.io/library/alpine:3 localhost/alpine:mine",  # by every name; only a removal event named it
        "rmi " + "7" * 64,  # no name: by ID
        "volume rm runner-x-project-9-concurrent-0-cache-old",
    ]), proc.stdout
    out = proc.stdout
    for line in ("kept container running-job: running", "kept container recent-stopped: exited since",
                 f"kept image {HELPER}: the runner's helper",
                 f"kept image {PINNED}: helper_image of the live config.toml",
                 "kept image docker.io/library/debian:trixie: used within 1h",
                 "kept image localhost/in-use:1: 1 container(s) use it",
                 "kept volume runner-x-project-7-concurrent-0-cache-perm: used within 1h",
                 "kept volume runner-x-project-8-concurrent-0-cache-changed: changed within 1h",
                 "removed volume runner-x-project-9-concurrent-0-cache-old: unused for 1h"):
        assert line in out, line


def test_prune_keeps_images_and_volumes_while_the_event_log_is_too_short(prune, tmp_path):
    fx = tmp_path / "fixtures"
    write(fx, "events-all.json", [{"ID": "e" * 64, "Status": "pull", "Type": "image", "time": int(time.time()) - 60}])
    proc, removed = prune()
    assert proc.returncode == 0, proc.stderr
    assert sorted(removed) == ["rm " + "b" * 12, "rm " + "d" * 12]  # containers only
    assert "kept all images and volumes: the event log starts at" in proc.stdout


@pytest.mark.parametrize("age", ["72h", "3d", "1s", "999999m", "1000000s", "0h", "07h", "72", "h", "1w", "3 days",
                                 "-1h", "", "72h ", "1h\n2h", "1.5h", "72H"])
def test_an_age_arriving_in_the_image_meets_the_settings_rule_and_words(prune, age):
    """PRUNE_AGE from a drop-in or the build argument (the Containerfile runs `pipglr-prune --check`): the
    rule and the words of the setting prune_age (config.py), checked nowhere else."""
    proc, removed = prune("--check", age)
    problem = config.prune_age_problem(age)
    assert removed == []
    if problem is None:
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc
    else:
        assert proc.returncode == 2 and proc.stderr == f"pipglr-prune: PRUNE_AGE '{age}': {problem}\n", proc


def test_prune_refuses_a_bad_age(prune):
    proc, removed = prune("3 days")
    assert proc.returncode == 2 and "not a whole number with a unit" in proc.stderr
    assert removed == []
