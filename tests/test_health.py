"""The health check in the booted image, started as users start it: `runlabel run` on the stand-in host.

Healthy once booted, also from idle (the nested podman service exited, started again by the check's
ping through its socket); with runner.service stopped, `podman healthcheck run` turns unhealthy after the start
period and the retries, the reason is in podman's health log and the container's journal, and podman
restarts the container (the run label's --health-on-failure restart), which comes back healthy; the reason
outlives the restart in `podman logs` (the journal does not: podman mounts a tmpfs on /var/log/journal). The script's
decisions one by one are tested in tests/test_healthcheck.py.
"""

from __future__ import annotations

import json

import pytest

from pipglr_builder import render
from pipglr_builder.processes import wait_for
from pipglr_builder.standin import StandIn
from pipglr_builder.verify import RUNNER as NEVER_REGISTERED

from .conftest import BASE

pytestmark = pytest.mark.slow
STOPPED = "runner.service is not running (inactive, dead)"


def test_health_check_through_the_run_label(image):
    standin = StandIn(BASE)
    try:
        standin.start()

        def alice(*argv: str, check: bool = True, input: str | None = None):
            return standin.as_user("alice", list(argv), check=check, input=input)

        def health() -> dict:
            state = json.loads(alice("podman", "container", "inspect", "pipglr").stdout)[0]["State"]
            return {"started": state["StartedAt"], **(state.get("Health") or state.get("Healthcheck"))}

        def check() -> tuple[int, str]:
            result = alice("podman", "healthcheck", "run", "pipglr", check=False)
            return result.returncode, result.stdout.strip()

        standin.load_image("alice", image)
        alice("podman", "secret", "create", "config.toml", "-", input="concurrent = 1\n" + NEVER_REGISTERED)
        for label in ("setupstorage", "setupcache", "run"):
            alice("podman", "container", "runlabel", label, image)
        test = json.loads(alice("podman", "container", "inspect", "pipglr").stdout)[0]["Config"]["Healthcheck"]["Test"]
        assert test == ["CMD-SHELL", render.HEALTH["cmd"]], test
        standin.wait_booted()
        wait_for(lambda: check()[0] == 0 and health()["Status"] == "healthy", 180, interval=3,
                 what="`podman healthcheck run pipglr` to answer healthy")
        first = health()
        assert first["Log"][-1]["Output"].startswith("pipglr health: ok (runner.service active, the podman socket "
                                                     "answers, 1 runner(s) configured)"), first["Log"][-1]

        # Idle, the nested podman service is not running: podman.socket starts it on a request and it exits
        # when idle (what the idle memory in docs/benchmarks.md counts on). From there a health check, whose
        # ping starts it, is healthy.
        def podman_service(*argv: str) -> list[str]:
            return alice("podman", "exec", "pipglr", "systemctl", "--user", "-M", f"{render.DEFAULT_PODMAN_UID}@",
                         *argv, check=False).stdout.split()
        started = ["show", "podman.service", "--property", "ExecMainStartTimestampMonotonic"]
        wait_for(lambda: podman_service("is-active", "podman.service", "podman.socket") == ["inactive", "active"],
                 120, interval=1, what="the idle nested podman service to exit, its socket listening")
        last_start = podman_service(*started)
        code, out = check()
        assert code == 0, out
        assert podman_service(*started) != last_start, "the health check's ping did not start the podman service"

        # Break it: gitlab-runner stopped. Failures count after the start period; `retries` in a row make the
        # container unhealthy, and podman restarts it.
        alice("podman", "exec", "pipglr", "systemctl", "stop", "runner.service")
        seen: list[tuple[int, str]] = []
        outputs: set[str] = set()
        journals: list[str] = []

        def restarted():
            seen.append(check())
            now = health()
            outputs.update(entry["Output"].strip() for entry in now.get("Log") or [])
            if now["started"] != first["started"]:
                return True
            journals.append(alice("podman", "exec", "pipglr", "journalctl", "--no-pager", "-o", "cat",
                                  "-t", "pipglr-health", check=False).stdout)
            return False
        start_period = int(render.HEALTH["start_period"].removesuffix("s"))
        wait_for(restarted, start_period + 240, interval=5, what="podman to restart the unhealthy pipglr")
        events = alice("podman", "events", "--stream=false", "--filter", "container=pipglr", "--filter",
                       "event=health_status", "--format", "{{.HealthStatus}}").stdout.split()
        assert "unhealthy" in events or (1, "unhealthy") in seen, (events, seen)
        assert f"pipglr health: UNHEALTHY: {STOPPED}" in outputs, outputs

        # Before the restart the reason was in the container's journal.
        assert any(f"UNHEALTHY: {STOPPED}" in journal.splitlines() for journal in journals), journals[-1:]

        # Restarted: booted again, the reason still in `podman logs` (the console service's copy of the
        # journal), runner.service back, healthy.
        standin.wait_booted()
        logs = alice("podman", "logs", "pipglr").stdout
        assert any("pipglr-health" in line and line.endswith(f"UNHEALTHY: {STOPPED}") for line in logs.splitlines()), \
            logs[-3000:]
        wait_for(lambda: check()[0] == 0 and health()["Status"] == "healthy", 180, interval=3,
                 what="the restarted pipglr to be healthy again")
        assert alice("podman", "exec", "pipglr", "systemctl", "is-active", "runner.service").stdout.strip() == "active"
    finally:
        standin.close()
