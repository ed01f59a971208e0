"""bench: what users pay for the image, measured on this machine, with targets.

Each figure is the median of several runs with min and max, in three groups:
- build: cold (Debian bootstrap, then every layer without cache; amd64 several
  times, arm64 once under emulation), warm rebuild with no change, rebuild
  after a gitlab-runner version bump (only the late layers should rebuild);
- image: size uncompressed and compressed as pushed, layer count;
- runtime, on the stand-in user host as verify does: `runlabel run` to ready;
  the cost of nesting: the same job image and work (`run --rm true`, untar and
  delete 3000 files, sha256sum of 256 MB) by the stand-in user alice's own
  rootless podman (overlay, storage on /home: an ext4 with a journal, as on a
  user's host, bench_jobs.journaled_home) and nested through
  the runner's socket (overlay on the pipglr-storage volume, under alice's
  /home too), sampled pair by pair in alternating order, each sample from
  the same state (settle: sync, drop caches), ratio = median of the per-pair
  ratios nested/alice (bench_stats.py); fuse-overlayfs and vfs nested as
  peers, paired with alice alike; this machine's own podman as context only;
  memory idle and with a job running;
- CI jobs with the real gitlab-runner and helper (bench_jobs.py): nested
  against the same runner on alice's own podman socket, paired alike.
Jobs run the Debian base image: what a CI job image such as debian:trixie is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

from .. import base_image, build, processes, render, runner, verify
from ..config import Config
from ..errors import CommandFailed, PipglrError
from . import bench_jobs
from .bench_stats import alternate, paired_ratio, summary

# (figure, comparison, target): checked by the benchmark, reported as pass/fail.
TARGETS = (
    ("nested_run_true_ratio", "<=", 1.3),
    ("nested_files_ratio", "<=", 1.3),
    ("job_script_first_line_ratio", "<=", 1.2),
    ("job_script_job_ratio", "<=", 1.2),
    ("job_clone_cache_first_line_ratio", "<=", 1.2),
    ("job_clone_cache_job_ratio", "<=", 1.2),
    ("warm_rebuild_seconds", "<=", 10.0),
    ("runner_bump_rebuild_seconds", "<=", 60.0),
    ("idle_memory_mib", "<=", 120.0),
    ("image_size_mb", "<=", 350.0),
)
# The bench image carries fuse-overlayfs (a few hundred KB) so the storage comparison can run.
BENCH_PACKAGES = ("fuse-overlayfs",)
SOCKET = f"unix://{render.NESTED_SOCKET}"
# Storage drivers other images choose: each gets a podman service of user podman of its own, with its
# storage on the same pipglr-storage volume as the image's native overlay.
OTHER_DRIVERS = {
    "fuse_overlayfs": ["--storage-driver", "overlay", "--storage-opt", "overlay.mount_program=/usr/bin/fuse-overlayfs"],
    "vfs": ["--storage-driver", "vfs"],
}
BENCH_ROOT = "/home/podman/.local/share/containers/bench"  # on the pipglr-storage volume

WORKS = ("run_true", "files", "cpu")
# `run --rm true`, timed after one untimed run, so that both sides start it with the image's layers and podman's
# binaries read once since the caches were dropped; prints the time (ms).
RUN_TRUE = ('{run} {image} true >/dev/null 2>&1 && s=$(date +%s%N) && {run} {image} true >/dev/null 2>&1 '
            '&& e=$(date +%s%N) && echo $(( (e - s) / 1000000 ))')
# Many small files: pack a tree of 3000 made on tmpfs (/dev/shm) into the job's writable layer, then time
# unpacking and deleting it there. The tree is made on tmpfs so that nothing is deleted on the disk just before
# the timer (on an ext4 without a journal, as this VM's own disk, every new file then scans past the inodes
# deleted in the last minute: docs/benchmarks.md). `sync` first, so that writing back this job's own pages does
# not land in the time.
FILES = ('mkdir -p /dev/shm/b/d /tmp/b && for i in $(seq 1 3000); do echo $i > /dev/shm/b/d/f$i; done '
         '&& tar cf /tmp/b/t.tar -C /dev/shm/b d && rm -rf /dev/shm/b && cd /tmp/b && sync '
         '&& s=$(date +%s%N) && tar xf t.tar && rm -rf d && e=$(date +%s%N) && echo $(( (e - s) / 1000000 ))')
# CPU-bound work: hash 256 MB of zeros; prints the time (ms).
CPU = ('s=$(date +%s%N) && head -c 268435456 /dev/zero | sha256sum >/dev/null '
       '&& e=$(date +%s%N) && echo $(( (e - s) / 1000000 ))')
# Memory of every process in the outer container (kB): PSS shares shared pages out, RSS counts them in each process.
MEMORY = "cat /proc/[0-9]*/smaps_rollup 2>/dev/null | awk '/^{field}:/ {{ s += $2 }} END {{ print s }}'"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def work_script(work: str, run: str, image: str) -> str:
    """The shell script of one sample of WORK with RUN (a `podman run --rm` command line); prints milliseconds."""
    if work == "run_true":
        return RUN_TRUE.format(run=run, image=image)
    return f"{run} {image} sh -c '{FILES if work == 'files' else CPU}'"


def settle() -> None:
    """The state every sample starts from, the same for both sides: nothing dirty to write back (sync) and no
    page, dentry or inode cached (drop_caches 3: the machine's kernel, under the stand-in and every container)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def evaluate(figures: dict[str, dict[str, float]]) -> list[dict]:
    """One row per target: the median against the target."""
    rows = []
    for name, op, target in TARGETS:
        if name not in figures:
            rows.append({"figure": name, "target": f"{op} {target}", "value": None, "pass": None})
            continue
        value = figures[name]["median"]
        rows.append({"figure": name, "target": f"{op} {target}", "value": value,
                     "pass": value <= target if op == "<=" else value >= target})
    return rows


def table(figures: dict[str, dict[str, float]], rows: list[dict]) -> str:
    lines = [f"{'figure':36} {'median':>10} {'min':>10} {'max':>10} {'runs':>5} {'q1..q3':>13}  target"]
    targets = {r["figure"]: r for r in rows}
    for name, s in figures.items():
        row = targets.get(name)
        verdict = "" if row is None else f"{row['target']}  {'PASS' if row['pass'] else 'FAIL'}"
        iqr = f"{s['q1']}..{s['q3']}" if "q1" in s else ""
        lines.append(f"{name:36} {s['median']:>10} {s['min']:>10} {s['max']:>10} {s['runs']:>5} {iqr:>13}  {verdict}")
    for row in rows:
        if row["pass"] is None:
            lines.append(f"{row['figure']:36} {'not measured':>10}  {row['target']}")
    return "\n".join(lines) + "\n"


def _ms_lines(text: str, expected: int | None = None, what: str = "") -> list[float]:
    """Durations printed in milliseconds, one per line, in seconds; EXPECTED of them, or an error."""
    samples = [int(line) / 1000.0 for line in text.split() if line.strip().isdigit()]
    if expected is not None and len(samples) != expected:
        raise PipglrError(f"bench: {what} failed after {len(samples)} of {expected} runs: {text.strip()[-300:]!r}")
    return samples


def _timed(action) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _remove_image(ref: str) -> None:
    """podman rmi also removes the image's build-cache parents that nothing else uses."""
    processes.execute(["podman", "rmi", "--force", ref], check=False)


def pushed_size(manifest: dict, manifest_bytes: int) -> int:
    """Bytes a push transfers: the manifest, its config and its (compressed) layers."""
    return manifest_bytes + manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])


