#!/usr/bin/env python3
"""A test GitLab coordinator: the runner API as gitlab-runner uses it (tests only).

It speaks the endpoints in shared/GITLAB_RUNNER_API.md (registration,
verify, unregister, token reset, job request, trace, job update) and records
everything a runner sends. Tests drive it through /_test/ endpoints: queue
jobs, read what was recorded, set the registration token and token lifetime.
Standard library only, so it runs inside the stand-in host. It must listen
only on loopback or inside a network namespace the tests created.
"""

from __future__ import annotations

import argparse
import datetime
import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(t: datetime.datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


class State:
    """Everything the coordinator knows; one lock guards it all."""

    def __init__(self, registration_token: str):
        self.lock = threading.Lock()
        self.registration_token = registration_token
        self.token_ttl: int | None = None  # seconds; None: tokens never expire
        self.runners: dict[str, dict] = {}  # token -> runner
        self.retired_tokens: list[str] = []
        self.queue: list[dict] = []
        self.jobs: dict[int, dict] = {}
        self.requests: list[dict] = []  # every /jobs/request: runner id, system_id, token prefix
        self.events: list[dict] = []
        self.next_runner_id = 1
        self.next_job_id = 100

    def event(self, kind: str, **data) -> None:
        self.events.append({"kind": kind, "at": iso(now()), **data})

    def new_token(self, runner: dict) -> dict:
        token = "glrt-" + secrets.token_urlsafe(15)
        expires = now() + datetime.timedelta(seconds=self.token_ttl) if self.token_ttl else None
        runner.update(token=token, token_expires_at=iso(expires))
        self.runners[token] = runner
        return {"id": runner["id"], "token": token, "token_expires_at": iso(expires)}

    def runner_for(self, token: str | None) -> dict | None:
        runner = self.runners.get(token or "")
        if runner is None:
            return None
        expires = runner.get("token_expires_at")
        if expires and datetime.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.UTC) < now():
            return None
        return runner

    def snapshot(self) -> dict:
        return {
            "runners": list(self.runners.values()),
            "retired_tokens": [t[:12] for t in self.retired_tokens],
            "jobs": self.jobs,
            "queued": len(self.queue),
            "requests": self.requests[-200:],
            "events": self.events[-500:],
        }


def job_payload(job_id: int, token: str, spec: dict) -> dict:
    """A minimal job as GitLab sends it (GIT_STRATEGY=none: no clone)."""
    variables = [{"key": "GIT_STRATEGY", "value": "none", "public": True},
                 {"key": "CI_JOB_ID", "value": str(job_id), "public": True}]
    variables += [{"key": k, "value": v, "public": True} for k, v in spec.get("variables", {}).items()]
    return {
        "id": job_id, "token": token, "allow_git_fetch": False,
        "job_info": {"id": job_id, "name": spec.get("name", f"job-{job_id}"), "stage": "test",
                     "project_id": 42, "project_name": "pipglr-e2e"},
        "git_info": {"repo_url": "http://gitlab.invalid/pipglr/e2e.git", "ref": "main", "sha": "0" * 40,
                     "before_sha": "0" * 40, "ref_type": "branch", "refspecs": [], "depth": 1},
        "runner_info": {"timeout": spec.get("timeout", 600)},
        "variables": variables,
        "steps": [{"name": "script", "script": spec["script"], "timeout": spec.get("timeout", 600),
                   "when": "on_success", "allow_failure": False}],
        "image": {"name": spec["image"]},
        "services": [], "artifacts": [], "cache": [], "credentials": [], "dependencies": [], "features": {},
    }


