#!/usr/bin/env python3
"""A test GitLab coordinator: the runner API as gitlab-runner uses it (the tests and `bench`).

It speaks the endpoints in shared/GITLAB_RUNNER_API.md (registration,
verify, unregister, token reset, job request, trace, job update), job
artifacts (upload and download, as gitlab-runner 19.4's network/gitlab.go
calls them) and git's dumb HTTP protocol for bare repositories under
--git-root (behind the job token, as GitLab serves clones to jobs), and
records everything a runner sends, and each runner's managers (one per system
ID) as GitLab's runner page lists them. Tests drive it through /_test/ endpoints:
create a runner as GitLab's UI does (its glrt- token), queue jobs, cancel
one, read what was recorded, set the registration token and token lifetime. Standard library only, so it runs inside the stand-in
host. It must listen only on loopback or inside a network namespace the
tests created.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import io
import json
import re
import secrets
import ssl
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The failure reasons GitLab tells runners it understands (features.failure_reasons);
# without them gitlab-runner reports every failure as script_failure.
FAILURE_REASONS = ["unknown_failure", "script_failure", "api_failure", "stuck_or_timeout_failure",
                   "runner_system_failure", "missing_dependency_failure", "runner_unsupported",
                   "job_execution_timeout", "image_pull_failure"]
# Its port and the default project (id 42) whose repository --git-root serves; the tests and the bench take
# them from coordinator.py beside it (this script runs alone in a stand-in; test_bench holds the two alike).
PORT = 8080
PROJECT = "pipglr/e2e"
JOB_PATH = re.compile(r"/api/v4/jobs/(\d+)(/trace|/artifacts)?")
TEST_CANCEL_PATH = re.compile(r"/_test/jobs/(\d+)/cancel")


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
        self.external_url: str | None = None  # GitLab's own URL (repo_url, CI_SERVER_URL); else the Host header
        self.git_root: Path | None = None  # bare repositories served over dumb HTTP: ROOT/group/project.git
        self.git_requests: list[dict] = []
        self.artifacts: dict[int, bytes] = {}  # job id -> the uploaded archive
        self.retired_tokens: list[str] = []
        self.queue: list[dict] = []
        self.jobs: dict[int, dict] = {}
        self.requests: list[dict] = []  # every /jobs/request: runner id, system_id, runner version, token prefix
        # Each runner's managers, as GitLab's runner page lists them: runner id -> system_id -> manager.
        self.managers: dict[int, dict[str, dict]] = {}
        self.events: list[dict] = []
        self.next_runner_id = 1
        self.next_job_id = 100

    def event(self, kind: str, **data) -> None:
        self.events.append({"kind": kind, "at": iso(now()), **data})

    def new_token(self, runner: dict) -> dict:
        # GitLab gives the glrt- prefix only to runners created in its UI or API, not to
        # runners registered with a registration token (gitlab-runner tells them apart by it).
        token = ("glrt-" if runner.get("created_in_ui") else "") + secrets.token_urlsafe(15)
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

    def contacted(self, runner: dict, system_id: str | None) -> None:
        """A request from RUNNER's manager SYSTEM_ID: GitLab makes the manager at its first contact (again
        after it was deleted) and counts when it was last seen."""
        managers = self.managers.setdefault(runner["id"], {})
        manager = managers.setdefault(str(system_id), {"system_id": system_id, "created_at": iso(now()),
                                                       "requests": 0})
        manager["contacted_at"] = iso(now())
        manager["requests"] += 1

    def snapshot(self) -> dict:
        return {
            "runners": list(self.runners.values()),
            "managers": {str(runner_id): list(managers.values()) for runner_id, managers in self.managers.items()},
            "retired_tokens": [t[:12] for t in self.retired_tokens],
            "jobs": self.jobs,
            "queued": len(self.queue),
            "requests": self.requests[-200:],
            "events": self.events[-500:],
            "git_requests": self.git_requests[-500:],
        }

    def running_job(self, token: str | None) -> dict | None:
        """The running job whose job token this is (how GitLab authenticates CI_JOB_TOKEN)."""
        for job in self.jobs.values():
            if token and job.get("job_token") == token and job["state"] == "running":
                return job
        return None


def job_payload(job_id: int, token: str, spec: dict, external_url: str, st: State) -> dict:
    """A job as GitLab sends it. Without "git" in SPEC: GIT_STRATEGY=none (no clone).

    SPEC: script, image; optional name, variables {KEY: VALUE}, masked_variables {KEY: VALUE},
    timeout (runner_info.timeout, seconds), after_script, git {sha, ref, depth} and allow_git_fetch,
    cache, artifacts, services (lists as GitLab sends them), dependencies (job ids).
    project: {id, path} of another project (default 42, pipglr/e2e, whose repository is served).
    """
    server = urllib.parse.urlsplit(external_url)
    project_id, project = spec.get("project", {}).get("id", 42), spec.get("project", {}).get("path", PROJECT)
    git = spec.get("git") or {}
    sha = git.get("sha", "0" * 40)
    ref = git.get("ref", "main")
    repo_url = f"{server.scheme}://gitlab-ci-token:{token}@{server.netloc}/{project}.git"
    timeout = spec.get("timeout", 600)

    def var(key: str, value: str, public: bool = True, masked: bool = False) -> dict:
        return {"key": key, "value": value, "public": public, "masked": masked}

    variables = [var("CI", "true"), var("GITLAB_CI", "true"),
                 var("CI_SERVER_URL", external_url), var("CI_SERVER_HOST", server.hostname or ""),
                 var("CI_SERVER_PORT", str(server.port or (443 if server.scheme == "https" else 80))),
                 var("CI_SERVER_PROTOCOL", server.scheme),
                 var("CI_JOB_ID", str(job_id)), var("CI_JOB_NAME", spec.get("name", f"job-{job_id}")),
                 var("CI_JOB_STAGE", "test"), var("CI_JOB_TOKEN", token, public=False, masked=True),
                 var("CI_PROJECT_ID", str(project_id)), var("CI_PROJECT_NAME", project.rpartition("/")[2]),
                 var("CI_PROJECT_PATH", project), var("CI_PROJECT_NAMESPACE", project.rpartition("/")[0]), var("CI_PIPELINE_ID", "7"),
                 var("CI_REPOSITORY_URL", repo_url, public=False),
                 var("CI_COMMIT_SHA", sha), var("CI_COMMIT_REF_NAME", ref)]
    if not git:
        variables.append(var("GIT_STRATEGY", "none"))
    variables += [var(k, v) for k, v in spec.get("variables", {}).items()]
    variables += [var(k, v, public=False, masked=True) for k, v in spec.get("masked_variables", {}).items()]
    steps = [{"name": "script", "script": spec["script"], "timeout": timeout, "when": "on_success",
              "allow_failure": False}]
    if spec.get("after_script"):
        steps.append({"name": "after_script", "script": spec["after_script"], "timeout": timeout,
                      "when": "always", "allow_failure": True})
    dependencies = []
    for dep_id in spec.get("dependencies", []):
        # GitLab gives each dependency the running job's own token (it downloads with it).
        dependency = {"id": dep_id, "token": token, "name": st.jobs[dep_id].get("name") or f"job-{dep_id}"}
        if dep_id in st.artifacts:
            dependency["artifacts_file"] = {"filename": "artifacts.zip", "size": len(st.artifacts[dep_id])}
        dependencies.append(dependency)
    return {
        "id": job_id, "token": token, "allow_git_fetch": bool(spec.get("allow_git_fetch", False)),
        "job_info": {"id": job_id, "name": spec.get("name", f"job-{job_id}"), "stage": "test",
                     "project_id": project_id, "project_name": project.rpartition("/")[2],
                     "project_full_path": project},
        # Refspecs as GitLab sends them for a branch pipeline with git depth 0 (shallow fetches
        # need git's smart protocol; this coordinator serves the dumb one).
        "git_info": {"repo_url": repo_url, "ref": ref, "sha": sha, "before_sha": "0" * 40, "ref_type": "branch",
                     "refspecs": ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                     "depth": git.get("depth", 0)},
        "runner_info": {"timeout": timeout},
        "variables": variables,
        "steps": steps,
        "image": {"name": spec["image"]},
        "services": spec.get("services", []), "artifacts": spec.get("artifacts", []),
        "cache": spec.get("cache", []), "credentials": [], "dependencies": dependencies,
        "features": {"trace_sections": True, "failure_reasons": FAILURE_REASONS},
    }


def multipart_file(content_type: str, body: bytes, field: str = "file") -> tuple[str | None, bytes | None]:
    """The file in form field FIELD of a multipart/form-data BODY: (filename, bytes), byte-exact."""
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not match:
        return None, None
    for part in body.split(b"--" + match.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        disposition = next((line for line in head.decode(errors="replace").split("\r\n")
                            if line.lower().startswith("content-disposition:")), "")
        if re.search(rf'\bname="{re.escape(field)}"', disposition):
            filename = re.search(r'filename="([^"]*)"', disposition)
            return (filename.group(1) if filename else None), data.removesuffix(b"\r\n")
    return None, None


class Handler(BaseHTTPRequestHandler):
    state: State  # set on the class by serve()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the state records what matters
        pass

    # --- plumbing ---
    def read_body(self) -> bytes:
        """The request body, Content-Length or chunked (gitlab-runner streams artifact uploads chunked)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(1024)  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def body(self) -> bytes:
        return self._body

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

    def forbidden(self, reason: str = "", headers: dict | None = None) -> None:
        """GitLab's 403 answer, REASON after the status as GitLab words it."""
        self.reply(403, {"message": "403 Forbidden" + (f" - {reason}" if reason else "")}, headers)

    def reply_bytes(self, status: int, raw: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))

    def external_url(self) -> str:
        """GitLab's URL as jobs see it: --external-url, else what the runner called (its configured url)."""
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        return self.state.external_url or f"{scheme}://{self.headers.get('Host')}"

    def route(self, method: str) -> None:
        # Read the body first, outside the lock: artifact uploads stream in while traces go on.
        self._body = self.read_body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        handler, args = ROUTES.get((method, path)), ()
        if handler is None and (match := JOB_PATH.fullmatch(path)):
            handler, args = ROUTES.get((method, "/api/v4/jobs/:id" + (match.group(2) or ""))), (int(match.group(1)),)
        if handler is None and (match := TEST_CANCEL_PATH.fullmatch(path)):
            handler, args = ROUTES.get((method, "/_test/jobs/:id/cancel")), (int(match.group(1)),)
        if handler is None and method == "GET" and ".git/" in path and self.state.git_root:
            handler = Handler.git_dumb_http
        if handler is None:
            return self.reply(404, {"message": "404 Not Found"})
        with self.state.lock:
            return handler(self, *args)

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
            return self.forbidden()
        runner = {"id": st.next_runner_id, "description": data.get("description"), "info": data.get("info", {}),
                  "tag_list": data.get("tag_list"), "run_untagged": data.get("run_untagged")}
        st.next_runner_id += 1
        st.event("register", runner_id=runner["id"], description=runner["description"])
        self.reply(201, st.new_token(runner))

    def verify(self):
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        if runner is None:
            return self.forbidden()
        # What gitlab-runner sent (field names only: the token is a secret).
        st.event("verify", runner_id=runner["id"], system_id=data.get("system_id"), fields=sorted(data),
                 info=sorted(data.get("info") or {}))
        st.contacted(runner, data.get("system_id"))
        self.reply(200, {"id": runner["id"], "token": runner["token"],
                         "token_expires_at": runner["token_expires_at"]})

    def unregister(self):
        data, st = self.json_body(), self.state
        runner = st.runners.pop(data.get("token", ""), None)
        if runner is None:
            return self.forbidden()
        st.event("unregister", runner_id=runner["id"], system_id=data.get("system_id"))
        self.reply(204)

    def unregister_manager(self):
        """DELETE /runners/managers (a glrt- runner): only this machine's manager goes, the runner stays."""
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        if runner is None:
            return self.forbidden()
        known = st.managers.get(runner["id"], {}).pop(str(data.get("system_id")), None) is not None
        st.event("unregister-manager", runner_id=runner["id"], system_id=data.get("system_id"), known=known)
        self.reply(204)

    def reset_token(self):
        data, st = self.json_body(), self.state
        runner = st.runner_for(data.get("token"))
        if runner is None:
            return self.forbidden()
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
                            "version": (data.get("info") or {}).get("version"),
                            "token": str(data.get("token"))[:12], "at": iso(now())})
        if runner is None:
            return self.forbidden()
        st.contacted(runner, data.get("system_id"))
        headers = {"X-GitLab-Last-Update": secrets.token_hex(8)}
        for i, spec in enumerate(st.queue):
            if spec.get("runner_id") in (None, runner["id"]):
                st.queue.pop(i)
                job_id = spec["id"]
                job_token = "glcbt-" + secrets.token_hex(10)
                st.jobs[job_id].update(state="running", runner_id=runner["id"], system_id=data.get("system_id"),
                                       job_token=job_token, started_at=iso(now()))
                st.event("job-start", job_id=job_id, runner_id=runner["id"])
                return self.reply(201, job_payload(job_id, job_token, spec, self.external_url(), st), headers)
        self.reply(204, None, headers)

    def _job(self, job_id: int, token: str | None) -> dict | None:
        job = self.state.jobs.get(job_id)
        return job if job and token and token == job.get("job_token") else None

    def trace(self, job_id: int):
        chunk = self.body().decode(errors="replace")
        job = self._job(job_id, self.headers.get("JOB-TOKEN"))
        if job is None:
            return self.forbidden()
        if job["state"] != "running":  # GitLab: 403 "Job is not running", with the job's status
            return self.forbidden("Job is not running", {"Job-Status": job["state"]})
        start = int((self.headers.get("Content-Range") or "0-0").split("-")[0])
        if start != len(job["trace"]):
            return self.reply(416, None, {"Range": f"0-{len(job['trace'])}"})
        job["trace"] += chunk
        self.reply(202, None, {"Job-Status": job["state"], "X-GitLab-Trace-Update-Interval": "3"})

    def update_job(self, job_id: int):
        data = self.json_body()
        job = self._job(job_id, data.get("token"))
        if job is None:
            return self.forbidden()
        state = data.get("state")
        job.setdefault("updates", []).append({"state": state, "failure_reason": data.get("failure_reason"),
                                              "exit_code": data.get("exit_code"), "at": iso(now())})
        if job["state"] != "running":  # canceled from GitLab (or already finished): GitLab refuses it
            return self.forbidden("Job is not running", {"Job-Status": job["state"]})
        if state in ("success", "failed"):
            job.update(state=state, failure_reason=data.get("failure_reason"), exit_code=data.get("exit_code"),
                       finished_at=iso(now()))
            self.state.event("job-" + state, job_id=job_id, exit_code=data.get("exit_code"))
        self.reply(200, {"id": job_id}, {"Job-Status": job["state"]})

    def upload_artifacts(self, job_id: int):
        """POST /jobs/:id/artifacts: multipart form, field "file" (gitlab-runner streams it chunked); 201."""
        st = self.state
        job = self._job(job_id, self.headers.get("JOB-TOKEN"))
        if job is None or job["state"] != "running":
            return self.forbidden()
        filename, data = multipart_file(self.headers.get("Content-Type", ""), self.body())
        if data is None:
            return self.reply(400, {"message": "400 Bad request - file is missing"})
        try:
            files = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            files = None
        query = self.query()
        st.artifacts[job_id] = data
        job["artifacts"] = {"filename": filename, "size": len(data), "files": files,
                            "chunked": "chunked" in (self.headers.get("Transfer-Encoding") or "").lower(),
                            "artifact_format": query.get("artifact_format"),
                            "artifact_type": query.get("artifact_type"), "expire_in": query.get("expire_in")}
        st.event("artifacts-upload", job_id=job_id, size=len(data))
        self.reply(201, {"id": job_id, "artifacts_file": {"filename": filename, "size": len(data)}})

    def download_artifacts(self, job_id: int):
        """GET /jobs/:id/artifacts with the JOB-TOKEN of a running job that depends on job :id."""
        st = self.state
        job = st.running_job(self.headers.get("JOB-TOKEN"))
        allowed = job is not None and job_id in job.get("dependencies", [])
        st.event("artifacts-download", job_id=job_id, by=job["id"] if job else None, allowed=allowed,
                 direct_download=self.query().get("direct_download"))
        if not allowed:
            return self.forbidden()
        if job_id not in st.artifacts:
            return self.reply(404, {"message": "404 Not Found"})
        self.reply_bytes(200, st.artifacts[job_id], "application/zip",
                         {"Content-Disposition": 'attachment; filename="artifacts.zip"'})

    def git_dumb_http(self):
        """git's dumb HTTP protocol: files of a bare repository, behind gitlab-ci-token:JOB_TOKEN basic auth."""
        st = self.state
        path = urllib.parse.unquote(self.path.split("?", 1)[0])
        record = {"path": path, "job_id": None, "status": 401}
        st.git_requests.append(record)
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return self.reply(401, {"message": "HTTP Basic: Access denied"},
                              {"WWW-Authenticate": 'Basic realm="GitLab"'})
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        job = st.running_job(password) if user == "gitlab-ci-token" else None
        if job is None:
            record["status"] = 403
            return self.reply(403, {"message": "HTTP Basic: Access denied"})
        record["job_id"] = job["id"]
        root = st.git_root.resolve()
        target = (root / path.lstrip("/")).resolve()
        if root not in target.parents or not target.is_file():
            record["status"] = 404
            return self.reply(404, {"message": "404 Not Found"})
        record["status"] = 200
        # Plain text, not application/x-git-upload-pack-advertisement: git falls back to the dumb protocol.
        self.reply_bytes(200, target.read_bytes(),
                         "text/plain" if path.endswith("/info/refs") else "application/octet-stream")

    # --- test control ---
    def test_add_job(self):
        spec, st = self.json_body(), self.state
        spec["id"] = st.next_job_id
        st.next_job_id += 1
        st.queue.append(spec)
        st.jobs[spec["id"]] = {"id": spec["id"], "name": spec.get("name"), "state": "pending", "trace": "",
                               "dependencies": spec.get("dependencies", [])}
        self.reply(201, {"id": spec["id"]})

    def test_create_runner(self):
        """A runner created in GitLab's UI (or POST /user/runners): its authentication token (glrt-)."""
        data, st = self.json_body(), self.state
        runner = {"id": st.next_runner_id, "description": data.get("description"), "created_in_ui": True,
                  "tag_list": data.get("tag_list", []), "run_untagged": data.get("run_untagged", True)}
        st.next_runner_id += 1
        st.event("runner-created", runner_id=runner["id"])
        self.reply(201, st.new_token(runner))

    def test_cancel_job(self, job_id: int):
        """Cancel from GitLab: the job's next trace PATCH or update PUT is answered Job-Status: canceled."""
        job = self.state.jobs.get(job_id)
        if job is None:
            return self.reply(404, {"message": "404 Not Found"})
        job.update(state="canceled", finished_at=iso(now()))
        self.state.event("job-canceled", job_id=job_id)
        self.reply(200, {"id": job_id, "state": "canceled"})

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
    ("DELETE", "/api/v4/runners/managers"): Handler.unregister_manager,
    ("POST", "/api/v4/runners/reset_authentication_token"): Handler.reset_token,
    ("POST", "/api/v4/jobs/request"): Handler.request_job,
    ("PATCH", "/api/v4/jobs/:id/trace"): Handler.trace,
    ("PUT", "/api/v4/jobs/:id"): Handler.update_job,
    ("POST", "/api/v4/jobs/:id/artifacts"): Handler.upload_artifacts,
    ("GET", "/api/v4/jobs/:id/artifacts"): Handler.download_artifacts,
    ("POST", "/_test/jobs"): Handler.test_add_job,
    ("POST", "/_test/jobs/:id/cancel"): Handler.test_cancel_job,
    ("POST", "/_test/runners"): Handler.test_create_runner,
    ("POST", "/_test/config"): Handler.test_config,
    ("GET", "/_test/state"): Handler.test_state,
}


def serve(host: str, port: int, registration_token: str, external_url: str | None = None,
          git_root: str | None = None) -> ThreadingHTTPServer:
    Handler.state = State(registration_token)
    Handler.state.external_url = external_url.rstrip("/") if external_url else None
    Handler.state.git_root = Path(git_root) if git_root else None
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=f"127.0.0.1:{PORT}", help="HOST:PORT (loopback or a test namespace)")
    parser.add_argument("--registration-token", required=True)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key")
    parser.add_argument("--external-url", help="GitLab's URL in jobs (repo_url, CI_SERVER_URL); default: the "
                                               "scheme and Host header of the runner's job request")
    parser.add_argument("--git-root", help="serve the bare repositories under this directory (GROUP/PROJECT.git, "
                                           "made with `git update-server-info`) over git's dumb HTTP protocol")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = serve(host, int(port), args.registration_token, args.external_url, args.git_root)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"coordinator listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
