"""End to end: the job features users rely on, with the real gitlab-runner and helper, nested.

One world for the module, set up as the README tells a user: on the stand-in
host (user alice, rootless podman), the test coordinator (GitLab's runner API,
artifacts, and git's dumb HTTP protocol for a bare repository this test
makes), `runlabel register` with the REGISTRATION_TOKEN secret, the
config.toml secret, setupstorage, setupcache, the helper image through the
`preload` runlabel, `runlabel run`; the job image (the Debian base) and a
service image this test builds are loaded into the nested storage. Then git
clone and fetch, cache, artifacts, services of two jobs at once, after_script, a job timeout, a
job cancelled from GitLab and a masked variable; then the seeds' own jobs (seed
000's flags, seed 002's non-root images, seed 003's apt sandbox, on job images
this test builds) and gitlab-runner's init flag. Each is checked on what the
coordinator recorded and on the trace, and each leaves no nested container.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

import pytest

from pipglr_builder.base_image import ARCHIVE_LABEL, KEY_LABEL
from pipglr_builder.errors import PipglrError
from pipglr_builder.harness.coordinator import HOST, PORT, PROJECT, URL, VOLUME, Coordinator, Repository
from pipglr_builder.processes import image_label, wait_for
from pipglr_builder.render import NESTED_VOLUMES
from pipglr_builder.standin import StandIn

from .conftest import BASE, HELPER, sh
from .test_e2e import PODMAN, World

pytestmark = pytest.mark.slow
SERVICE_PORT = 18080  # every job's service listens on this port, on its job's own network
# tini as PID 1 passes SIGTERM on, as a well-behaved service image does (a PID 1 that ignores it costs
# every job podman's 10 s stop timeout at cleanup). EXPOSE: the runner's health check waits for that port.
# The page names the job that started the service (SERVICE_MARKER, a service variable).
SERVICE_CONTAINERFILE = f"""FROM {BASE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox tini \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /srv/www
EXPOSE {SERVICE_PORT}
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sh", "-c", "echo service-of-$SERVICE_MARKER > /srv/www/marker.txt && exec busybox httpd -f -v -p 0.0.0.0:{SERVICE_PORT} -h /srv/www"]
"""


@pytest.fixture(scope="module")
def service_image():
    """A service image made from the Debian base: busybox httpd answering on SERVICE_PORT."""
    name = f"localhost/pipglr-e2e-service:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="pipglr-e2e-service-") as context:
        (Path(context) / "Containerfile").write_text(SERVICE_CONTAINERFILE)
        sh("buildah", "bud", "--isolation", "chroot", "--quiet", "--tag", name, context)
    try:
        yield name
    finally:
        sh("podman", "rmi", "--force", name, check=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root, work = tmp_path_factory.mktemp("git-root"), tmp_path_factory.mktemp("git-work")
    r = Repository(root, work)
    r.commit({"README.md": "pipglr e2e repository, first commit\n"}, "add README.md")
    return r


@pytest.fixture(scope="module")
def world(image, repo, service_image):
    git_root = repo.root
    git_root.chmod(0o755)
    standin = StandIn(BASE, volumes=(VOLUME, f"{git_root}:/git:ro"))
    token = f"reg-{uuid.uuid4().hex}"
    try:
        standin.start()
        w = World(standin, image, Coordinator(standin, token).start("--external-url", URL, "--git-root", "/git"))
        standin.load_image("alice", image)
        # As the README says: register with the token secret, the config secret, storage, cache, helper, run;
        # two jobs at a time (the README's `concurrent = 2` line before register).
        w.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=token + "\n")
        w.alice("sh", "-c", "echo 'concurrent = 2' > config.toml")
        w.alice("podman", "container", "runlabel", "register", image, "--", "--url", URL, "--name", "e2e-jobs")
        w.alice("podman", "secret", "create", "config.toml", "config.toml")
        for label in ("setupstorage", "setupcache"):
            w.alice("podman", "container", "runlabel", label, image)
        w.preload(HELPER)
        w.alice("podman", "container", "runlabel", "run", image)
        w.wait_booted()
        w.helper_id = nested_podman(w, "image", "inspect", "--format", "{{.Id}}", HELPER)  # every job's helper
        w.load_nested(BASE)
        w.load_nested(service_image)
        yield w
    finally:
        standin.close()


def queue(world: World, *script: str, **spec) -> int:
    """Queue a job (the coordinator's /_test/jobs spec: see job_payload in gitlab_coordinator.py)."""
    return world.coordinator("POST", "/_test/jobs", {"script": list(script), "image": BASE, **spec})["id"]


def run_job(world: World, *script: str, **spec) -> dict:
    job = world.wait_job(queue(world, *script, **spec))
    assert job["job_token"] not in job["trace"], "the job token leaked into the trace"
    return job


def nested_containers(world: World) -> list[str]:
    return world.outer(*PODMAN, "ps", "--all", "--format", "{{.Names}}", check=True).stdout.split()


def assert_no_job_containers(world: World) -> None:
    """Nothing the jobs started is left in the nested podman (the runner removes them after the job)."""
    left: list[str] = []

    def gone() -> bool:
        left[:] = nested_containers(world)
        return not left
    try:
        wait_for(gone, 60, interval=1, what="the job's nested containers to be removed")
    except PipglrError:
        pytest.fail(f"nested containers left behind: {left}")


def test_jobs_reach_host_containers_internal_where_the_runner_does(world):
    """The product fix: pipglr-env gives the nested podman the outer container's address for the name."""
    hosts = world.outer("cat", "/etc/hosts", check=True).stdout
    outer = next(line.split()[0] for line in hosts.splitlines()
                 if "host.containers.internal" in line.split()[1:] and not line.startswith("#"))
    conf = "/home/podman/.config/containers/containers.conf.d/50-pipglr-host-internal.conf"
    assert f'host_containers_internal_ip = "{outer}"' in world.outer("cat", conf, check=True).stdout
    assert world.outer("stat", "--format", "%U:%G", conf, check=True).stdout.strip() == "podman:podman"
    # And a connection there reaches GitLab (from the job's own network, through the nested pasta).
    job = run_job(world, "getent hosts host.containers.internal",
                  f"exec 3<>/dev/tcp/{HOST}/{PORT}; printf 'GET /_test/state HTTP/1.0\\r\\n\\r\\n' >&3; "
                  "head -n 1 <&3")
    assert job["state"] == "success", job["trace"][-3000:]
    assert f"{outer} " in job["trace"] or f"{outer}\t" in job["trace"], job["trace"][-2000:]
    assert "HTTP/1.0 200 OK" in job["trace"] or "HTTP/1.1 200 OK" in job["trace"], job["trace"][-2000:]
    assert_no_job_containers(world)


def test_git_clone_then_fetch(world, repo):
    first = repo.git("rev-parse", "HEAD", cwd=repo.work)
    clone = run_job(world, "cat README.md", git={"sha": first, "ref": "main"}, variables={"GIT_STRATEGY": "clone"})
    assert clone["state"] == "success", clone["trace"][-3000:]
    assert "Initialized empty Git repository" in clone["trace"] and "Created fresh repository." in clone["trace"]
    assert f"Checking out {first[:8]} as detached HEAD (ref is main)" in clone["trace"]
    assert "pipglr e2e repository, first commit" in clone["trace"]
    served = [r for r in world.state()["git_requests"] if r["status"] == 200]
    assert served and {r["job_id"] for r in served} == {clone["id"]}, served
    assert any(r["path"] == f"/{PROJECT}.git/info/refs" for r in served)

    # A project set to git strategy "fetch": the build directory is kept and fetched into.
    fetches = []
    for name in ("second.txt", "third.txt"):
        sha = repo.commit({name: f"content of {name}\n"}, f"add {name}")
        job = run_job(world, f"cat {name}", "cat README.md", git={"sha": sha, "ref": "main"},
                      allow_git_fetch=True, variables={"GIT_STRATEGY": "fetch"})
        assert job["state"] == "success", job["trace"][-3000:]
        assert "Fetching changes..." in job["trace"] and f"Checking out {sha[:8]}" in job["trace"]
        assert f"content of {name}" in job["trace"] and "first commit" in job["trace"]
        fetches.append(job)
    # The second fetch found the repository the first one made (the runner removes .git/config after
    # each job, so it adds the remote again), and fetched only what was new.
    assert "Reinitialized existing Git repository" in fetches[1]["trace"], fetches[1]["trace"][-3000:]
    requests = world.state()["git_requests"]
    first_commit = f"/{PROJECT}.git/objects/{first[:2]}/{first[2:]}"
    fetched = [{r["path"] for r in requests if r["job_id"] == job["id"]} for job in fetches]
    assert first_commit in fetched[0] and first_commit not in fetched[1], fetched
    assert all(r["job_id"] is not None for r in requests if r["status"] == 200)
    assert not [r for r in requests if r["status"] == 403], "a clone used a wrong token"
    assert_no_job_containers(world)


CACHE = [{"key": "e2e-deps", "paths": ["deps/"], "policy": "pull-push", "when": "on_success", "untracked": False,
          "fallback_keys": []}]


def test_cache_saved_by_one_job_restored_in_the_next(world):
    saver = run_job(world, "mkdir -p deps", "echo cached-by-$CI_JOB_ID > deps/value.txt", cache=CACHE)
    assert saver["state"] == "success", saver["trace"][-3000:]
    assert "Creating cache e2e-deps" in saver["trace"] and "Created cache" in saver["trace"]
    reader = run_job(world, "cat deps/value.txt", cache=CACHE)
    assert reader["state"] == "success", reader["trace"][-3000:]
    assert "Checking cache for e2e-deps" in reader["trace"]
    assert "Successfully extracted cache" in reader["trace"]
    assert f"cached-by-{saver['id']}" in reader["trace"]
    assert_no_job_containers(world)


def test_after_a_prune_the_next_job_finds_its_helper_and_its_cache(world):
    """The daily prune (pipglr-prune.service, prune_age) keeps what jobs use: before, it ran
    `system prune --all --volumes` and air-gapped jobs lost their helper and every cache."""
    saver = run_job(world, "mkdir -p deps", "echo before-the-prune > deps/value.txt", cache=CACHE)
    assert saver["state"] == "success", saver["trace"][-3000:]
    pruned = world.outer("systemctl", "start", "pipglr-prune.service")
    assert pruned.returncode == 0, pruned.stderr
    assert HELPER in nested_podman(world, "images", "--format", "{{.Repository}}:{{.Tag}}")
    reader = run_job(world, "cat deps/value.txt", cache=CACHE)
    assert reader["state"] == "success", reader["trace"][-3000:]
    assert "Successfully extracted cache" in reader["trace"] and "before-the-prune" in reader["trace"]
    assert_no_job_containers(world)


def nested_podman(world: World, *argv: str) -> str:
    return world.outer(*PODMAN, *argv, check=True).stdout


def test_each_project_has_its_own_cache_volume(world):
    """Seed 000's configuration, volumes = ["/cache"]: gitlab-runner makes one cache volume per project
    and opens it to any job user with the helper's permission container; on volume pipglr-cache.
    Project B neither reads nor poisons what project A keeps there."""
    a, b = {"id": 42, "path": PROJECT}, {"id": 77, "path": "other/project"}
    mark = uuid.uuid4().hex
    saver = run_job(world, f"echo {mark} > /cache/kept-by-a.txt", project=a)
    assert saver["state"] == "success", saver["trace"][-3000:]
    other = run_job(world, "ls -la /cache", "test ! -e /cache/kept-by-a.txt",
                    "echo poisoned-by-b > /cache/kept-by-a.txt", project=b)
    assert other["state"] == "success", other["trace"][-3000:]
    assert mark not in other["trace"]
    again = run_job(world, "cat /cache/kept-by-a.txt", project=a)
    assert again["state"] == "success", again["trace"][-3000:]
    assert mark in again["trace"] and "poisoned-by-b" not in again["trace"]

    # gitlab-runner 19 hashes the names; its labels say whose a volume is.
    volumes = nested_podman(world, "volume", "ls", "--format",
                            '{{index .Labels "com.gitlab.gitlab-runner.project.id"}} '
                            '{{index .Labels "com.gitlab.gitlab-runner.type"}} {{.Mountpoint}}').splitlines()
    caches = {project: [v for v in volumes if v.startswith(f"{project} cache ")] for project in ("42", "77")}
    assert caches["42"] and caches["77"], volumes
    assert all(v.split()[2].startswith(NESTED_VOLUMES + "/") for v in caches["42"] + caches["77"]), volumes
    mounted = world.outer("findmnt", "--noheadings", "--output", "TARGET", NESTED_VOLUMES).stdout.strip()
    assert mounted == NESTED_VOLUMES, "the cache volumes are not on volume pipglr-cache"
    assert_no_job_containers(world)


# An image under the helper's name that lacks the `gitlab-runner-helper cache-init` this runner
# calls in its permission container, as a helper of another release or flavour can.
FOREIGN_HELPER = f"""FROM {BASE}
ENTRYPOINT ["/bin/sh", "-c", "exec \\"$@\\"", "entrypoint"]
"""


def test_a_helper_not_matching_the_runner_fails_as_in_seed_000_and_the_matching_one_does_not(world, tmp_path):
    foreign = f"localhost/pipglr-e2e-foreign-helper:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Containerfile").write_text(FOREIGN_HELPER)
    sh("buildah", "bud", "--isolation", "chroot", "--quiet", "--tag", foreign, str(tmp_path))
    try:
        world.load_nested(foreign, tag=HELPER)
        failed = run_job(world, "echo never-runs")
        assert failed["state"] == "failed", failed["trace"][-3000:]
        assert "set volume permissions: running permission container" in failed["trace"], failed["trace"][-3000:]
        assert "waiting for permission container to finish: exit code 127" in failed["trace"]
    finally:
        world.preload(HELPER)  # the matching helper, back under its name
        nested_podman(world, "rmi", "--force", foreign)
        sh("podman", "rmi", "--force", foreign, check=False)
    job = run_job(world, "echo runs-with-the-matching-helper", cache=CACHE)
    assert job["state"] == "success", job["trace"][-3000:]
    assert "permission container" not in job["trace"]
    assert_no_job_containers(world)


ARTIFACTS = [{"name": "e2e-out", "paths": ["out/"], "when": "on_success", "artifact_format": "zip",
              "artifact_type": "archive", "expire_in": "1 day", "untracked": False, "exclude": []}]


def test_artifacts_uploaded_then_downloaded_by_a_dependent_job(world):
    producer = run_job(world, "mkdir -p out", "echo built-by-$CI_JOB_ID > out/result.txt", name="build",
                       artifacts=ARTIFACTS)
    assert producer["state"] == "success", producer["trace"][-3000:]
    assert "Uploading artifacts..." in producer["trace"] and "201 Created" in producer["trace"]
    uploaded = producer["artifacts"]
    assert "out/result.txt" in uploaded["files"], uploaded
    assert uploaded["chunked"] and uploaded["artifact_format"] == "zip" and uploaded["artifact_type"] == "archive"
    assert uploaded["expire_in"] == "1 day"

    consumer = run_job(world, "cat out/result.txt", name="test", dependencies=[producer["id"]])
    assert consumer["state"] == "success", consumer["trace"][-3000:]
    assert f"Downloading artifacts for build ({producer['id']})" in consumer["trace"]
    assert f"built-by-{producer['id']}" in consumer["trace"]
    downloads = [e for e in world.state()["events"] if e["kind"] == "artifacts-download"]
    assert downloads and all(e["allowed"] and e["by"] == consumer["id"] and e["job_id"] == producer["id"]
                             for e in downloads), downloads
    assert_no_job_containers(world)


def nested_networks(world: World) -> list[str]:
    return world.outer(*PODMAN, "network", "ls", "--format", "{{.Name}}", check=True).stdout.split()


def test_services_of_two_jobs_at_once_each_on_its_own_network(world, service_image):
    """register's default, a network per job: two jobs at once, each with a service on the same port, each
    reaching its own by its alias; the runner's health check reaches them (no 30 s timeout warning)."""
    fetch = (f"for i in $(seq 100); do (: > /dev/tcp/web/{SERVICE_PORT}) 2>/dev/null && break; sleep 0.1; done; "
             f"exec 3<>/dev/tcp/web/{SERVICE_PORT}; printf 'GET /marker.txt HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
    # sleep: the two jobs overlap (checked below), so their services run side by side.
    ids = [queue(world, "getent hosts web", fetch, "sleep 5", name=f"service-{who}",
                 services=[{"name": service_image, "alias": "web",
                            "variables": [{"key": "SERVICE_MARKER", "value": f"job-{who}"}]}])
           for who in ("a", "b")]
    jobs = [world.wait_job(i) for i in ids]
    for who, job in zip(("a", "b"), jobs):
        trace = job["trace"]
        assert job["state"] == "success", trace[-3000:]
        assert f"Starting service {service_image}" in trace
        assert "200 OK" in trace and f"service-of-job-{who}" in trace, trace[-3000:]
        assert "probably didn't start properly" not in trace and "Health check error" not in trace, trace[-3000:]
    assert max(j["started_at"] for j in jobs) < min(j["finished_at"] for j in jobs), f"jobs did not overlap: {jobs}"
    assert_no_job_containers(world)
    assert nested_networks(world) == ["podman"], "a job's network was left behind"


def test_after_script_runs_after_a_failing_script(world):
    job = run_job(world, "echo in-the-script", "exit 3", "echo not-reached",
                  after_script=["echo after-script-ran status=$CI_JOB_STATUS"])
    assert job["state"] == "failed"
    assert job["exit_code"] == 3 and job["failure_reason"] == "script_failure"
    trace = job["trace"]
    assert "in-the-script" in trace and "$ echo not-reached" not in trace
    assert "Running after script..." in trace and "after-script-ran status=failed" in trace
    assert trace.index("in-the-script") < trace.index("after-script-ran")
    assert_no_job_containers(world)


def test_a_job_over_its_timeout_is_failed_with_the_timeout_reason(world):
    job = run_job(world, "echo before-the-timeout", "sleep 600", "echo not-reached", timeout=10)
    assert job["state"] == "failed"
    assert job["failure_reason"] == "job_execution_timeout", job
    assert "before-the-timeout" in job["trace"] and "$ echo not-reached" not in job["trace"]
    assert "execution took longer than 10s seconds" in job["trace"], job["trace"][-2000:]
    assert_no_job_containers(world)


def cancel_once_ticking(world, job_id: int) -> dict:
    """Cancel JOB_ID in GitLab once its trace shows "tick"; the job when the runner sent its final update."""
    wait_for(lambda: "tick" in world.state()["jobs"][str(job_id)]["trace"], 120, interval=1,
             what="the job to run and send its trace")
    world.coordinator("POST", f"/_test/jobs/{job_id}/cancel", {})

    def final_update():
        job = world.state()["jobs"][str(job_id)]
        return job if any(u["state"] in ("success", "failed") for u in job.get("updates", [])) else None
    return wait_for(final_update, 60, interval=1, what="the runner to stop the cancelled job")


def test_a_job_cancelled_from_gitlab_stops(world):
    job_id = queue(world, "echo cancel-me", "while true; do echo tick; sleep 1; done")
    job = cancel_once_ticking(world, job_id)
    assert job["state"] == "canceled"
    assert [u["state"] for u in job["updates"] if u["state"] != "running"] == ["failed"], job["updates"]
    assert_no_job_containers(world)
    # The runner goes on taking jobs.
    after = run_job(world, "echo after-the-cancel")
    assert after["state"] == "success", after["trace"][-2000:]


def test_a_masked_variable_never_appears_in_the_trace(world):
    secret = f"pipglr-masked-{uuid.uuid4().hex[:12]}"
    job = run_job(world, 'echo "secret=$E2E_SECRET"', f'test "${{#E2E_SECRET}}" -eq {len(secret)} && echo secret-is-set',
                  masked_variables={"E2E_SECRET": secret})
    assert job["state"] == "success", job["trace"][-2000:]
    assert "secret=[MASKED]" in job["trace"] and "secret-is-set" in job["trace"]
    assert secret not in job["trace"]
    assert_no_job_containers(world)


# The seeds' own job configurations (shared/seeds 000, 002, 003) and gitlab-runner's init flag.
# Job images as real ones are made: USER set to a uid the image knows and to one it does not (seed 002's
# noroot images), and a Debian image whose apt installs from a repository inside it (seed 003), so apt
# does what it does on every Debian job without reaching the network.
NAMED_USER_IMAGE = f"""FROM {BASE}
RUN useradd --uid 1000 --create-home --shell /bin/bash app
USER app
"""
NUMERIC_USER_IMAGE = f"""FROM {BASE}
USER 4242
"""
APT_REPOSITORY = "/srv/repo"
APT_IMAGE = f"""FROM {BASE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends apt-utils strace \\
 && mkdir -p {APT_REPOSITORY} && cd {APT_REPOSITORY} && apt-get download hello \\
 && apt-ftparchive packages . > Packages && apt-ftparchive release . > Release && chmod -R a+rX . \\
 && rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* \\
 && echo 'deb [trusted=yes] file:{APT_REPOSITORY} ./' > /etc/apt/sources.list.d/local.list \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="module")
def seed_images(world):
    """The job images above, built here from the Debian base and loaded into the nested storage."""
    images = {}
    try:
        for name, containerfile in (("named-user", NAMED_USER_IMAGE), ("numeric-user", NUMERIC_USER_IMAGE),
                                    ("apt", APT_IMAGE)):
            images[name] = f"localhost/pipglr-e2e-{name}:{uuid.uuid4().hex[:8]}"
            with tempfile.TemporaryDirectory(prefix="pipglr-e2e-seed-") as context:
                (Path(context) / "Containerfile").write_text(containerfile)
                sh("buildah", "bud", "--isolation", "chroot", "--quiet", "--tag", images[name], context)
            world.load_nested(images[name])
        yield images
    finally:
        for image in images.values():
            sh("podman", "rmi", "--force", image, check=False)


# Seed 000's runner environment (its config.toml), FF_NETWORK_PER_BUILD also being register's default.
SEED_000_VARIABLES = {"FF_NETWORK_PER_BUILD": "1", "FF_USE_FASTZIP": "1", "ARTIFACT_COMPRESSION_LEVEL": "fast",
                      "CACHE_COMPRESSION_LEVEL": "fast", "FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR": "1"}
# The trace's header names the flags that differ from their defaults: FF_USE_FASTZIP is on by default in
# gitlab-runner 19 (deprecated, to be removed in 19.7), so it is said only when turned off.
SEED_000_FLAGS = ("FF_NETWORK_PER_BUILD:true", "FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR:true")
NOT_USING_UMASK = "Not using umask - FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR is set!"


def feature_flags(trace: str) -> str:
    """The trace's header line naming the flags that differ from their defaults."""
    return next((line for line in trace.splitlines() if "feature flags:" in line), "")


def seed_cache(key: str, path: str) -> list[dict]:
    return [{**CACHE[0], "key": key, "paths": [path]}]


def test_seed_000_flags_with_a_cache(world):
    """Seed 000's three flags: the cache volume opened by the permission container, the cache saved
    with fastzip and restored by the next job, and the runner dropping its umask."""
    cache = seed_cache("seed-000", "deps/")
    saver = run_job(world, "mkdir -p deps", "echo seed-000-by-$CI_JOB_ID > deps/value.txt",
                    "echo seed-000 > /cache/seed-000.txt", cache=cache, variables=SEED_000_VARIABLES)
    assert saver["state"] == "success", saver["trace"][-3000:]
    reader = run_job(world, "cat deps/value.txt", "cat /cache/seed-000.txt", cache=cache,
                     variables=SEED_000_VARIABLES)
    assert reader["state"] == "success", reader["trace"][-3000:]
    for job in (saver, reader):
        flags = feature_flags(job["trace"])
        assert all(flag in flags for flag in SEED_000_FLAGS) and "FF_USE_FASTZIP:false" not in flags, flags
        assert NOT_USING_UMASK in job["trace"], job["trace"][-3000:]
        assert "permission container" not in job["trace"]
    assert "Creating cache seed-000" in saver["trace"] and "Created cache" in saver["trace"]
    assert "Successfully extracted cache" in reader["trace"], reader["trace"][-3000:]
    assert f"seed-000-by-{saver['id']}" in reader["trace"]
    assert_no_job_containers(world)


def test_seed_002_non_root_images_write_the_build_directory_and_the_cache_in_consecutive_stages(
        world, repo, seed_images):
    """Seed 002's pipeline: jobs whose image USER is not root (a uid the image names, and one it does not)
    write into the cloned build directory, into their job cache and into the /cache volume, stage after
    stage: first with the runner's default umask, then with seed 000's FF_DISABLE_UMASK (where the runner
    hands the build directory, restored cache included, to the image's user), which appends to what the
    same image's first stage cached. (Files one user cached are not writable by another user in a later
    job: gitlab-runner restores them with their modes, on Docker as here.)"""
    sha = repo.git("rev-parse", "HEAD", cwd=repo.work)
    stages = [("named", "named-user", 1000, {}), ("numeric", "numeric-user", 4242, {}),
              ("named-no-umask", "named-user", 1000, SEED_000_VARIABLES),
              ("numeric-no-umask", "numeric-user", 4242, SEED_000_VARIABLES)]
    done: dict[str, list[str]] = {}
    for stage, image, uid, variables in stages:
        job = run_job(world, "id", f"mkdir -p test-{stage}", f"echo test > test-{stage}/test-{stage}.txt",
                      f"echo test > test-{stage}.txt", "cat README.md",
                      "mkdir -p stages", f"echo {stage}-as-$(id -u) >> stages/done.txt", "cat stages/done.txt",
                      "ls -ln stages", f"echo {stage} > /cache/seed-002-{stage}.txt", "ls -ln /cache",
                      image=seed_images[image], name=stage, git={"sha": sha, "ref": "main"},
                      variables={"GIT_STRATEGY": "clone", **variables}, cache=seed_cache(f"seed-002-{image}", "stages/"))
        trace = job["trace"]
        assert job["state"] == "success", f"stage {stage}: {trace[-3000:]}"
        assert f"uid={uid}" in trace, trace[-3000:]
        assert (NOT_USING_UMASK in trace) == bool(variables)
        # Without the umask the runner hands the build directory to the image's user (chown by the helper).
        assert bool(re.search(rf'Changing ownership of files at "[^"]+" to {uid}:\d+', trace)) == bool(variables)
        done.setdefault(image, []).append(f"{stage}-as-{uid}")
        lines = [re.sub(r"^\S+ \S+ ", "", line).rstrip() for line in trace.splitlines()]  # no time, no stream
        assert "\n".join(done[image]) in "\n".join(lines), f"stage {stage} lost its image's earlier cache"
        assert re.search(rf"^-\S+ +1 {uid} +\d+ .* seed-002-{stage}\.txt$", "\n".join(lines), re.MULTILINE), trace[-2000:]
    assert_no_job_containers(world)


def test_seed_003_apt_drops_to_apt_with_setgroups_65534(world, seed_images):
    """Seed 003's symptom came from apt's sandbox: its methods drop to user _apt and call
    setgroups(65534), which fails (`E: setgroups 65534 failed`) where the job's user namespace lacks that
    id (a host with 65536 sub-IDs). Here apt-get update and install from the image's own repository,
    traced: the calls succeed and apt says nothing about its sandbox."""
    strace = "strace -f -qq -e signal=none -e trace=setgroups,setresgid,setresuid,setgid,setuid"
    job = run_job(world, "getent passwd _apt", "cat /proc/self/gid_map",
                  f"{strace} -o /tmp/update.strace apt-get update",
                  f"{strace} -o /tmp/install.strace apt-get install -y --no-install-recommends hello", "hello",
                  "cat /tmp/update.strace /tmp/install.strace | sed 's/^[0-9]* *//' | sort | uniq -c",
                  image=seed_images["apt"])
    trace = job["trace"]
    assert job["state"] == "success", trace[-3000:]
    apt_uid = re.search(r" _apt:x:(\d+):65534:", trace)
    assert apt_uid, trace[-3000:]
    # Each of apt's methods (store, file, gpgv, ...) sheds its groups for _apt's, then becomes _apt.
    assert re.search(r"setgroups\(1, \[65534\]\) += 0", trace), trace[-3000:]
    assert re.search(rf"setresuid\({apt_uid.group(1)}, {apt_uid.group(1)}, {apt_uid.group(1)}\) += 0", trace), trace[-3000:]
    assert "Hello, world!" in trace
    assert "setgroups 65534 failed" not in trace and "unsandboxed" not in trace, trace[-3000:]
    assert_no_job_containers(world)


def test_init_flag_job_cancelled_from_gitlab_gets_sigterm(world):
    """FF_USE_INIT_WITH_DOCKER_EXECUTOR: catatonit (the image's package) is the job's PID 1. Cancelled from
    GitLab, the runner sends SIGTERM to the job's processes: the script's trap runs (sleep's failure is
    caught, or errexit would end the script before the signal reaches it), and nothing is left. (With FF_USE_NATIVE_CONTAINER_STOP only PID 1
    gets SIGTERM; catatonit passes it to its one child, the runner's shell, which waits for the script's
    subshell: the script's trap did not run, seen here.)"""
    job_id = queue(world, "echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline)", "/run/podman-init --version",
                   "trap 'echo got-SIGTERM; echo $CI_JOB_ID > /cache/sigterm-$CI_JOB_ID; exit 143' TERM",
                   "while true; do echo tick; sleep 1 || echo sleep-ended-by-a-signal; done",
                   variables={"FF_USE_INIT_WITH_DOCKER_EXECUTOR": "true"})
    job = cancel_once_ticking(world, job_id)
    trace = job["trace"]
    assert job["state"] == "canceled"
    assert "FF_USE_INIT_WITH_DOCKER_EXECUTOR:true" in feature_flags(trace), trace[:2000]
    assert "pid1=/run/podman-init -- " in trace and "_catatonit" in trace, trace[-3000:]
    assert "lookup init binary" not in trace
    # The trap ran: its file is on the project's cache volume, where the next job reads it.
    after = run_job(world, f"cat /cache/sigterm-{job_id}")
    assert after["state"] == "success", f"no SIGTERM reached the script: {trace[-2000:]}\n{after['trace'][-2000:]}"
    assert_no_job_containers(world)


def test_nothing_the_jobs_started_is_left(world):
    assert nested_containers(world) == []
    assert nested_networks(world) == ["podman"]
    jobs = world.state()["jobs"]
    assert all(j["state"] in ("success", "failed", "canceled") for j in jobs.values()), jobs
    assert world.outer("systemctl", "is-active", "runner.service").stdout.strip() == "active"


HELPER_MAX_BYTES = 120_000_000  # stored size; the Debian-based helper was 304 MB, GitLab's Alpine one 46 MiB
# What the helper's commands run: its binary, git (clone, fetch, submodules' shell scripts), git-lfs,
# a shell and bash (the runner's scripts, gitlab-runner-build), dumb-init and update-ca-certificates
# (entrypoint), and the CA bundle git's HTTPS reads.
HELPER_NEEDS = ("gitlab-runner-helper", "gitlab-runner-build", "git", "git-lfs", "sh", "bash", "dumb-init",
                "update-ca-certificates", "openssl", "mkdir", "rm", "find", "chmod", "dpkg-query")


def test_the_helper_is_small_and_has_every_command_it_runs(world):
    """The helper the jobs above ran with (preloaded from the build, in the nested storage) holds only what it
    runs (no docs, manuals or translations) and every command it runs; it keeps the base's labels and dpkg's
    list, which the base's package check reads. Last: the jobs above are what proves those commands work."""
    helper_id, size = nested_podman(world, "image", "inspect", "--format", "{{.Id}} {{.Size}}", HELPER).split()
    assert helper_id == world.helper_id.strip(), "the jobs did not all run with the helper the build made"
    assert int(size) <= HELPER_MAX_BYTES, f"the helper grew to {size} bytes"
    found = nested_podman(world, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", HELPER, "-c",
               f"for c in {' '.join(HELPER_NEEDS)}; do command -v $c || echo missing $c; done; "
               "test -s /etc/ssl/certs/ca-certificates.crt || echo missing CA bundle; "
               "git lfs version; git config --system --get filter.lfs.process; dpkg-query -W git; echo docs:; "
               "find /usr/share/locale /usr/share/man /usr/share/info -mindepth 1 2>/dev/null; "
               "find /usr/share/doc -type f ! -name copyright")
    assert "missing" not in found, found
    assert "git-lfs/" in found and "git-lfs filter-process" in found, found
    assert re.search(r"^git\t", found, re.MULTILINE), f"dpkg's list lost git: {found}"
    assert found.rstrip().endswith("docs:"), f"docs or translations left: {found}"
    for label in (KEY_LABEL, ARCHIVE_LABEL):
        labelled = nested_podman(world, "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', HELPER)
        assert labelled.strip() == image_label(BASE, label)
