"""End to end: register through the runlabel, take CI jobs from a GitLab API, run them nested.

The user's side is the stand-in host (user alice, rootless podman, subuid
65539), driven with the commands the README gives. GitLab is the test
coordinator (harness/gitlab_coordinator.py), running inside the stand-in's network
namespace. gitlab-runner and its helper are the real ones, built from their
Go module (runner_source gomodule) with the helper image the build makes.
The tests run in order and share one world.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import uuid
from pathlib import Path

import pytest

from pipglr_builder.harness.coordinator import SCRIPT, URL, VOLUME, Coordinator
from pipglr_builder.processes import wait_for
from pipglr_builder.render import HELPER_DIR, NESTED_SOCKET, NESTED_VOLUMES, PODMAN_RUNTIME_DIR, RUN_ENV
from pipglr_builder.standin import StandIn

from .conftest import BASE, HELPER, HELPER_WRITTEN, IMAGE_NAME, cli, sh

pytestmark = pytest.mark.slow
# User podman's podman CLI inside the outer container (its nested storage).
PODMAN = ["runuser", "-u", "podman", "--", "env", f"XDG_RUNTIME_DIR={PODMAN_RUNTIME_DIR}", "podman"]


class World:
    def __init__(self, standin: StandIn, image: str, gitlab: Coordinator):
        self.standin, self.image, self.gitlab = standin, image, gitlab
        self.registration_token = gitlab.token

    def alice(self, *argv: str, check: bool = True, input: str | None = None):
        return self.standin.as_user("alice", list(argv), check=check, input=input)

    def outer(self, *argv: str, check: bool = False):
        """A command in alice's pipglr container (podman exec through her podman)."""
        return self.alice("podman", "exec", "pipglr", *argv, check=check)

    def coordinator(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.gitlab.request(method, path, body)

    def state(self) -> dict:
        return self.gitlab.state()

    def add_job(self, *script: str, image: str = BASE, runner_id: int | None = None) -> int:
        """Queue a job (for any runner, or only the runner with RUNNER_ID); return its id."""
        spec = {"script": list(script), "image": image, "runner_id": runner_id}
        return self.coordinator("POST", "/_test/jobs", spec)["id"]

    def wait_job(self, job_id: int, timeout: float = 180) -> dict:
        def finished():
            job = self.state()["jobs"][str(job_id)]
            return job if job["state"] in ("success", "failed") else None
        return wait_for(finished, timeout, interval=1, what=f"job {job_id} to finish")

    def wait_booted(self) -> None:
        self.standin.wait_booted()

    def load_nested(self, image: str, tag: str | None = None) -> None:
        """Copy IMAGE from this machine into the nested storage (as an air-gapped host would)."""
        with tempfile.NamedTemporaryFile(dir=self.standin.api_dir, suffix=".tar") as archive:
            sh("podman", "save", "--output", archive.name, image)
            os.chmod(archive.name, 0o644)
            inner = f"/api/{Path(archive.name).name}"
            self.alice("podman", "cp", inner, f"pipglr:/tmp/{Path(inner).name}")
            self.outer("chmod", "0644", f"/tmp/{Path(inner).name}", check=True)
            self.outer(*PODMAN, "load", "--quiet", "--input", f"/tmp/{Path(inner).name}", check=True)
            if tag:
                self.outer(*PODMAN, "tag", image, tag, check=True)
            self.outer("rm", "-f", f"/tmp/{Path(inner).name}")

    def preload(self, name: str) -> None:
        """The preload runlabel, as an air-gapped user runs it: podman save NAME | runlabel preload."""
        with tempfile.NamedTemporaryFile(dir=self.standin.api_dir, suffix=".tar") as archive:
            sh("podman", "save", "--output", archive.name, name)
            os.chmod(archive.name, 0o644)
            self.alice("sh", "-c", f"podman container runlabel preload {self.image} < /api/{Path(archive.name).name}")

    def helper_log(self) -> str:
        """What pipglr-helper.service (the helper the image carries) did at this boot."""
        return self.outer("journalctl", "--no-pager", "--output", "cat", "-u", "pipglr-helper.service").stdout

    def runner_log(self) -> str:
        return self.outer("journalctl", "--no-pager", "-u", "runner.service").stdout


@pytest.fixture(scope="module")
def world(image):
    standin = StandIn(BASE, volumes=(VOLUME,))
    try:
        standin.start()
        w = World(standin, image, Coordinator(standin, f"reg-{uuid.uuid4().hex}").start())
        standin.load_image("alice", image)
        yield w
    finally:
        standin.close()


def runners_in(config_text: str) -> int:
    return config_text.count("[[runners]]")


def runner_blocks(config_text: str) -> list[str]:
    """Each [[runners]] table of a config.toml as written, the top-level settings first."""
    return [block.strip() for block in config_text.split("[[runners]]")]


def test_register_with_a_wrong_token_is_refused(world):
    world.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input="not-the-token\n")
    world.alice("touch", "config.toml")
    result = world.alice("podman", "container", "runlabel", "register", world.image, "--", "--url", URL, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "403" in output and "registration token" in output, output
    assert runners_in(world.alice("cat", "config.toml").stdout) == 0
    world.alice("podman", "secret", "rm", "REGISTRATION_TOKEN")


def test_register_twice_through_the_runlabel(world):
    world.coordinator("POST", "/_test/config", {"token_ttl": 90})  # tokens GitLab will want rotated
    world.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=world.registration_token + "\n")
    # Two runners, two jobs at a time: `concurrent` before register, as the README says.
    world.alice("sh", "-c", "echo 'concurrent = 2' > config.toml")
    bad = world.alice("env", "PIPGLR_PULL_POLICY=sometimes", "podman", "container", "runlabel", "register",
                      world.image, "--", "--url", URL, check=False)
    assert bad.returncode != 0 and "'sometimes' is not a pull policy" in bad.stderr, bad.stderr
    assert world.alice("cat", "config.toml").stdout == "concurrent = 2\n"
    # e2e-1 as this test image says (if-not-present); e2e-2 with the product's default, given at register.
    for name, policy in (("e2e-1", ""), ("e2e-2", "always if-not-present")):
        said = world.alice("env", f"PIPGLR_PULL_POLICY={policy}", "podman", "container", "runlabel", "register",
                           world.image, "--", "--url", URL, "--name", name)
        if name == "e2e-1":
            first = world.alice("cat", "config.toml").stdout
    assert "may run privileged" in said.stderr and "no syscall filter" in said.stderr, said.stderr
    assert "registration token in secret REGISTRATION_TOKEN (deprecated" in said.stderr, said.stderr
    config = world.alice("cat", "config.toml").stdout
    assert runners_in(config) == 2
    assert runner_blocks(config)[:2] == runner_blocks(first), "the second register changed the first runner"
    assert world.alice("stat", "-c", "%a", "config.toml").stdout.strip() == "600", "tokens readable by others"
    for expected in (f'host = "unix://{NESTED_SOCKET}"', f'helper_image = "{HELPER_WRITTEN}"',
                     "FF_NETWORK_PER_BUILD = true", 'volumes = ["/cache", ', "token_expires_at"):
        assert expected in config, f"{expected} missing from config.toml:\n{config}"
    assert "network_mode" not in config, "a network_mode would turn the network per job off"
    policies = [line.strip() for line in config.splitlines() if line.strip().startswith("pull_policy")]
    assert policies == ['pull_policy = ["if-not-present"]', 'pull_policy = ["always", "if-not-present"]'], policies
    assert len(world.state()["runners"]) == 2
    assert config.startswith("concurrent = 2\n"), config[:200]
    world.alice("podman", "secret", "rm", "REGISTRATION_TOKEN")