class Handler(BaseHTTPRequestHandler):
    state: State  # set on the class by serve()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the state records what matters
        pass

    # --- plumbing ---
    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def json_body(self) -> dict:
        raw = self.body()
        return json.loads(raw) if raw else {}

    def reply(self, status: int, data=None, headers: dict | None = None) -> None:
        raw = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if raw:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        handler = ROUTES.get((method, path))
        if handler is None and path.startswith("/api/v4/jobs/"):
            parts = path.split("/")
            if len(parts) >= 5 and parts[4].isdigit():
                handler = ROUTES.get((method, "/api/v4/jobs/:id" + ("/trace" if path.endswith("/trace") else "")))
                if handler:
                    with self.state.lock:
                        return handler(self, int(parts[4]))
        if handler is None:
            return self.reply(404, {"message": "404 Not Found"})
        with self.state.lock:
            return handler(self)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_PATCH(self):
        self.route("PATCH")

    def do_DELETE(self):
        self.route("DELETE")

    # --- runner API ---
    def register(self):
        data, st = self.json_body(), self.state
        if data.get("token") != st.registration_token:
            st.event("register-refused", token_prefix=str(data.get("token"))[:4])
            return self.reply(403, {"message": "403 Forbidden"})
        runner = {"id": st.next_runner_id, "description": data.get("description"), "info": data.get("info", {}),
                  "tag_list": data.get("tag_list"), "run_untagged": data.get("run_untagged")}
        st.next_runner_id += 1
        st.event("register", runner_id=runner["id"], description=runner["description"])
        self.reply(201, st.new_token(runner))

    def verify(self):
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        if runner is None:
            return self.reply(403, {"message": "403 Forbidden"})
        st.event("verify", runner_id=runner["id"], system_id=data.get("system_id"))
        self.reply(200, {"id": runner["id"], "token": runner["token"],
                         "token_expires_at": runner["token_expires_at"]})

    def unregister(self):
        data, st = self.json_body(), self.state
        runner = st.runners.pop(data.get("token", ""), None)
        if runner is None:
            return self.reply(403, {"message": "403 Forbidden"})
        st.event("unregister", runner_id=runner["id"], system_id=data.get("system_id"))
        self.reply(204)

    def reset_token(self):
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        if runner is None:
            return self.reply(403, {"message": "403 Forbidden"})
        old = runner["token"]
        del st.runners[old]
        st.retired_tokens.append(old)
        answer = st.new_token(runner)
        st.event("token-reset", runner_id=runner["id"], old=old[:12], new=answer["token"][:12])
        self.reply(201, answer)

    def request_job(self):
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        st.requests.append({"runner_id": runner["id"] if runner else None, "system_id": data.get("system_id"),
                            "token": str(data.get("token"))[:12], "at": iso(now())})
        if runner is None:
            return self.reply(403, {"message": "403 Forbidden"})
        headers = {"X-GitLab-Last-Update": secrets.token_hex(8)}
        for i, spec in enumerate(st.queue):
            if spec.get("runner_id") in (None, runner["id"]):
                st.queue.pop(i)
                job_id = spec["id"]
                job_token = "glcbt-" + secrets.token_hex(10)
                st.jobs[job_id].update(state="running", runner_id=runner["id"], system_id=data.get("system_id"),
                                       job_token=job_token, started_at=iso(now()))
                st.event("job-start", job_id=job_id, runner_id=runner["id"])
                return self.reply(201, job_payload(job_id, job_token, spec), headers)
        self.reply(204, None, headers)

    def _job(self, job_id: int, token: str | None) -> dict | None:
        job = self.state.jobs.get(job_id)
        return job if job and token and token == job.get("job_token") else None

    def trace(self, job_id: int):
        chunk = self.body().decode(errors="replace")
        job = self._job(job_id, self.headers.get("JOB-TOKEN"))
        if job is None:
            return self.reply(403, {"message": "403 Forbidden"})
        start = int((self.headers.get("Content-Range") or "0-0").split("-")[0])
        if start != len(job["trace"]):
            return self.reply(416, None, {"Range": f"0-{len(job['trace'])}"})
        job["trace"] += chunk
        self.reply(202, None, {"Job-Status": job["state"], "X-GitLab-Trace-Update-Interval": "3"})

    def update_job(self, job_id: int):
        data = self.json_body()
        job = self._job(job_id, data.get("token"))
        if job is None:
            return self.reply(403, {"message": "403 Forbidden"})
        state = data.get("state")
        if state in ("success", "failed"):
            job.update(state=state, failure_reason=data.get("failure_reason"), exit_code=data.get("exit_code"),
                       finished_at=iso(now()))
            self.state.event("job-" + state, job_id=job_id, exit_code=data.get("exit_code"))
        self.reply(200, {"id": job_id}, {"Job-Status": job["state"]})

    # --- test control ---
    def test_add_job(self):
        spec, st = self.json_body(), self.state
        spec["id"] = st.next_job_id
        st.next_job_id += 1
        st.queue.append(spec)
        st.jobs[spec["id"]] = {"id": spec["id"], "name": spec.get("name"), "state": "pending", "trace": ""}
        self.reply(201, {"id": spec["id"]})

    def test_config(self):
        data, st = self.json_body(), self.state
        if "registration_token" in data:
            st.registration_token = data["registration_token"]
        if "token_ttl" in data:
            st.token_ttl = data["token_ttl"]
        self.reply(200, {"registration_token_set": True, "token_ttl": st.token_ttl})

    def test_state(self):
        self.reply(200, self.state.snapshot())


ROUTES = {
    ("POST", "/api/v4/runners"): Handler.register,
    ("POST", "/api/v4/runners/verify"): Handler.verify,
    ("DELETE", "/api/v4/runners"): Handler.unregister,
    ("DELETE", "/api/v4/runners/managers"): Handler.unregister,
    ("POST", "/api/v4/runners/reset_authentication_token"): Handler.reset_token,
    ("POST", "/api/v4/jobs/request"): Handler.request_job,
    ("PATCH", "/api/v4/jobs/:id/trace"): Handler.trace,
    ("PUT", "/api/v4/jobs/:id"): Handler.update_job,
    ("POST", "/_test/jobs"): Handler.test_add_job,
    ("POST", "/_test/config"): Handler.test_config,
    ("GET", "/_test/state"): Handler.test_state,
}


def serve(host: str, port: int, registration_token: str) -> ThreadingHTTPServer:
    Handler.state = State(registration_token)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (loopback or a test namespace)")
    parser.add_argument("--registration-token", required=True)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = serve(host, int(port), args.registration_token)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"coordinator listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
