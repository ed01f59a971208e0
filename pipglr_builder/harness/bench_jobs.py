"""bench, CI jobs: what a CI user waits for, with the real gitlab-runner and helper.

On one stand-in host (user alice, rootless podman), the test coordinator
(gitlab_coordinator.py: GitLab's runner API and git over dumb HTTP)
hands jobs to two runners registered against it:
- nested: pipglr as its README says (`concurrent = 4` before `runlabel register`,
  setupstorage, setupcache, the helper through `runlabel preload`, `runlabel run`);
- baseline: the same gitlab-runner binary run by alice herself with the docker
  executor on her own rootless podman socket, no nesting (same helper, same job
  image, same pull policy and cache volume).
Every job sets FF_TIMESTAMPS (the runner stamps each trace line) and
FF_NETWORK_PER_BUILD (the network pipglr's register sets), so both runners run
alike. From the trace: handed out (the runner's first line, written when it has
the job) -> the first script line's output, and handed out -> the last line;
for N jobs at once, the first job handed out -> the last job's last line. So
no figure includes the runners' polling for jobs (check_interval), which
both runners have at 1 s here only to shorten the bench's waits. Nested and
baseline jobs are taken pair by pair in alternating order (bench_stats).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .. import helper_image, processes, render, runner
from ..base_image import native_arch
from ..config import Config
from ..errors import PipglrError
from ..standin import USERS, StandIn
from .bench_stats import pair_orders, paired_ratio, summary
from .coordinator import PORT, URL, VOLUME, Coordinator, Repository

FIRST = "bench-first-line"  # the first script line's output
FLAGS = {"FF_TIMESTAMPS": "true", "FF_NETWORK_PER_BUILD": "true"}
CACHE = [{"key": "bench-deps", "paths": ["deps/"], "policy": "pull-push", "when": "on_success",
          "untracked": False, "fallback_keys": []}]
CONCURRENCY = (1, 2, 4)  # jobs queued at once for the throughput; 1 is the latency pairs' clone + cache job
RUNNERS = ("nested", "baseline")
# Written before register for both runners alike: `concurrent = 4` as the README says, and a poll every second
# (gitlab-runner's default is 3 s): polling is in no figure (see above), it only makes the bench wait.
GLOBAL_CONFIG = "concurrent = 4\ncheck_interval = 1\n"
BASELINE_DIR = "/home/alice/bench-baseline"
NETWORK_TOOLS = ("command -v nft >/dev/null && test -x /usr/lib/podman/aardvark-dns || { apt-get update -qq "
                 "&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                 "nftables aardvark-dns; }")
# The stand-ins' /home (alice's storage, the nested storage under it) is an ext4 with a journal, as on a user's
# host: this VM's own disk is ext4 without one, which makes creating files cost what was deleted in the last
# minute (docs/benchmarks.md). Sparse; inode tables and journal written at mkfs, not by a thread during the bench.
HOME_FS_SIZE = "12G"
ALICE_SOCKET = f"unix:///run/user/{USERS['alice']}/podman/podman.sock"
# A trace line with FF_TIMESTAMPS (on by default in 19.4): "2026-11-24T07:58:14.123456Z 00O text", after
# the stamp the stream number (hex), O or E (stdout, stderr) and " " or "+" (a full or a partial line).
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z [0-9a-f]+[OE][ +](.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --- arithmetic (unit-tested) -------------------------------------------------

def stamped_lines(trace: str) -> list[tuple[datetime.datetime, str]]:
    """(time, text without colours) of every timestamped trace line."""
    lines = []
    for raw in trace.replace("\r\n", "\n").split("\n"):
        for part in raw.split("\r"):
            m = STAMPED.match(ANSI.sub("", part))
            if m:
                micro = (m.group(2) or "0")[:6].ljust(6, "0")
                at = datetime.datetime.fromisoformat(f"{m.group(1)}.{micro}+00:00")
                lines.append((at, m.group(3).strip()))
    return lines


def job_timings(trace: str, first: str = FIRST) -> tuple[float, float]:
    """Seconds from the job handed out (the first trace line) to FIRST's output, and to the last line."""
    lines = stamped_lines(trace)
    if not lines:
        raise PipglrError(f"bench: the trace has no timestamped lines (FF_TIMESTAMPS): {trace[:300]!r}")
    start = lines[0][0]
    hit = next((at for at, text in lines if text == first), None)
    if hit is None:
        raise PipglrError(f"bench: no {first!r} line in the trace: {trace[-500:]!r}")
    return (hit - start).total_seconds(), (lines[-1][0] - start).total_seconds()