def test_run_without_the_config_secret_says_what_to_create(world):
    result = world.alice("podman", "container", "runlabel", "run", world.image, check=False)
    assert result.returncode != 0
    assert "config.toml" in result.stderr and "no such secret" in result.stderr, result.stderr
    world.alice("podman", "rm", "--force", "--ignore", "pipglr")


def test_setup_and_run_as_the_readme_says(world):
    world.alice("podman", "secret", "create", "config.toml", "config.toml")
    for label in ("setupstorage", "setupcache"):
        world.alice("podman", "container", "runlabel", label, world.image)
    world.preload(HELPER)  # the helper the build made, into pipglr-storage before the first start
    world.alice("podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    world.load_nested(BASE)
    listed = world.outer(*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert HELPER in listed, listed
    # The preloaded helper is there: the one the image carries is not loaded again (no boot time spent).
    assert "nothing loaded" in world.helper_log(), world.helper_log()
    stored = world.alice("cat", "config.toml").stdout
    dumped = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    assert dumped == stored


def test_a_job_runs_nested_and_uses_the_cache(world):
    job = world.wait_job(world.add_job("id", "echo e2e-cache > /cache/e2e.txt", "cat /cache/e2e.txt"))
    assert job["state"] == "success", job["trace"][-3000:]
    assert "uid=0(root)" in job["trace"]
    assert "e2e-cache" in job["trace"]
    assert "Job succeeded" in job["trace"]


def test_offline_the_default_pull_policy_falls_back_to_the_preloaded_images(world):
    """No registry is reachable: "always" fails for the job image and the helper, "if-not-present" acts."""
    e2e_2 = next(r["id"] for r in world.state()["runners"] if r["description"] == "e2e-2")
    job = world.wait_job(world.coordinator("POST", "/_test/jobs", {"script": ["echo offline-ok"], "image": BASE,
                                                                   "runner_id": e2e_2})["id"])
    assert job["state"] == "success", job["trace"][-3000:]
    assert 'Failed to pull image with policy "always"' in job["trace"], job["trace"][-3000:]
    assert 'Using locally found image version due to "if-not-present" pull policy' in job["trace"]
    assert "offline-ok" in job["trace"]


def test_a_failing_job_is_reported_failed(world):
    job = world.wait_job(world.add_job("echo about to fail", "exit 1"))
    assert job["state"] == "failed"
    assert job["exit_code"] == 1
    assert "about to fail" in job["trace"] and "exit code 1" in job["trace"]


def test_two_jobs_run_at_the_same_time(world):
    ids = [world.add_job("sleep 8", "echo done"), world.add_job("sleep 8", "echo done")]
    jobs = [world.wait_job(i) for i in ids]
    assert [j["state"] for j in jobs] == ["success", "success"]
    # Both registered runners ask for jobs (which one takes a job is gitlab-runner's choice).
    assert {r["runner_id"] for r in world.state()["requests"]} >= {1, 2}
    latest_start = max(j["started_at"] for j in jobs)
    earliest_end = min(j["finished_at"] for j in jobs)
    assert latest_start < earliest_end, f"jobs did not overlap: {jobs}"


def test_a_job_may_start_3000_processes(world):
    """The run label sets no task limit on the outer container (podman's default is 2048 for
    systemd, podman, the runner and every job together, where the pids controller is delegated)."""
    job = world.wait_job(world.add_job("for i in $(seq 3000); do sleep 15 & done",
                                       "echo \"tasks: $(ls /proc | grep -c '^[0-9]')\"", "wait", "echo all-done"))
    assert job["state"] == "success", job["trace"][-2000:]
    tasks = int(job["trace"].split("tasks: ")[-1].split()[0])
    assert tasks >= 3000 and "all-done" in job["trace"]
    assert world.alice("podman", "inspect", "--format", "{{.HostConfig.PidsLimit}}", "pipglr").stdout.strip() == "0"


def nested_leftovers(world) -> list[str]:
    """Nested containers, and volumes other than the jobs' caches."""
    containers = world.outer(*PODMAN, "ps", "--all", "--format", "{{.Names}}", check=True).stdout.split()
    volumes = world.outer(*PODMAN, "volume", "ls", "--format",
                          '{{.Name}}={{index .Labels "com.gitlab.gitlab-runner.type"}}', check=True).stdout.split()
    return containers + [v for v in volumes if not v.endswith("=cache")]


def kept_in_cache_volumes(world) -> str:
    """What jobs wrote to /cache/e2e.txt, read from the nested podman's volumes (on pipglr-cache).
    gitlab-runner 19 names a cache volume from the runner's token, system ID and project: after a
    token rotation, or for the other registered runner, a job gets a new volume; the old one stays."""
    return world.outer("sh", "-c", f"cat {NESTED_VOLUMES}/*/_data/e2e.txt").stdout


def _system_ids(world) -> set[str]:
    return {r["system_id"] for r in world.state()["requests"] if r["runner_id"]}


def test_token_rotation_survives_a_restart(world):
    def rotated():
        return {e["runner_id"] for e in world.state()["events"] if e["kind"] == "token-reset"} == {1, 2}
    wait_for(rotated, 150, interval=2, what="both runners to rotate their tokens")
    system_ids = _system_ids(world)
    assert len(system_ids) == 1 and next(iter(system_ids)).startswith("s_")
    live = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    assert live != world.alice("cat", "config.toml").stdout, "dumpconfig must show the rotated live config"

    world.alice("podman", "stop", "pipglr")
    world.alice("podman", "start", "pipglr")
    world.wait_booted()
    requests_before = len(world.state()["requests"])
    job = world.wait_job(world.add_job("echo after-the-restart"))
    assert job["state"] == "success", job["trace"][-2000:]
    assert "e2e-cache" in kept_in_cache_volumes(world), "the cache volume did not survive the restart"
    after = [r for r in world.state()["requests"][requests_before:] if r["runner_id"]]
    assert after and {r["system_id"] for r in after} == system_ids, "system ID changed across the restart"


def coordinator_now() -> str:
    """Now, as the coordinator writes times ("at", "finished_at"): to the second, UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The upgrade's gitlab-runner: this image's module source stamped as another version (runner.from_gomodule's
# stamp; no second release is reachable here). It and its helper report it, so the runner expands the helper's
# name to it as a real upgrade's runner does.
NEW_VERSION = "19.4.1"


def test_upgrade_to_another_runner_version_while_a_job_runs(world):
    """docs/using.md "Upgrading": podman stop (the running job finishes, no nested container is left), rm,
    runlabel run NEW. The new image's
    gitlab-runner is another version; pipglr-storage lacks its helper and no registry is reachable: the image
    brings it, and the next job runs with it and finds the cache the job before the upgrade wrote; the
    registration (tokens, system ID) and the job image stay."""
    from pipglr_builder import config, helper_image, runner
    # A cache volume's name follows the runner's token: no more rotations, so both jobs share the volume.
    world.coordinator("POST", "/_test/config", {"token_ttl": None})
    stamped = runner.from_gomodule(config.load(None), "amd64", stamp=NEW_VERSION)
    new_helper = helper_image.names(config.load(None, {"runner_version": NEW_VERSION}), "amd64")[0]
    assert new_helper.endswith(f":x86_64-v{NEW_VERSION}") and new_helper != HELPER
    tag = f"t-upgrade-{uuid.uuid4().hex[:8]}"
    new = f"{IMAGE_NAME}:{tag}"
    cli("build", "--image-name", IMAGE_NAME, "--tags", tag, "--prune-interval", "weekly", "--runner-source", "file",
        "--runner-file", str(stamped), "--runner-sha256", runner.sha256_of(stamped), "--runner-version", NEW_VERSION,
        "--helper-sha256", runner.sha256_of(runner.helper_binary(stamped, "amd64")),
        "--pull-policy", "if-not-present")
    try:
        world.standin.load_image("alice", new)
        wait_for(lambda: all(r["token_expires_at"] is None for r in world.state()["runners"]), 150, interval=2,
                 what="both runners to take a token that does not expire")
        system_ids = _system_ids(world)
        tokens = {r["id"]: r["token"] for r in world.state()["runners"]}
        nested = world.outer(*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
        assert HELPER in nested and new_helper not in nested, nested

        # A job is running when the user upgrades; its output line (not its command) says the sleep began.
        # podman stop (as a host shutdown does): the runner's graceful stop, within the container's stop timeout.
        stop_timeout = world.alice("podman", "inspect", "--format", "{{.Config.StopTimeout}}", "pipglr").stdout
        assert int(stop_timeout) > 60, f"podman would kill running jobs after {stop_timeout} s"
        kept = f"kept-{uuid.uuid4().hex[:8]}"
        job_id = world.add_job(f"echo {kept} > /cache/upgrade.txt", 'echo "sleep-$((1 + 1))"', "sleep 20",
                               "echo finished-during-the-upgrade", runner_id=1)
        wait_for(lambda: "sleep-2" in world.state()["jobs"][str(job_id)]["trace"], 90, interval=1,
                 what="the job to reach its sleep")
        stop_began = coordinator_now()
        world.alice("podman", "stop", "pipglr")
        job = world.state()["jobs"][str(job_id)]  # podman stop returned: the runner had finished the job
        assert job["state"] == "success", job["trace"][-2000:]
        assert "finished-during-the-upgrade" in job["trace"] and job["finished_at"] >= stop_began, job
        world.alice("podman", "rm", "pipglr")
        upgraded_at = coordinator_now()
        world.alice("podman", "container", "runlabel", "run", new)
        world.wait_booted()
        assert nested_leftovers(world) == [], "the stop left nested containers or volumes behind"

        assert world.outer("grep", "OnCalendar=weekly", "/etc/systemd/system/pipglr-prune.timer").returncode == 0
        said = world.outer("gitlab-runner", "--version", check=True).stdout
        assert re.search(rf"^Version:\s+{re.escape(NEW_VERSION)}$", said, re.MULTILINE), said
        carried = world.outer("cat", f"{HELPER_DIR}/image-id", check=True).stdout.strip()
        assert f"loaded {carried[:12]} as {new_helper}" in world.helper_log(), world.helper_log()
        job = world.wait_job(world.add_job("cat /cache/upgrade.txt", "echo after-the-upgrade", runner_id=1))
        assert job["state"] == "success", job["trace"][-2000:]
        assert job["runner_id"] == 1 and kept in job["trace"], "the cache written before the upgrade is gone"
        # gitlab-runner names the helper it runs: the one the new image brought, under the new version's name.
        used = re.search(rf"Using docker image (?:sha256:)?{carried} for {re.escape(new_helper)} ", job["trace"])
        assert used, job["trace"][-3000:]
        after = [r for r in world.state()["requests"] if r["runner_id"] and r["at"] >= upgraded_at]
        assert after and {r["version"] for r in after} == {NEW_VERSION}, after[-3:]
        assert {r["system_id"] for r in after} == system_ids, "system ID changed across the upgrade"
        assert {r["id"]: r["token"] for r in world.state()["runners"]} == tokens, "a runner lost its token"
        assert "e2e-cache" in kept_in_cache_volumes(world)
    finally:
        sh("podman", "rmi", "--force", new, check=False)


def test_setup_runlabels_again_leave_a_used_volume_alone(world):
    """setupstorage/setupcache run again on volumes in use: nested image layers keep their owners."""
    not_podmans = (f"find /home/podman/.local/share/containers/storage/overlay {NESTED_VOLUMES} -xdev ! -user podman "
                   "-printf '%u %p\\n' | sort | md5sum; find /home/podman/.local/share/containers/storage/overlay "
                   "-xdev ! -user podman | wc -l")
    before = world.outer("sh", "-c", not_podmans).stdout
    assert int(before.split()[-1]) > 0, "a job image's layers hold files of other users (e.g. _apt)"
    for label in ("setupstorage", "setupcache"):
        world.alice("podman", "container", "runlabel", label, world.image)
    assert world.outer("sh", "-c", not_podmans).stdout == before
    job = world.wait_job(world.add_job("echo after-setup-again > /cache/setup.txt", "cat /cache/setup.txt"))
    assert job["state"] == "success", job["trace"][-2000:]
    assert "e2e-cache" in kept_in_cache_volumes(world)


def runner_cache_volumes(world) -> list[str]:
    names = world.outer(*PODMAN, "volume", "ls", "--format", "{{.Name}}", check=True).stdout.split()
    return [n for n in names if n.startswith("runner-") and "-cache-" in n]


def test_resetcache_runlabel_drops_every_cache_and_the_next_job_starts_empty(world):
    assert "e2e-cache" in kept_in_cache_volumes(world) and runner_cache_volumes(world)
    said = world.alice("podman", "container", "runlabel", "resetcache", world.image).stdout
    assert "resetcache: removed volume runner-" in said, said
    assert runner_cache_volumes(world) == [], said
    assert kept_in_cache_volumes(world) == "", "cache data left on pipglr-cache"
    # The same project's next job gets a cache volume of the same name again: new and empty.
    job = world.wait_job(world.add_job("test ! -e /cache/e2e.txt", "echo after-reset > /cache/e2e.txt"))
    assert job["state"] == "success", job["trace"][-2000:]
    assert runner_cache_volumes(world)


def test_the_prune_repairs_what_the_old_readme_reset_left(world):
    """The README's reset before resetcache: pipglr-cache removed and made again under the same
    pipglr-storage. The nested podman kept the volume records, and every container mounting one
    (gitlab-runner's jobs with that cache) failed, until the prune removed those records."""
    caches = runner_cache_volumes(world)
    assert caches
    world.alice("podman", "stop", "pipglr")
    world.alice("podman", "rm", "pipglr")
    world.alice("podman", "volume", "rm", "pipglr-cache")
    world.alice("podman", "container", "runlabel", "setupcache", world.image)
    world.alice("podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    assert runner_cache_volumes(world) == caches
    # podman says "reading contents of volume" for a volume never mounted yet; for one used before
    # (as these), crun: "cannot stat `.../_data`: No such file or directory".
    broken = world.outer(*PODMAN, "run", "--rm", "--volume", f"{caches[0]}:/cache", BASE, "true")
    assert broken.returncode != 0, broken
    assert f"{caches[0]}/_data" in broken.stderr and "no such file or directory" in broken.stderr.lower(), broken
    world.outer("systemctl", "start", "pipglr-prune.service", check=True)
    log = world.outer("journalctl", "--no-pager", "--output", "cat", "-u", "pipglr-prune.service").stdout
    for name in caches:
        assert f"removed volume {name}: its data directory {NESTED_VOLUMES}/{name}/_data is gone" in log, log
    assert runner_cache_volumes(world) == [], log
    job = world.wait_job(world.add_job("test ! -e /cache/e2e.txt", "echo after-repair > /cache/e2e.txt"))
    assert job["state"] == "success", job["trace"][-2000:]


def test_debug_switches_without_rebuilding(world):
    world.alice("podman", "rm", "--force", "pipglr")
    world.alice("env", "RUNNER_LOG_LEVEL=debug", "PODMAN_LOG_LEVEL=debug",
                "podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    assert "RUNNER_LOG_LEVEL=debug" in world.outer("cat", RUN_ENV).stdout
    wait_for(lambda: "--log-level debug run" in world.outer("ps", "-o", "args=", "-u", "runner").stdout, 60,
             what="gitlab-runner to run with --log-level debug")
    world.outer("runuser", "-u", "runner", "--", "curl", "-sS", "--unix-socket", NESTED_SOCKET,
                "http://d/_ping", check=True)  # socket activation starts the service
    services = world.outer("ps", "-o", "args=", "-u", "podman").stdout
    assert "--log-level=debug system service" in services, services
    job = world.wait_job(world.add_job("echo still working"))
    assert job["state"] == "success", job["trace"][-2000:]


def test_logs_runlabel_collects_a_bug_report_without_tokens(world):
    report = world.alice("podman", "container", "runlabel", "logs", world.image).stdout
    for section in ("image and versions", "pipglr services", "runner config (secrets redacted)",
                    "journal: runner.service", "journal: podman", "journal: system"):
        assert f"===== {section}" in report, section
    assert "[REDACTED]" in report
    tokens = [r["token"] for r in world.state()["runners"]]
    assert tokens and not any(t in report for t in tokens), "a runner token leaked into the log bundle"
    # Where users look first: `podman logs pipglr` (rootless, as docs/using.md runs it) holds the journal, redacted.
    shown = world.alice("podman", "logs", "pipglr")
    text = shown.stdout + shown.stderr
    for expected in ("Checking for jobs", "podman.service", "runner.service"):
        assert expected in text, f"{expected} missing from podman logs:\n{text[-3000:]}"
    assert not any(t in text for t in tokens), "a runner token leaked into podman logs"


def test_unregister_runlabel_removes_the_runner_everywhere(world):
    world.alice("podman", "container", "runlabel", "unregister", world.image, "--", "--name", "e2e-2")
    assert [r["id"] for r in world.state()["runners"]] == [1]
    assert any(e["kind"] == "unregister" and e["runner_id"] == 2 for e in world.state()["events"])
    live = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    assert runners_in(live) == 1 and 'name = "e2e-1"' in live


SECOND = "second"  # another directory of alice's: a config.toml registered into from nothing


def register_in(world, *args: str, check: bool = True):
    """The register runlabel run in SECOND (the runlabel writes ./config.toml)."""
    return world.alice("env", "-C", SECOND, "podman", "container", "runlabel", "register", world.image,
                       "--", "--url", URL, *args, check=check)


def token_secret(world, token: str) -> None:
    """The REGISTRATION_TOKEN secret, holding TOKEN as `echo TOKEN | podman secret create` leaves it."""
    world.alice("sh", "-c", "podman secret rm REGISTRATION_TOKEN >/dev/null 2>&1; true")
    world.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=token + "\n")


def test_both_kinds_of_token_register_through_the_runlabel(world):
    """A registration token (deprecated), then a runner created in GitLab (glrt-), into one new config.toml:
    the glrt- token takes gitlab-runner's verify path; server-side settings are refused before anything is
    written; the first runner stays as it was."""
    world.coordinator("POST", "/_test/config", {"token_ttl": None})
    world.alice("mkdir", "-p", SECOND)
    world.alice("touch", f"{SECOND}/config.toml")
    token_secret(world, world.registration_token)
    said = register_in(world, "--name", "legacy")
    assert "registration token in secret REGISTRATION_TOKEN (deprecated" in said.stderr, said.stderr
    first = world.alice("cat", f"{SECOND}/config.toml").stdout
    assert runners_in(first) == 1

    verified_before = sum(e["kind"] == "verify" for e in world.state()["events"])
    created = world.coordinator("POST", "/_test/runners", {"description": "created in GitLab's UI"})
    token_secret(world, "glrt-not-this-runner")
    wrong = register_in(world, "--name", "wrong", check=False)
    assert wrong.returncode != 0 and "Failed to verify the runner" in wrong.stdout + wrong.stderr
    token_secret(world, created["token"])
    refused = register_in(world, "--name", "tagged", "--tag-list", "a,b", "--locked=false", "--paused", check=False)
    # runlabel exits 125 whenever its command fails, and names the command's own status.
    assert refused.returncode != 0 and "failed: exit status 2" in refused.stderr, refused.stdout + refused.stderr
    assert "--tag-list --locked --paused" in refused.stderr and "GitLab's UI" in refused.stderr, refused.stderr
    assert world.alice("cat", f"{SECOND}/config.toml").stdout == first
    on_the_command_line = register_in(world, "--token", "glrt-x", check=False)
    assert "give the token in the secret REGISTRATION_TOKEN, not as --token" in on_the_command_line.stderr

    said = register_in(world, "--name", "created-in-ui")
    output = said.stdout + said.stderr
    assert "runner authentication token (glrt-) in secret REGISTRATION_TOKEN" in said.stderr, said.stderr
    assert "legacy-compatible" not in output and "Verifying runner... is valid" in output, output
    config = world.alice("cat", f"{SECOND}/config.toml").stdout
    assert runners_in(config) == 2
    assert runner_blocks(config)[:2] == runner_blocks(first), "the second register changed the first runner"
    glrt = runner_blocks(config)[2]
    assert f"id = {created['id']}\n" in glrt and f'token = "{created["token"]}"' in glrt, "not the created runner"
    # One verify: the refused attempt never reached GitLab; no POST /runners with the glrt- token.
    verified = [e for e in world.state()["events"] if e["kind"] == "verify"][verified_before:]
    assert [e["runner_id"] for e in verified] == [created["id"]]
    # register's container has no machine-id (the image carries none, so hosts differ): gitlab-runner then
    # sends a random r_ system ID; the booted runner sends s_ from the machine-id systemd makes (below).
    assert re.fullmatch(r"[rs]_[0-9A-Za-z]{12}", verified[0]["system_id"]), verified[0]["system_id"]
    assert {"token", "system_id", "info"} <= set(verified[0]["fields"])
    assert {"name", "version", "executor", "features"} <= set(verified[0]["info"])
    world.alice("podman", "secret", "rm", "REGISTRATION_TOKEN")


def test_jobs_run_with_the_config_register_wrote_unedited(world):
    """SECOND/config.toml exactly as register wrote it becomes the config.toml secret: both runners take jobs."""
    world.alice("podman", "rm", "--force", "pipglr")
    world.alice("podman", "secret", "rm", "config.toml")
    world.alice("podman", "secret", "create", "config.toml", f"{SECOND}/config.toml")
    world.alice("podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    runners = {r["description"]: r["id"] for r in world.state()["runners"]}
    for description in ("legacy", "created in GitLab's UI"):
        job = world.wait_job(world.add_job("echo ran", runner_id=runners[description]))
        assert job["state"] == "success", job["trace"][-2000:]
        assert job["runner_id"] == runners[description]
    # Unregistering a runner created in GitLab removes this machine (its runner manager), not the runner.
    world.alice("podman", "container", "runlabel", "unregister", world.image, "--", "--name", "created-in-ui")
    created_id = runners["created in GitLab's UI"]
    assert any(e["kind"] == "unregister-manager" and e["runner_id"] == created_id for e in world.state()["events"])
    assert created_id in [r["id"] for r in world.state()["runners"]]
    live = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    assert runners_in(live) == 1 and 'name = "legacy"' in live


def test_a_config_from_pipglr_runs_its_next_job(world):
    """docs/using.md "Coming from pipglr": a secret with pipglr's socket path and cache_dir = "/cache" is converted
    in the live config at start; the next job, with a cache, succeeds, and the runner's journal names each change."""
    live = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    pipglr = (live.replace(f'host = "unix://{NESTED_SOCKET}"', 'host = "unix:///home/runner/podman.sock"')
              .replace("  [runners.docker]\n", '  [runners.docker]\n    cache_dir = "/cache"\n'))
    assert pipglr.count("/home/runner/podman.sock") == pipglr.count('cache_dir = "/cache"') == runners_in(live) == 1
    world.alice("podman", "rm", "--force", "pipglr")
    world.alice("podman", "secret", "rm", "config.toml")
    world.alice("podman", "secret", "create", "config.toml", "-", input=pipglr)
    world.alice("podman", "container", "runlabel", "run", world.image)
    world.wait_booted()
    job = world.wait_job(world.add_job("echo switched > /cache/pipglr.txt", "cat /cache/pipglr.txt"))
    assert job["state"] == "success", job["trace"][-2000:]
    log = world.runner_log()
    assert "converted pipglr's podman socket" in log and "dropped pipglr's cache_dir" in log, log[-3000:]
    converted = world.alice("podman", "container", "runlabel", "dumpconfig", world.image).stdout
    assert "/home/runner" not in converted and 'cache_dir = "/cache"' not in converted, converted


def test_unreachable_coordinator_is_retried_and_logged(world):
    sh("podman", "exec", world.standin.name, "pkill", "-f", SCRIPT.name)
    def reported():
        log = world.runner_log()
        return log if "connection refused" in log else None
    log = wait_for(reported, 120, interval=2, what="the runner to report the unreachable coordinator")
    assert "WARNING: Checking for jobs... failed" in log and f"{URL}/api/v4/jobs/request" in log, log[-3000:]
    assert world.outer("systemctl", "is-active", "runner.service").stdout.strip() == "active"
