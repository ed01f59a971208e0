"""The nested podman's prune (pipglr-prune.service) in the booted image, with real podman.

Marked slow: it builds the image (session fixture) and boots it. The prune age
is set to AGE seconds with a unit drop-in (as an admin would change it), so
"old" means made before the test waited AGE seconds; nothing is backdated.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from pipglr_builder import processes
from pipglr_builder.boot import RootfulBoot
from pipglr_builder.processes import copy_image, unique, wait_for
from pipglr_builder.render import NESTED_VOLUMES

from .conftest import BASE, HELPER, sh

pytestmark = pytest.mark.slow
PINNED = "registry.example.com/ci/helper:x86_64-v19.4.0"  # helper_image of the live config
AGE = 30
VOLUME = "runner-t3st0000-project-{}-concurrent-0-cache-c33bcaa1fd2c77edfc3893b41966cea8"


class Box(RootfulBoot):
    def run(self, *argv: str, user: str = "root", input: str | None = None) -> subprocess.CompletedProcess:
        interactive = ["--interactive"] if input is not None else []
        proc = processes.call([*self.exec_argv(user)[:2], *interactive, *self.exec_argv(user)[2:], *argv],
                              input=input, timeout=300)
        assert proc.returncode == 0, f"{argv}: {proc.stderr[-2000:]}"
        return proc

    def podman(self, *argv: str) -> str:
        return self.run("podman", *argv, user="podman").stdout

    def exists(self, kind: str, name: str) -> bool:
        argv = [*self.exec_argv("podman"), "podman", kind, "exists", name]
        return sh(*argv, check=False).returncode == 0

    def tiny_image(self, name: str) -> None:
        """An image of its own (not sharing layers with another): one file, imported."""
        self.run("sh", "-c", f"mkdir -p /tmp/{name} && echo {name} > /tmp/{name}/id && "
             f"tar -C /tmp/{name} -c . | podman import --quiet - localhost/{name}:1", user="podman")


@pytest.fixture(scope="module")
def box(image):
    """One boot for this module's tests (each boot costs about 40 s); a test leaves no volume or container
    that changes the next one's counts, except the age test, which comes last."""
    container = Box(image, name=unique("pipglr-prune"))
    try:
        yield container.start()
    finally:
        container.close()


def test_resetcache_drops_every_cache_but_one_in_use_and_the_prune_repairs_an_old_reset(box):
    """resetcache (what the runlabel runs in pipglr) removes record and data of every runner cache volume
    through podman; one a running job mounts stays, named. The old reset (removing the data under the
    records) broke every container mounting such a volume until the prune removed the record."""
    copy_image(BASE, [*box.exec_argv("podman")[:2], "--interactive", *box.exec_argv("podman")[2:],
                      "podman", "load", "--quiet"])
    cache, busy = VOLUME.format("reset"), VOLUME.format("busy")
    for name in (cache, busy, "job-made"):
        box.podman("volume", "create", name)
        box.podman("run", "--rm", "--volume", f"{name}:/cache", BASE, "sh", "-c", "echo cached > /cache/file")
    box.podman("run", "--detach", "--name", "job-running", "--volume", f"{busy}:/cache", BASE, "sleep", "infinity")

    reset = sh(*box.exec_argv("podman"), "/usr/local/libexec/pipglr/resetcache", check=False)
    assert reset.returncode == 1, reset
    assert f"resetcache: removed volume {cache}\n" in reset.stdout, reset.stdout
    assert f"resetcache: kept volume {busy}: Error: volume {busy} is being used" in reset.stdout, reset.stdout
    assert "run resetcache again when the jobs have finished" in reset.stdout, reset.stdout
    assert set(box.podman("volume", "ls", "--format", "{{.Name}}").split()) == {busy, "job-made"}
    # gitlab-runner's next job makes the volume again under the same name: it works, and it is empty.
    again = box.podman("run", "--rm", "--volume", f"{cache}:/cache", BASE, "sh", "-c", "ls -A /cache; echo listed")
    assert again == "listed\n", again
    box.podman("rm", "--force", "--time", "0", "job-running")
    reset = sh(*box.exec_argv("podman"), "/usr/local/libexec/pipglr/resetcache", check=False)
    assert reset.returncode == 0 and reset.stdout.endswith("removed 2 cache volume(s)\n"), reset
    assert box.podman("volume", "ls", "--format", "{{.Name}}").split() == ["job-made"]

    # The old reset: the data goes (volume pipglr-cache removed), the records in pipglr-storage stay.
    # resetcache removes a runner cache's record all the same; the prune any other.
    left = VOLUME.format("old-reset")
    for name in (left, "cachetest"):
        box.podman("volume", "create", name)
        box.run("rm", "-rf", f"{NESTED_VOLUMES}/{name}")
    broken = sh(*box.exec_argv("podman"), "podman", "run", "--rm", "--volume", "cachetest:/cache", BASE, "true",
                check=False)
    assert broken.returncode != 0 and 'reading contents of volume "cachetest"' in broken.stderr, broken
    reset = sh(*box.exec_argv("podman"), "/usr/local/libexec/pipglr/resetcache", check=False)
    assert reset.returncode == 0 and f"resetcache: removed volume {left}\n" in reset.stdout, reset
    assert sorted(box.podman("volume", "ls", "--format", "{{.Name}}").split()) == ["cachetest", "job-made"]
    log = box.run("/usr/local/libexec/pipglr/pipglr-prune", "1h", user="podman").stdout
    assert (f"removed volume cachetest: its data directory {NESTED_VOLUMES}/cachetest/_data is gone"
            in log), log
    assert "cannot look into it" not in log, log
    assert box.podman("volume", "ls", "--format", "{{.Name}}").split() == ["job-made"], log
    box.podman("run", "--rm", "--volume", "cachetest:/cache", BASE, "true")
    box.podman("volume", "rm", "job-made")  # the age test after this one finds the box as booted