def shared_layers(before: list[str], after: list[str]) -> int:
    """How many bottom layers two images share: the ones a rebuild reused."""
    shared = 0
    for a, b in zip(before, after, strict=False):
        if a != b:
            break
        shared += 1
    return shared


# --- build ------------------------------------------------------------------

def cold_build(config: Config, arch: str) -> tuple[float, float]:
    """Seconds to bootstrap Debian (into a scratch tarball) and to build every layer without cache."""
    cold = dataclasses.replace(config, image_name="localhost/pipglr-bench-cold", tags=("cold",),
                               platforms=(f"linux/{arch}",))
    with tempfile.TemporaryDirectory(prefix="pipglr-bench-") as tmp:
        processes.say(f"bench: cold {arch}: bootstrapping Debian {config.base_suite} into a scratch tarball")
        bootstrap = _timed(lambda: processes.run(base_image.mmdebstrap_argv(config, arch, Path(tmp) / "base.tar"),
                                                 on_line=base_image.mmdebstrap_progress, quiet=True))
    processes.say(f"bench: cold {arch}: building every layer without cache")
    try:
        layers = _timed(lambda: build.build(cold, no_cache=True))
    finally:
        _remove_image(cold.image_ref)
    return bootstrap, layers


def bump_build(config: Config, runner_file: str, version: str) -> tuple[float, int]:
    """Seconds to rebuild with another gitlab-runner version, and how many layers were rebuilt."""
    arch = base_image.native_arch()
    path = Path(runner_file.replace("{arch}", arch))
    helper = runner.helper_binary(path, arch)
    bumped = dataclasses.replace(config, image_name="localhost/pipglr-bench-bump", tags=("bump",),
                                 platforms=(f"linux/{arch}",), runner_version=version, runner_source="file",
                                 runner_file=runner_file, runner_sha256=runner.sha256_of(path),
                                 helper_sha256=runner.sha256_of(helper) if helper else "")
    try:
        seconds = _timed(lambda: build.build(bumped))
        before, after = _layers(config.image_ref), _layers(bumped.image_ref)
    finally:
        _remove_image(bumped.image_ref)  # and its new layers, so the next run rebuilds them again
    return seconds, len(after) - shared_layers(before, after)