def jobs_per_minute(jobs: int, seconds: float) -> float:
    return jobs * 60.0 / seconds


def throughput_window(traces: list[str]) -> float:
    """Seconds from the first of several jobs handed out (its first trace line) to the last line of any of them:
    the time they took together, without the wait for the runner's first poll."""
    spans = [(lines[0][0], lines[-1][0]) for lines in map(stamped_lines, traces) if lines]
    if len(spans) != len(traces):
        raise PipglrError("bench: a trace has no timestamped lines (FF_TIMESTAMPS)")
    return (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()


@contextlib.contextmanager
def journaled_home():
    """An empty ext4 with a journal in a sparse image file under /var/tmp, for a stand-in's /home; removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="pipglr-bench-home-", dir="/var/tmp"))
    image = tmp / "home.ext4"
    try:
        processes.execute(["truncate", "--size", HOME_FS_SIZE, str(image)])
        processes.execute(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
        yield image
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the world ------------------------------------------------------------------

class JobsHost:
    """A stand-in host with the coordinator, a small repository, pipglr and alice's own runner."""

    def __init__(self, config: Config, image: str, job_image: str, home_fs: Path | None = None):
        self.config, self.image, self.job_image = config, image, job_image
        self.helper = helper_image.names(config, native_arch())[-1]  # the helper_image pipglr's register pins
        self.token = f"reg-{uuid.uuid4().hex}"
        self.tmp = Path(tempfile.mkdtemp(prefix="pipglr-bench-git-"))
        self.sha = self._repository()
        self.standin = StandIn(job_image, volumes=(VOLUME, f"{self.tmp}/root:/git:ro"), home_fs=home_fs)
        self.gitlab = Coordinator(self.standin, self.token)
        self.runner_ids: dict[str, int] = {}

    def _repository(self) -> str:
        """The served repository (TMP/root/pipglr/e2e.git) with a few small files; its head sha."""
        repository = Repository(self.tmp / "root", self.tmp / "work", author="bench")
        return repository.commit({f"file{i}.txt": f"bench file {i}\n" * 50 for i in range(20)}, "bench")

    def alice(self, *argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.standin.as_user("alice", list(argv), input=input, check=check)

    def start(self) -> None:
        processes.say(f"bench: jobs: starting the stand-in host {self.standin.name} and the coordinator")
        self.standin.start()
        self.gitlab.start("--external-url", URL, "--git-root", "/git")
        self._start_nested()
        self._start_baseline()

    def _start_nested(self) -> None:
        processes.say("bench: jobs: pipglr as the README says (concurrent = 4, check_interval = 1 before register)")
        user = ["podman", "exec", "--interactive", "--user", "podman", "--env", "XDG_RUNTIME_DIR=/run/user/"
                + _labels(self.image)["io.pipglr.podman-uid"], "pipglr", "podman", "load", "--quiet"]
        self.standin.load_image("alice", self.image)
        self.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=self.token + "\n")
        self.alice("sh", "-c", "cat > config.toml", input=GLOBAL_CONFIG)
        # if-not-present, as the baseline: the job image and the helper are local (no registry here).
        self.alice("env", "PIPGLR_PULL_POLICY=if-not-present", "podman", "container", "runlabel", "register",
                   self.image, "--", "--url", URL, "--name", "bench-nested")
        self.alice("podman", "secret", "create", "config.toml", "config.toml")
        for label in ("setupstorage", "setupcache"):
            self.alice("podman", "container", "runlabel", label, self.image)
        processes.copy_image(self.helper, [*self.standin.user_argv("alice", interactive=True),
                                           "podman", "container", "runlabel", "preload", self.image])
        self.alice("podman", "container", "runlabel", "run", self.image)
        self.standin.wait_booted()
        processes.copy_image(self.job_image, [*self.standin.user_argv("alice", interactive=True), *user])

    def _start_baseline(self) -> None:
        processes.say("bench: jobs: the same gitlab-runner as alice, docker executor on her own podman socket")
        _, binaries = runner.obtain(self.config)
        processes.execute(["podman", "cp", str(binaries[native_arch()]), f"{self.standin.name}:/usr/local/bin/gitlab-runner"])
        processes.execute(["podman", "exec", self.standin.name, "chmod", "0755", "/usr/local/bin/gitlab-runner"])
        # A job's own network (FF_NETWORK_PER_BUILD) needs netavark's nft and aardvark-dns: a host's podman
        # has them (pipglr's image installs them), the stand-in's image does not.
        processes.execute(["podman", "exec", self.standin.name, "sh", "-c", NETWORK_TOOLS])
        self.alice("systemctl", "--user", "enable", "--now", "podman.socket")
        self.standin.load_image("alice", self.job_image)
        self.standin.load_image("alice", self.helper)
        config = f"{BASELINE_DIR}/config.toml"
        self.alice("sh", "-c", f"mkdir -p {BASELINE_DIR} && cat > {config}", input=GLOBAL_CONFIG)
        # The runner runs on the stand-in itself (no host.containers.internal there): GitLab at 127.0.0.1.
        self.alice("gitlab-runner", "register", "--non-interactive", "--config", config,
                   "--url", f"http://127.0.0.1:{PORT}", "--registration-token", self.token, "--name", "bench-baseline",
                   "--executor", "docker", "--docker-host", ALICE_SOCKET, "--docker-image", self.job_image,
                   "--docker-helper-image", self.helper, "--docker-pull-policy", "if-not-present",
                   "--docker-volumes", "/cache", "--feature-flags", "FF_NETWORK_PER_BUILD:true")
        self.alice("systemd-run", "--user", "--unit", "bench-baseline-runner", "--quiet", "gitlab-runner", "run",
                   "--config", config, "--working-directory", BASELINE_DIR)
        runners = {r["description"]: r["id"] for r in self.gitlab.state()["runners"]}
        self.runner_ids = {"nested": runners["bench-nested"], "baseline": runners["bench-baseline"]}

    def wake(self) -> None:
        """Both podman services up before each job: each is socket-activated and exits 5 s after its last
        request, and whether it had exited depended on which side went first in a pair (the job before a side's
        first job is its own, before its second the other side's). With both up, every job starts alike."""
        self.alice("curl", "-sf", "--unix-socket", ALICE_SOCKET.removeprefix("unix://"), "http://d/_ping")
        self.alice("podman", "exec", "--user", "podman", "pipglr", "curl", "-sf", "--unix-socket",
                   render.NESTED_SOCKET, "http://d/_ping")

    def podman_log(self, who: str) -> str:
        """The end of the journal of the podman service that ran WHO's jobs (for a failed job)."""
        if who == "baseline":
            argv = ["journalctl", "--user", "--no-pager", "-n", "25", "-u", "podman.service"]
        else:
            argv = ["podman", "exec", "pipglr", "journalctl", "--no-pager", "-n", "25"]
        return self.alice(*argv, check=False).stdout

    def close(self) -> None:
        self.standin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- jobs ---

    def queue(self, who: str, kind: str) -> int:
        spec = {"script": [f"echo {FIRST}", "true"], "image": self.job_image, "variables": dict(FLAGS),
                "runner_id": self.runner_ids[who]}
        if kind == "clone_cache":
            spec.update(script=[f"echo {FIRST}", "ls file0.txt", "mkdir -p deps", "echo $CI_JOB_ID > deps/value"],
                        git={"sha": self.sha, "ref": "main"}, cache=CACHE,
                        variables={**FLAGS, "GIT_STRATEGY": "clone"})
        return self.gitlab.request("POST", "/_test/jobs", spec)["id"]

    def wait(self, job_ids: list[int], timeout: float = 600) -> list[dict]:
        def finished():
            jobs = self.gitlab.state()["jobs"]
            done = [jobs[str(i)] for i in job_ids if jobs[str(i)]["state"] in ("success", "failed")]
            return done if len(done) == len(job_ids) else None
        jobs = processes.wait_for(finished, timeout, interval=0.25, what=f"jobs {job_ids} to finish")
        for job in jobs:
            if job["state"] != "success":
                who = next((w for w, rid in self.runner_ids.items() if rid == job.get("runner_id")), "?")
                raise PipglrError(f"bench: job {job['id']} ({who}) failed: {job['trace'][-1500:]}\n"
                                  f"{who} podman service's log:\n{self.podman_log(who)}")
        return jobs


def _labels(image: str) -> dict[str, str]:
    return json.loads(processes.execute(["podman", "image", "inspect", image]).stdout)[0].get("Labels") or {}


def measure(config: Config, image: str, job_image: str, pairs: int) -> dict:
    """Job latency, whole job and throughput, nested and baseline, PAIRS pairs each in alternating order."""
    with journaled_home() as home:
        return _measure(JobsHost(config, image, job_image, home), pairs)


def _measure(world: JobsHost, pairs: int) -> dict:
    figures: dict[str, dict[str, float]] = {}
    try:
        world.start()
        for who in RUNNERS:  # warm-up: the first job makes the cache volume and the first cache archive
            world.wait([world.queue(who, "clone_cache")])
        # Both sides start each job from the same state: nothing dirty to write back, both podman services up
        # (wake). The caches stay warm (the warm-up above read the same helper, job image and runner for both),
        # as on a host running jobs.
        samples = {(who, kind, what): [] for who in RUNNERS for kind in ("script", "clone_cache")
                   for what in ("first_line", "job")}
        for i, order in enumerate(pair_orders(pairs, RUNNERS)):
            processes.say(f"bench: jobs: pair {i + 1} of {pairs} ({' then '.join(order)})")
            for kind in ("script", "clone_cache"):
                for who in order:
                    os.sync()
                    world.wake()
                    job = world.wait([world.queue(who, kind)])[0]
                    first, whole = job_timings(job["trace"])
                    samples[(who, kind, "first_line")].append(first)
                    samples[(who, kind, "job")].append(whole)
        for (who, kind, what), values in samples.items():
            figures[f"{who}_{kind}_{what}_seconds"] = summary(values)
        for kind in ("script", "clone_cache"):
            for what in ("first_line", "job"):
                figures[f"job_{kind}_{what}_ratio"] = paired_ratio(samples[("nested", kind, what)],
                                                                   samples[("baseline", kind, what)])

        # One job at a time: its window is the whole job, already timed above in the same pairs.
        throughput = {(who, n): [] for who in RUNNERS for n in CONCURRENCY}
        for who in RUNNERS:
            throughput[(who, 1)] = [jobs_per_minute(1, s) for s in samples[(who, "clone_cache", "job")]]
        for i, order in enumerate(pair_orders(pairs, RUNNERS)):
            processes.say(f"bench: jobs: throughput, pair {i + 1} of {pairs} ({' then '.join(order)})")
            for n in CONCURRENCY[1:]:
                for who in order:
                    os.sync()
                    world.wake()
                    jobs = world.wait([world.queue(who, "clone_cache") for _ in range(n)])
                    window = throughput_window([job["trace"] for job in jobs])
                    throughput[(who, n)].append(jobs_per_minute(n, window))
        for (who, n), values in throughput.items():
            figures[f"{who}_{n}_jobs_per_minute"] = summary(values)
        for n in CONCURRENCY:
            figures[f"throughput_{n}_jobs_ratio"] = paired_ratio(throughput[("nested", n)],
                                                                 throughput[("baseline", n)])
    finally:
        world.close()
    return figures
