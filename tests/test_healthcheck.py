"""The image's health check (files/healthcheck): its decisions, run against fixtures on this machine.

The script runs as rendered for the image, with only its two paths (live config, API socket) pointed into a temporary directory. curl, jq, sh and coreutils are the real ones; the nested podman's
socket is a real unix socket served here. Faked on PATH: systemctl (prints a `systemctl show` answer),
setpriv (records the call, then runs the command as this user), gitlab-runner (prints what the real
gitlab-runner 19.4 printed for `--log-format json list`, captured below) and logger (records the
journal line). The booted image is tested in tests/test_health.py.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from pathlib import Path

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools  # runs sh, curl and jq

# What the real gitlab-runner 19.4 printed for `gitlab-runner --log-format json list --config FILE`.
PLATFORM = ('{"arch":"amd64","level":"info","msg":"Runtime platform","os":"linux","pid":30559,'
            '"revision":"fc1f1862","time":"2026-12-04T02:24:40.892419711Z","version":"19.4.0"}')
LISTING = '{"ConfigFile":"%s","level":"info","msg":"Listing configured runners","time":"2026-12-04T02:24:40Z"}'
RUNNER = ('{"Executor":"docker","Token":"glrt-SECRETTOKEN123","URL":"http://127.0.0.1:9","level":"info",'
          '"msg":"%s","time":"2026-12-04T02:24:40.899953763Z"}')
PARSE_ERROR = ('{"level":"warning","msg":"decoding configuration file: toml: line 3 (last key \\"runners.token\\"): '
               'expected a top-level item to end with a newline, comment, or EOF, but got \'glrt-SECRETX\' instead",'
               '"time":"2026-12-04T02:24:41.20095495Z"}')
ACTIVE = "ActiveState=active\nSubState=running\nResult=success\nNRestarts=0\n"
CONFIG = '[[runners]]\n  name = "one"\n  token = "glrt-SECRETTOKEN123"\n  executor = "docker"\n'

FAKES = {
    "systemctl": 'cat "$FAKE/systemctl.out"\n',
    # Options first (as the script gives them), then the command.
    "setpriv": 'echo "$*" | tr "\\n" " " >> "$FAKE/setpriv.log"; echo >> "$FAKE/setpriv.log"\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n',
    # Like the real one: a .runner_system_id appears beside the config it reads; it names that config.
    "gitlab-runner": ('cfg=$5\necho "$*" >> "$FAKE/runner.log"\necho s_0123 > "${cfg%/*}/.runner_system_id"\n'
                      'sed "s|@CONFIG@|$cfg|" "$FAKE/runner.out" >&2\n'),
    "logger": 'echo "$*" >> "$FAKE/journal"\n',
}


class PingHandler(http.server.BaseHTTPRequestHandler):
    answer = b"OK"

    def do_GET(self):
        self.send_response(200 if self.path == "/_ping" else 404)
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args):  # a unix socket has no client address to log
        pass


class Host:
    """The script and its fixtures in DIR."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.fake = tmp / "fake"
        self.bin = tmp / "bin"
        self.state = tmp / "state"
        for d in (self.fake, self.bin, self.state):
            d.mkdir()
        self.live = self.state / "config.toml"
        self.socket = tmp / "podman.sock"
        values = render.template_values(config.load(None))
        values.update(live_config=str(self.live), nested_socket=str(self.socket))
        env = render._environment()
        libexec = tmp / "libexec"
        libexec.mkdir()
        for name in ("healthcheck", "redact-secrets"):
            (libexec / name).write_text(env.get_template(f"files/{name}").render(values))
            (libexec / name).chmod(0o755)  # as the image's Containerfile makes them
        self.script = libexec / "healthcheck"
        for name, body in FAKES.items():
            (self.bin / name).write_text("#!/bin/sh\n" + body)
            (self.bin / name).chmod(0o755)
        self.server: socketserver.UnixStreamServer | None = None
        self.systemctl(ACTIVE)
        self.runner_says(PLATFORM, LISTING % "@CONFIG@", RUNNER % "one", RUNNER % "two words")
        self.live.write_text(CONFIG)

    def systemctl(self, text: str) -> None:
        (self.fake / "systemctl.out").write_text(text)

    def runner_says(self, *lines: str) -> None:
        (self.fake / "runner.out").write_text("".join(line + "\n" for line in lines))

    def serve(self, answer: bytes = b"OK") -> None:
        handler = type("Handler", (PingHandler,), {"answer": answer})
        self.server = socketserver.UnixStreamServer(str(self.socket), handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def check(self) -> tuple[int, str, str]:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.fake)}
        proc = processes.call(["sh", str(self.script)], env=env, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    def said(self, name: str) -> str:
        path = self.fake / name
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path)
    h.serve()
    yield h
    h.close()


def reasons(stderr: str) -> list[str]:
    return [line.removeprefix("pipglr health: UNHEALTHY: ") for line in stderr.splitlines()]


def test_a_host_that_can_run_jobs_is_healthy(host):
    code, out, err = host.check()
    assert (code, err) == (0, ""), err
    assert out == "pipglr health: ok (runner.service active, the podman socket answers, 2 runner(s) configured)\n"
    assert host.said("journal") == "", "a healthy check writes nothing to the journal"