def _layers(ref: str) -> list[str]:
    return json.loads(processes.execute(["podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref]).stdout)


def measure_build(config: Config, runs: int, cold_runs: int, arm64: bool, bump: tuple[str, str] | None) -> dict:
    figures: dict[str, dict[str, float]] = {}
    arch = base_image.native_arch()
    if cold_runs:
        cold = [cold_build(config, arch) for _ in range(cold_runs)]
        figures["cold_bootstrap_seconds"] = summary([b for b, _ in cold])
        figures["cold_build_seconds"] = summary([c for _, c in cold])
        figures["cold_total_seconds"] = summary([b + c for b, c in cold])
    if arm64 and arch != "arm64":
        bootstrap, layers = cold_build(config, "arm64")
        figures["cold_arm64_bootstrap_seconds"] = summary([bootstrap])
        figures["cold_arm64_build_seconds"] = summary([layers])
        figures["cold_arm64_total_seconds"] = summary([bootstrap + layers])

    build.build(config)  # the image itself; the timed rebuilds below change nothing
    figures["warm_rebuild_seconds"] = summary([_timed(lambda: build.build(config)) for _ in range(runs)])
    if bump:
        bumps = [bump_build(config, *bump) for _ in range(runs)]
        figures["runner_bump_rebuild_seconds"] = summary([s for s, _ in bumps])
        figures["runner_bump_rebuilt_layers"] = summary([float(n) for _, n in bumps])
    return figures


# --- image ------------------------------------------------------------------

def measure_image(image: str) -> dict:
    inspect = json.loads(processes.execute(["podman", "image", "inspect", image]).stdout)[0]
    with tempfile.TemporaryDirectory(prefix="pipglr-bench-") as tmp:
        # A registry push compresses the layers with gzip; an OCI layout holds the same blobs.
        processes.execute(["podman", "push", "--quiet", "--compression-format", "gzip", image, f"oci:{tmp}:bench"])
        blobs = Path(tmp) / "blobs" / "sha256"
        index = json.loads((Path(tmp) / "index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.loads((blobs / digest).read_text())
        compressed = pushed_size(manifest, (blobs / digest).stat().st_size)
    return {"image_size_mb": summary([inspect["Size"] / 1e6]),
            "image_compressed_mb": summary([compressed / 1e6]),
            "image_layers": summary([float(len(inspect["RootFS"]["Layers"]))])}


# --- runtime ----------------------------------------------------------------

class Outer:
    """The running pipglr container on the stand-in host, seen from this machine."""

    def __init__(self, target: verify.Target):
        self.target = target
        self.uid = target.labels["io.pipglr.podman-uid"]  # for user podman's /run/user/UID

    def as_podman(self, script: str, check: bool = True, detach: bool = False) -> str:
        """A shell script as user podman inside the outer container."""
        return self.target.podman(*self.target.exec_args("podman", detach=detach), "sh", "-c", script,
                                  check=check, timeout=1800).stdout

    def load(self, image: str, url: str) -> None:
        """IMAGE into the storage of the podman service at URL."""
        processes.copy_image(image, ["podman", *self.target.exec_args("podman", interactive=True),
                                  "podman", "--url", url, "load", "--quiet"], env=self.target.env)

    def memory_mib(self, field: str) -> float:
        out = self.target.exec("sh", "-c", MEMORY.format(field=field), check=True).stdout.strip()
        return int(out) / 1024.0

    def podman_service_exited(self) -> bool:
        """The nested podman service, socket-activated, has exited after its idle time (podman.socket stays)."""
        state = self.target.exec("systemctl", "--user", "-M", f"{self.uid}@",
                                 "is-active", "podman.service")
        return state.stdout.strip() in ("inactive", "failed")

    def ready(self) -> bool:
        probe = self.target.exec("sh", "-c", "systemctl is-active --quiet runner.service && "
                                 f"curl -sf --unix-socket {render.NESTED_SOCKET} http://d/_ping")
        return probe.stdout.strip() == "OK"

    def start_service(self, name: str, flags: list[str]) -> str:
        """A podman service of user podman with other storage; returns its URL once it answers."""
        root, run = f"{BENCH_ROOT}/{name}", f"/run/user/{self.uid}/bench-{name}"
        url = f"unix://{run}.sock"
        self.as_podman(f"mkdir -p {root} {run} && exec podman {' '.join(flags)} --root {root} --runroot {run} "
                       f"--tmpdir {run}/tmp system service --time 0 {url}", detach=True)
        processes.wait_for(lambda: self.as_podman(f"podman --url {url} info >/dev/null 2>&1 && echo up",
                                                  check=False).strip() == "up", 60, what=f"the {name} podman service")
        return url


class Side:
    """Where one side of a comparison runs jobs: SHELL runs a shell script there, RUN is its `podman run --rm`."""

    def __init__(self, name: str, shell, run: str):
        self.name, self.shell, self.run = name, shell, run

    def sample(self, work: str, image: str) -> float:
        """Seconds of one sample of WORK, from the settled state."""
        settle()
        return _ms_lines(self.shell(work_script(work, self.run, image)), 1, f"{self.name} {work}")[0]


def compare(a: Side, b: Side, image: str, pairs: int) -> dict[str, dict[str, list[float]]]:
    """{work: {side name: samples}} for every work, A and B alternated pair by pair (bench_stats.alternate)."""
    result = {}
    sides = {a.name: a, b.name: b}
    for work in WORKS:
        processes.say(f"bench: {work}: {a.name} and {b.name}, {pairs} pairs in alternating order")
        result[work] = alternate(pairs, (a.name, b.name), lambda name, work=work: sides[name].sample(work, image))
    return result


def measure_runtime(config: Config, runs: int, pairs: int, job_image: str) -> dict:
    image = config.image_ref
    figures: dict[str, dict[str, float]] = {}
    # Context only: this machine's own podman (rootful or not, runc, cgroup v1): not a user's host.
    vm = Side("this machine's", lambda script: processes.execute(["sh", "-c", script]).stdout,
              "podman run --rm --network host")
    for work in WORKS:
        figures[f"vm_{work}_seconds"] = summary([vm.sample(work, job_image) for _ in range(runs)])

    with bench_jobs.journaled_home() as home:
        figures.update(_nesting(image, runs, pairs, job_image, home))
    return figures


def _nesting(image: str, runs: int, pairs: int, job_image: str, home: Path) -> dict:
    """Start, memory and the nesting comparison on a stand-in whose /home is the journaled ext4 HOME."""
    figures: dict[str, dict[str, float]] = {}
    cleanup: list = []
    try:
        target = verify.setup_full(image, "pipglr-bench", cleanup, home_fs=home)
        outer, standin = Outer(target), target.standin
        processes.wait_for(outer.ready, 120, interval=0.2, what="the runner and the podman socket")

        processes.say(f"bench: `runlabel run` to ready, {runs} times")
        ready = []
        for _ in range(runs):
            standin.as_user("alice", ["podman", "stop", verify.CONTAINER])
            standin.as_user("alice", ["podman", "rm", verify.CONTAINER])
            started = time.monotonic()
            standin.as_user("alice", ["podman", "container", "runlabel", "run", image])
            processes.wait_for(outer.ready, 120, interval=0.2, what="the runner and the podman socket")
            ready.append(time.monotonic() - started)
        figures["ready_seconds"] = summary(ready)
        # Idle: the nested podman service has exited (socket activation starts it on a request and it exits
        # 5 s after the last one), as it is but for the few seconds after each health check's ping (every 30 s).
        processes.wait_for(outer.podman_service_exited, 120, what="the idle nested podman service to exit")
        figures["idle_memory_mib"] = summary([outer.memory_mib("Pss") for _ in range(runs)])
        figures["idle_memory_rss_mib"] = summary([outer.memory_mib("Rss") for _ in range(runs)])
        processes.wait_for(outer.ready, 60, what="the nested podman to answer")  # a ping starts it, as the health check's
        figures["idle_memory_serving_mib"] = summary([outer.memory_mib("Pss")])

        standin.load_image("alice", job_image)
        outer.load(job_image, SOCKET)
        alice = Side("alice", lambda script: standin.as_user("alice", ["sh", "-c", script], timeout=1800).stdout,
                     "podman run --rm --network host")
        nested = Side("nested", outer.as_podman, f"podman --url {SOCKET} run --rm --network host")
        for work, samples in compare(alice, nested, job_image, pairs).items():
            figures[f"alice_{work}_seconds"] = summary(samples["alice"])
            figures[f"nested_{work}_seconds"] = summary(samples["nested"])
            figures[f"nested_{work}_ratio"] = paired_ratio(samples["nested"], samples["alice"])

        outer.as_podman(f"podman --url {SOCKET} run --detach --name bench-job {job_image} sleep 600")
        try:
            figures["job_memory_mib"] = summary([outer.memory_mib("Pss") for _ in range(runs)])
        finally:
            outer.as_podman(f"podman --url {SOCKET} rm --force --time 0 bench-job", check=False)

        for name, flags in OTHER_DRIVERS.items():  # peers for comparison: fewer pairs (vfs starts slowly)
            url = outer.start_service(name, flags)
            outer.load(job_image, url)
            peer = Side(name, outer.as_podman, f"podman --url {url} run --rm --network host")
            for work, samples in compare(alice, peer, job_image, runs).items():
                figures[f"{name}_{work}_ratio"] = paired_ratio(samples[name], samples["alice"])
    finally:
        for close in cleanup:
            with contextlib.suppress(CommandFailed):
                close()
    return figures


def run(config: Config, runs: int, out: Path, cold_runs: int = 3, arm64: bool = True,
        bump: tuple[str, str] | None = None, jobs: bool = True, pairs: int = 20, job_pairs: int = 20,
        builds: bool = True) -> int:
    if not os.access(DROP_CACHES, os.W_OK):
        raise PipglrError(f"bench: every sample starts with the caches dropped ({DROP_CACHES}): run it as root")
    config = dataclasses.replace(config, extra_packages=tuple(sorted({*config.extra_packages, *BENCH_PACKAGES})))
    image = config.image_ref
    job_image = base_image.base_tag(config, base_image.native_arch()) if not config.base_image else config.base_image
    processes.say(f"bench: {image}, {runs} runs per figure, {pairs} pairs per nesting comparison, {job_pairs} "
                  "per job comparison "
                  f"(cold builds: {cold_runs}, arm64: {'once' if arm64 else 'no'})")
    if builds:
        if bump is None:
            processes.say("bench: no --bump-runner-file/--bump-runner-version given: the runner bump rebuild is not measured")
        figures = measure_build(config, runs, cold_runs, arm64, bump)
    else:
        processes.say("bench: --no-builds: the builds are not timed")
        build.build(config)
        figures = {}
    figures.update(measure_image(image))
    figures.update(measure_runtime(config, runs, pairs, job_image))
    if jobs:
        figures.update(bench_jobs.measure(config, image, job_image, job_pairs))

    rows = evaluate(figures)
    out.mkdir(parents=True, exist_ok=True)
    report = {"image": image, "job_image": job_image, "pairs": pairs, "job_pairs": job_pairs,
              "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "figures": figures, "targets": rows}
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(figures, rows)
    (out / "bench.txt").write_text(text)
    processes.say(text)
    return 0 if all(r["pass"] for r in rows if r["pass"] is not None) else 1
