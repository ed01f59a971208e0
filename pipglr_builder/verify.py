"""verify: boot an image the way its users run it and run the check suite on it.

Full profile (the native platform): on a stand-in user host (see standin.py),
as an ordinary user with subuid count 65539, exactly as the README says:
runlabel setupstorage, setupcache, the config.toml secret, runlabel run; then
the testinfra suite in checks/ runs against that rootless container.
Emulated profile (a foreign platform under qemu): a rootful boot and the
lighter checks (users, units, runner and podman versions).
Everything it starts is removed at the end, also when interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import types
import uuid
from pathlib import Path

import pytest

from . import processes
from .base_image import native_arch, suite_tag
from .boot import RootfulBoot, booted_state
from .config import SETTINGS_BY_KEY
from .errors import PipglrError
from .standin import StandIn

CHECKS = Path(__file__).resolve().parent / "checks"
CONTAINER = "pipglr"  # the name the run runlabel gives the outer container
METRICS = 'listen_address = "127.0.0.1:9252"'  # top-level (metrics): the session server must not touch it
# A runner for the health check (a host without runners is unhealthy and restarted): never registered, its
# GitLab is a closed port on the container's own loopback, so it asks for jobs and gets none.
RUNNER = ('[[runners]]\n  name = "verify"\n  url = "http://127.0.0.1:9"\n  token = "glrt-verify-not-registered"\n'
          '  executor = "docker"\n')


@dataclasses.dataclass
class Target:
    """What the checks run against (handed to them as the `target` fixture)."""

    profile: str
    image: str
    container: str
    env: dict[str, str]
    labels: dict[str, str]
    secret_marker: str = ""
    job_image: str = ""
    standin: StandIn | None = None

    def podman_argv(self, interactive: bool = False) -> list[str]:
        """The podman CLI of the storage holding the outer container. On a stand-in host it is alice's own
        podman there, a local client: podman's remote exec (the API socket in self.env) loses a command's
        output now and then (podman issues #21741, #25855; seen here in about 1 exec of 150 under load)."""
        if self.standin is None:
            return ["podman"]
        return [*self.standin.user_argv("alice", interactive=interactive), "podman"]

    def podman(self, *args: str, check: bool = False, input: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
        """podman CLI against the storage holding the outer container."""
        env = None if self.standin is not None else self.env
        return processes.execute([*self.podman_argv(input is not None), *args], check=check, input=input, env=env,
                                 timeout=timeout)

    def exec_args(self, user: str = "root", interactive: bool = False, detach: bool = False) -> list[str]:
        """`podman exec` arguments that run a command in the outer container as USER."""
        uid = self.labels["io.pipglr.podman-uid"]
        env = ["--env", f"XDG_RUNTIME_DIR=/run/user/{uid}"] if user == "podman" else []
        return ["exec", *(["--interactive"] if interactive else []), *(["--detach"] if detach else []),
                "--user", user, *env, self.container]

    def exec(self, *argv: str, user: str = "root", check: bool = False) -> subprocess.CompletedProcess:
        return self.podman(*self.exec_args(user), *argv, check=check)


class _Collector:
    """pytest plugin: records one outcome per check."""

    def __init__(self):
        self.results: list[tuple[str, str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            name = report.nodeid.split("::", 1)[-1]
            detail = ""
            if report.failed:
                detail = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                             else report.longrepr).splitlines()[0][:160]
            self.results.append((name, report.outcome, detail))


def _labels(image: str, env: dict[str, str] | None = None) -> dict[str, str]:
    out = processes.execute(["podman", "image", "inspect", image], env=env).stdout
    return json.loads(out)[0].get("Labels") or {}


def setup_full(image: str, marker: str, cleanup: list, home_fs: Path | None = None) -> Target:
    """Start IMAGE on a stand-in host as user alice, through the runlabels (HOME_FS: see StandIn)."""
    base = suite_tag(_labels(image).get("io.pipglr.base-suite", SETTINGS_BY_KEY["base_suite"].default), native_arch())
    base_there = processes.execute(["podman", "image", "exists", base], check=False).returncode == 0
    standin = StandIn(base if base_there else image, home_fs=home_fs)
    cleanup.append(standin.close)  # before anything starts, so an interruption cleans up too
    target = Target("full", image, CONTAINER, {}, _labels(image), secret_marker=marker, job_image=image,
                    standin=standin)
    processes.say(f"verify: starting the stand-in user host {standin.name}")
    standin.start()
    processes.say(f"verify: copying {image} to user alice")
    standin.load_image("alice", image)
    for label in ("setupstorage", "setupcache"):
        processes.say(f"verify: podman container runlabel {label} {image}  (as alice)")
        standin.as_user("alice", ["podman", "container", "runlabel", label, image])
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"],
                    input=f"# {marker}\nconcurrent = 1\ncheck_interval = 3\n{METRICS}\n{RUNNER}")
    processes.say(f"verify: podman container runlabel run {image}  (as alice)")
    standin.as_user("alice", ["podman", "container", "runlabel", "run", image])
    target.env = standin.start_api("alice")
    processes.wait_for(lambda: booted_state([*target.podman_argv(), "exec", CONTAINER]),
                       180, what="systemd in the pipglr container to boot")
    processes.say("verify: copying a job image into the nested storage")
    _load_nested(target, image)
    return target


def _load_nested(target: Target, image: str) -> None:
    """IMAGE into user podman's storage in the outer container (through alice's podman)."""
    processes.copy_image(image, [*target.podman_argv(interactive=True), *target.exec_args("podman", interactive=True),
                                 "podman", "load", "--quiet"])


def _setup_emulated(image: str, arch: str, cleanup: list) -> Target:
    boot = RootfulBoot(image, arch=arch)
    cleanup.append(boot.close)
    processes.say(f"verify: booting {image} for {arch} as {boot.name} (emulated profile, rootful)")
    boot.start(timeout=600)
    return Target("emulated", image, boot.name, dict(os.environ), _labels(image))


@dataclasses.dataclass
class Verified:
    profile: str
    results: list[tuple[str, str, str]]  # (check, outcome, first line of the failure)
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(outcome == "passed" for _, outcome, _ in self.results)

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome, _ in self.results if outcome != "passed"]


# What each profile checks, in words: a nightly writes it into the label io.pipglr.verified of each platform's image
# (pushed only when those checks passed), so a host of the fleet can see what its platform was proven to do.
PROFILE_CHECKS = {
    "full": "full profile: the README's runlabels as an ordinary user of a rootless stand-in host, nested jobs, "
            "the privilege hook, the podman socket",
    "emulated": "emulated profile under qemu-user: a rootful boot, users, units, gitlab-runner and podman versions; "
                "no nested job (qemu-user cannot create the user namespaces rootless podman needs)",
}


def profile_for(arch: str) -> str:
    """The profile verify runs for ARCH on this machine: full on its own platform, emulated on the others."""
    return "full" if arch == native_arch() else "emulated"


def verify(image: str, arch: str | None = None) -> Verified:
    """Run the checks on IMAGE and print a summary per check."""
    processes.require("podman", "buildah")
    if processes.execute(["podman", "image", "exists", image], check=False).returncode != 0:
        raise PipglrError(f"image {image} not found in local storage: build it first (./build.py build)")
    arch = arch or native_arch()
    profile = profile_for(arch)
    cleanup = []
    started = time.monotonic()
    try:
        if profile == "full":
            target = setup_full(image, f"pipglr-verify-secret-{uuid.uuid4().hex}", cleanup)
        else:
            target = _setup_emulated(image, arch, cleanup)
        collector = _Collector()
        provider = types.ModuleType("pipglr_verify_target")  # hands the target to the checks
        provider.target = pytest.fixture(scope="session", name="target")(lambda: target)
        args = [str(CHECKS), "-q", "-p", "no:cacheprovider", "--rootdir", str(CHECKS), "-c", os.devnull,
                *(["-m", "not full"] if profile == "emulated" else [])]
        processes.say("verify: running the checks")
        code = pytest.main(args, plugins=[collector, provider])
        if code == pytest.ExitCode.INTERRUPTED:  # pytest caught our Ctrl-C/SIGTERM: pass the stop on
            raise KeyboardInterrupt
    finally:
        for close in cleanup:
            close()
    result = Verified(profile, collector.results, time.monotonic() - started)
    if code not in (0, 1) and not result.failed:  # pytest itself failed (usage, collection)
        result.results.append(("check suite", "failed", f"pytest exit code {code}"))
    _summary(image, arch, profile, result.results, result.seconds)
    return result


def _summary(image: str, arch: str, profile: str, results: list[tuple[str, str, str]], seconds: float) -> None:
    processes.say(f"\nverify {image} ({arch}, {profile} profile) in {seconds:.0f}s:")
    for name, outcome, detail in results:
        mark = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}.get(outcome, outcome)
        processes.say(f"  {mark}  {name}" + (f"  -- {detail}" if detail else ""))
    passed = sum(1 for r in results if r[1] == "passed")
    processes.say(f"{passed} passed, {len(results) - passed} failed")