def test_what_runner_can_change_is_reached_as_runner_only(host):
    host.check()
    calls = host.said("setpriv.log").splitlines()
    assert len(calls) == 3, calls  # the socket, the config's presence, the listing
    assert all(c.startswith("--reuid=runner --regid=runner --init-groups --reset-env ") for c in calls), calls
    assert "curl" in calls[0] and str(host.socket) in calls[0]
    # gitlab-runner lists a copy: the state volume gets no second .runner_system_id, and the copy is gone.
    listed = host.said("runner.log").split()[-1]
    assert listed != str(host.live) and not Path(listed).exists()
    assert sorted(p.name for p in host.state.iterdir()) == ["config.toml"]


JOURNAL = "see: podman exec pipglr journalctl -u runner.service"


@pytest.mark.parametrize("state, reason", [
    ("ActiveState=activating\nSubState=auto-restart\nResult=exit-code\nNRestarts=4\n",
     "runner.service is in a restart loop: it failed (exit-code) and systemd restarted it 4 times; " + JOURNAL),
    ("ActiveState=failed\nSubState=failed\nResult=start-limit-hit\nNRestarts=9\n",
     "runner.service failed too often and hit its start limit: systemd no longer restarts it; " + JOURNAL),
    ("ActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=0\n",
     "runner.service failed (exit-code) after 0 restarts; " + JOURNAL),
    ("ActiveState=inactive\nSubState=dead\nResult=success\nNRestarts=0\n",
     "runner.service is not running (inactive, dead)"),
    ("ActiveState=activating\nSubState=start-pre\nResult=success\nNRestarts=0\n",
     "runner.service is still starting (start-pre)"),
    ("", "systemd gave no state for runner.service"),
    # What systemctl prints is data: a value that is not a plain word is not used (nor run).
    ("ActiveState=active;touch${IFS}pwned\nSubState=running\n", "systemd gave no state for runner.service"),
])
def test_runner_service_not_running_is_unhealthy_with_the_reason(host, state, reason):
    host.systemctl(state)
    code, out, err = host.check()
    assert code == 1 and out == ""
    assert reasons(err) == [reason]
    assert host.said("journal") == f"-t pipglr-health -p daemon.warning -- UNHEALTHY: {reason}\n"
    assert not (host.dir / "pwned").exists() and not Path("pwned").exists()


def test_a_socket_that_does_not_answer_is_unhealthy(tmp_path):
    host = Host(tmp_path)  # nothing listens on the socket
    code, _, err = host.check()
    assert code == 1
    [reason] = reasons(err)
    assert reason.startswith(f"the nested podman's API socket {host.socket} does not answer /_ping: curl: (7)"), reason
    host.serve(b"Internal Server Error")
    code, _, err = host.check()
    assert code == 1 and reasons(err) == [(f"the nested podman's API socket {host.socket} does not answer /_ping: "
                                           "Internal Server Error")]
    host.close()


def test_a_config_without_runners_is_unhealthy(host):
    host.runner_says(PLATFORM, LISTING % "@CONFIG@")
    host.live.write_text("concurrent = 1\n")
    code, _, err = host.check()
    assert code == 1 and reasons(err) == [(f"the live configuration {host.live} has no [[runners]]: "
                                          "gitlab-runner takes no jobs")]


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_config_is_unhealthy(host, content):
    if content is None:
        host.live.unlink()
    else:
        host.live.write_text(content)
    code, _, err = host.check()
    assert code == 1 and reasons(err) == [(f"the live configuration {host.live} is missing or empty: "
                                          "gitlab-runner takes no jobs")]
    assert host.said("runner.log") == "", "nothing to list"


def test_a_config_that_does_not_parse_is_unhealthy_and_says_why_without_tokens(host):
    host.runner_says(PLATFORM, PARSE_ERROR)
    code, _, err = host.check()
    assert code == 1
    [reason] = reasons(err)
    assert reason.startswith(f"the live configuration {host.live} does not parse: decoding configuration file: "
                             'toml: line 3 (last key "runners.token")'), reason
    assert "glrt-[REDACTED]" in reason and "SECRETX" not in err + host.said("journal")


def test_a_runner_that_cannot_list_is_unhealthy(host):
    host.runner_says("sh: 1: gitlab-runner: not found")
    code, _, err = host.check()
    assert code == 1 and reasons(err) == [(f"gitlab-runner could not read the live configuration {host.live}: "
                                          "sh: 1: gitlab-runner: not found")]


def test_every_reason_is_given_each_on_its_line(tmp_path):
    host = Host(tmp_path)  # no socket
    host.systemctl("ActiveState=inactive\nSubState=dead\n")
    host.runner_says(PLATFORM, LISTING % "@CONFIG@")
    code, _, err = host.check()
    said = reasons(err)
    assert code == 1 and len(said) == 3, said
    assert said[0].startswith("runner.service is not running") and "/_ping" in said[1] and "[[runners]]" in said[2]
    assert len(host.said("journal").splitlines()) == 3


def test_the_listing_is_parsed_as_json_lines():
    """The script's jq program reads the real runner's JSON log lines: a runner's name is never taken
    for a message (a runner named "Listing configured runners" is still a runner)."""
    lines = [PLATFORM, json.dumps({"msg": "Listing configured runners", "level": "info"}),
             RUNNER % "Listing configured runners"]
    text = (render.TEMPLATES / "files" / "healthcheck").read_text()
    program = text.split("jq -nrR '", 1)[1].split("' 2>/dev/null", 1)[0]
    proc = processes.call(["jq", "-nrR", program], input="\n".join(lines) + "\n")
    assert proc.stdout == "runners 1\n", proc.stderr
