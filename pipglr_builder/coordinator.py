"""The test GitLab (tests/gitlab_coordinator.py) in a stand-in host, as the e2e tests and `bench jobs` run it.

It runs in the stand-in's network namespace: alice's containers (pipglr, and the
jobs nested in it) reach it at host.containers.internal, which pasta maps to the
stand-in itself; this machine reaches its control API (/_test/...) at the
stand-in's own address. The script lives with the tests: from a clone only.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

from . import processes
from .standin import StandIn

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "gitlab_coordinator.py"
MOUNT = "/e2e"  # where the stand-in sees the tests folder
VOLUME = f"{SCRIPT.parent}:{MOUNT}:ro"  # a StandIn volume
HOST = "host.containers.internal"
PORT = 8080
URL = f"http://{HOST}:{PORT}"  # what the runner is registered with, and what jobs reach GitLab at
PROJECT = "pipglr/e2e"  # its default project: the repository GIT_ROOT/PROJECT.git it serves to jobs


class Coordinator:
    """The coordinator of one stand-in host: started in it, asked over its control API."""

    def __init__(self, standin: StandIn, token: str, port: int = PORT, scheme: str = "http",
                 context: ssl.SSLContext | None = None):
        self.standin, self.token, self.port, self.scheme, self.context = standin, token, port, scheme, context
        self.control = ""

    def start(self, *options: str, what: str = "the test coordinator") -> Coordinator:
        """Start it (listening on PORT, OPTIONS: the script's further flags) and wait until it answers."""
        processes.execute(["podman", "exec", "--detach", self.standin.name, "python3", f"{MOUNT}/{SCRIPT.name}",
                           "--listen", f"0.0.0.0:{self.port}", "--registration-token", self.token, *options])
        self.control = f"{self.scheme}://{self.standin.address()}:{self.port}"
        processes.wait_for(self.answers, 30, what=what)
        return self

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.control + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            return json.loads(response.read() or b"{}")

    def state(self) -> dict:
        return self.request("GET", "/_test/state")

    def answers(self) -> bool:
        try:
            self.state()
            return True
        except OSError:
            return False
