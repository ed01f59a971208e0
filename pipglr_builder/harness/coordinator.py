"""The test GitLab (gitlab_coordinator.py, beside this module) in a stand-in host, as the e2e tests and `bench jobs` run it.

It runs in the stand-in's network namespace: alice's containers (pipglr, and the
jobs nested in it) reach it at host.containers.internal, which pasta maps to the
stand-in itself; this machine reaches its control API (/_test/...) at the
stand-in's own address. The script ships in the package, so an installed tool runs it too.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path

from .. import processes
from ..standin import StandIn

SCRIPT = Path(__file__).resolve().parent / "gitlab_coordinator.py"
MOUNT = "/e2e"  # where the stand-in sees the folder of SCRIPT
VOLUME = f"{SCRIPT.parent}:{MOUNT}:ro"  # a StandIn volume
HOST = "host.containers.internal"
PORT = 8080
URL = f"http://{HOST}:{PORT}"  # what the runner is registered with, and what jobs reach GitLab at
PROJECT = "pipglr/e2e"  # its default project: the repository GIT_ROOT/PROJECT.git it serves to jobs


class Repository:
    """The bare repository the coordinator serves to jobs (ROOT/PROJECT.git; ROOT is its --git-root)
    and a work tree to commit from, git run as AUTHOR with no user or system git config."""

    def __init__(self, root: Path, work: Path, author: str = "e2e"):
        self.root, self.bare, self.work = root, root / f"{PROJECT}.git", work
        self.env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": f"{author}@example.invalid",
                    "GIT_COMMITTER_NAME": author, "GIT_COMMITTER_EMAIL": f"{author}@example.invalid"}
        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        self.git("init", "--quiet", "--initial-branch=main", str(self.work))

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return processes.execute(["git", *(["-C", str(cwd)] if cwd else []), *args], env=self.env).stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        """Commit FILES ({name: text}), push them to the served repository, refresh its dumb-HTTP index
        and make it all readable for the coordinator; the commit's sha."""
        for name, text in files.items():
            (self.work / name).write_text(text)
        self.git("add", *files, cwd=self.work)
        self.git("commit", "--quiet", "--message", message, cwd=self.work)
        self.git("push", "--quiet", str(self.bare), "main", cwd=self.work)
        self.git("update-server-info", cwd=self.bare)
        for directory, _, names in os.walk(self.root):
            os.chmod(directory, 0o755)
            for name in names:
                os.chmod(os.path.join(directory, name), 0o644)
        return self.git("rev-parse", "HEAD", cwd=self.work)


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