def test_prune_removes_only_what_was_unused_for_the_age(box):
    for ref in (HELPER, BASE):
        copy_image(ref, [*box.exec_argv("podman")[:2], "--interactive", *box.exec_argv("podman")[2:],
                         "podman", "load", "--quiet"])
    box.tiny_image("job-old")
    box.tiny_image("pinned-helper")
    box.podman("tag", "localhost/pinned-helper:1", PINNED)
    box.podman("rmi", "localhost/pinned-helper:1")
    # The live config's helper_image is not the official name (readable by runner only;
    # the URL is loopback, for a runner that starts with it).
    box.run("sh", "-c", "umask 077 && printf '%s\\n' 'concurrent = 1' '[[runners]]' 'name = \"t\"' "
            "'url = \"http://127.0.0.1:9/\"' 'token = \"t\"' 'executor = \"docker\"' '[runners.docker]' "
            f"'image = \"{BASE}\"' 'helper_image = \"{PINNED}\"' > /var/lib/pipglr/config.toml && "
            "chown runner:runner /var/lib/pipglr/config.toml")
    volumes = {use: VOLUME.format(n) for n, use in enumerate(("old", "permission", "written", "mounted"))}
    for name in volumes.values():
        box.podman("volume", "create", "--label", "com.gitlab.gitlab-runner.type=cache",
                   "--label", "com.gitlab.gitlab-runner.reusable=true", name)
        box.podman("run", "--rm", "--volume", f"{name}:/cache", BASE, "sh", "-c", "echo cached > /cache/file")
    box.podman("create", "--name", "old-stopped", "localhost/job-old:1", "true")
    box.podman("run", "--detach", "--name", "still-running", "--volume", f"{volumes['mounted']}:/cache",
               BASE, "sleep", "infinity")
    # The event log is on the storage volume (it must outlive restarts) and, so far, reaches back less
    # than an hour: with that age nothing but stopped containers may go, and the prune says why.
    box.run("test", "-s", "/home/podman/.local/share/containers/events.log")
    early = box.run("/usr/local/libexec/pipglr/pipglr-prune", "1h", user="podman").stdout
    assert "kept all images and volumes: the event log starts at" in early, early
    assert "kept container old-stopped: created since" in early, early
    bad = sh(*box.exec_argv("podman"), "/usr/local/libexec/pipglr/pipglr-prune", "3 days", check=False)
    assert bad.returncode == 2 and "not a whole number with a unit" in bad.stderr, bad
    made = time.time()
    # The old things are older than AGE once AGE seconds passed (the clock is the condition).
    wait_for(lambda: time.time() > made + AGE + 1, AGE + 10, what=f"{AGE} s to pass")

    # Used within AGE: the job image; one cache volume as the runner uses it at the
    # start of every job (a container named VOLUME-set-permission-ID that chmods
    # it, as gitlab-runner's cache-init does), one written by a job.
    box.podman("run", "--rm", "--name", f"{volumes['permission']}-set-permission-0123abcd",
               "--volume", f"{volumes['permission']}:/gitlab-runner-cache-init", BASE,
               "chmod", "0777", "/gitlab-runner-cache-init")
    box.podman("run", "--rm", "--volume", f"{volumes['written']}:/cache", BASE, "sh", "-c", "date > /cache/file")

    box.run("sh", "-c", "mkdir -p /run/systemd/system/pipglr-prune.service.d && printf '[Service]\\n"
            f"Environment=PRUNE_AGE={AGE}s\\n' > /run/systemd/system/pipglr-prune.service.d/50-test.conf "
            "&& systemctl daemon-reload")
    started = time.time()
    box.run("systemctl", "start", "pipglr-prune.service")  # oneshot: returns when the prune is done
    assert time.time() - started < AGE, "the prune took longer than AGE: 'recent' was no longer recent"
    log = box.run("journalctl", "--no-pager", "--output", "cat", "-u", "pipglr-prune.service").stdout

    assert box.exists("image", HELPER), log
    assert box.exists("image", PINNED), log
    assert box.exists("image", BASE), log
    assert not box.exists("container", "old-stopped"), log
    assert not box.exists("image", "localhost/job-old:1"), log
    assert box.exists("container", "still-running"), log
    assert not box.exists("volume", volumes["old"]), log
    for use in ("permission", "written", "mounted"):
        assert box.exists("volume", volumes[use]), f"{use}: {log}"
    for line in (f"kept image {HELPER}: the runner's helper",
                 f"kept image {PINNED}: helper_image of the live config.toml",
                 f"kept image {BASE}: used within {AGE}s",
                 "removed container old-stopped: created since",
                 "removed image localhost/job-old:1: unused for",
                 "kept container still-running: running",
                 f"removed volume {volumes['old']}: unused for {AGE}s",
                 f"kept volume {volumes['permission']}: used within {AGE}s",
                 f"kept volume {volumes['written']}: changed within {AGE}s",
                 f"kept volume {volumes['mounted']}: "):
        assert line in log, log

