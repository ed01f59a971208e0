"""Several instances per user: `podman container runlabel --name NAME` (docs/using.md, "Several instances").

Unit tests run each rendered label the way podman 5.4 runs it (podman_argv below follows its
generateRunlabelCommand) with sh and a stand-in `podman` that prints what it is asked, for each way the
default instance is named and for other names. One slow test runs two instances side by side on the
stand-in host, the default one and `ci2`, each registered with its own runner of the test GitLab, set up
and started with the runlabels exactly as a user types them; each takes its own job. The other runs three
instances with one runner's config.toml, as a fleet of hosts (docs/fleet.md): three managers of one runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipglr_builder import config, processes, quadlet, render
from pipglr_builder.cli import main
from pipglr_builder.errors import ConfigError
from pipglr_builder.harness import gitlab_coordinator
from pipglr_builder.harness.coordinator import URL, VOLUME, Coordinator
from pipglr_builder.standin import StandIn

from .conftest import BASE, HELPER, sh
from .test_quadlet import GENERATORS, UNIT_DIR

VALUES = render.template_values(config.load(None))
# Labels that name no container, volume, secret or file: the same for every instance.
UNNAMED = {"doctor"}
IMAGE = "localhost/pipglr-test:t-1"  # the newest name podman gives as $IMAGE
OTHER_NAMES = ["registry.example.com/group/ci-runner:v2"]  # the image's other names (RepoTags)
IMAGE_ID = "0123456789abcdef" * 4


def podman_argv(label: str, name: str, image: str, args: list[str], cwd: str) -> list[str]:
    """The argv podman 5.4 runs for LABEL (generateRunlabelCommand): words split (github.com/google/shlex,
    as shlex.split for these), $NAME and $IMAGE replaced in each, joined, $PWD and $HOME expanded and any
    other $VAR, ${VAR} or special $X dropped (os.Expand), split again."""
    words = shlex.split(f"{label} {' '.join(args)}" if args else label)
    words = [words[0], *(w.replace("$NAME", name).replace("${NAME}", name).replace("$IMAGE", image)
                         .replace("${IMAGE}", image) for w in words[1:])]

    def expand(match: re.Match) -> str:
        var = match.group(1) or match.group(2) or match.group(3)
        return {"PWD": cwd, "HOME": "/home/alice"}.get(var, "")
    joined = re.sub(r"\$(?:\{([^}]*)\}|([A-Za-z0-9_]+)|([*#$@!?0-9-]))", expand, " ".join(words))
    return shlex.split(joined)


@pytest.fixture
def fake_podman(tmp_path):
    """A directory with a `podman` that prints its argv (one word a line) and answers `image inspect` with
    IMAGE_ID and the image's names (or fails as for an unknown image when a file no-image is beside it);
    PATH for it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tags = " ".join([IMAGE, *OTHER_NAMES])
    (bin_dir / "podman").write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "image inspect" ] && [ -e "${0%/*}/no-image" ]; then echo "Error: image not known" >&2; exit 125; fi\n'
        f'if [ "$1 $2" = "image inspect" ]; then echo "{IMAGE_ID} {tags}"; exit 0; fi\n'
        'printf "%s\\n" "$@"\n')
    (bin_dir / "podman").chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def run_label(label_name: str, path: str, podman_name: str, args: list[str] = ()) -> tuple[int, list[str], str]:
    """Run label LABEL_NAME as podman would with $NAME = PODMAN_NAME and the fake podman on PATH: (exit status,
    the argv that podman got, stderr)."""
    argv = podman_argv(VALUES["label_texts"][label_name], podman_name, IMAGE, list(args), "/home/alice/work")
    assert argv[0] in ("podman", "sh"), argv
    proc = processes.call(argv, env={**os.environ, "PATH": path}, timeout=30)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def expected(label_name: str, instance: bool, name: str = "ci2", args: list[str] = ()) -> list[str]:
    """The argv of LABEL_NAME's command for the default instance (INSTANCE false) or for NAME."""
    text = VALUES["instance_runlabels" if instance else "runlabels"][label_name]
    return podman_argv(text, name, IMAGE, list(args), "/home/alice/work")[1:]


# podman's $NAME when the user gives no --name: the last part of the name typed, without its tag (a name of
# the image), NAME@sha256 for a digest reference; or the image's ID when it has no name (measured, podman 5.4).
DEFAULT_NAMES = ["pipglr-test", "ci-runner", "pipglr-test@sha256", IMAGE_ID, "pipglr"]


@pytest.mark.tools
@pytest.mark.parametrize("podman_name", DEFAULT_NAMES)
@pytest.mark.parametrize("label_name", sorted(set(render.RUNLABELS) - UNNAMED))
def test_without_a_name_every_label_runs_the_command_of_before(fake_podman, label_name, podman_name):
    status, argv, err = run_label(label_name, fake_podman, podman_name, ["--url", "https://x"])
    assert status == 0, err
    assert argv == expected(label_name, instance=False, args=["--url", "https://x"])


@pytest.mark.tools
@pytest.mark.parametrize("label_name", sorted(set(render.RUNLABELS) - UNNAMED))
def test_with_a_name_every_label_uses_the_instances_names(fake_podman, label_name):
    status, argv, err = run_label(label_name, fake_podman, "ci2", ["--all-runners"])
    assert status == 0, err
    assert argv == expected(label_name, instance=True, args=["--all-runners"])
    words = " ".join(argv)
    assert "pipglr-storage" not in words and "pipglr-cache" not in words and "pipglr-state" not in words
    assert not re.search(r"(^| )pipglr( |$)", words) and "--secret config.toml" not in words, words


def test_the_instance_names():
    assert render.instance_names("pipglr") == {
        "container": "pipglr", "storage": "pipglr-storage", "cache": "pipglr-cache", "state": "pipglr-state",
        "secret": "config.toml", "secret_name": "config.toml", "config_file": "config.toml"}
    assert render.instance_names("ci2") == {
        "container": "ci2", "storage": "ci2-storage", "cache": "ci2-cache", "state": "ci2-state",
        "secret": "ci2-config.toml,target=config.toml", "secret_name": "ci2-config.toml",
        "config_file": "ci2-config.toml"}
    run = shlex.split(VALUES["instance_runlabels"]["run"])
    assert run[run.index("--name") + 1] == "$NAME" and run[run.index("--hostname") + 1] == "$NAME"
    assert "$NAME-config.toml,target=config.toml,type=mount,uid=1001,gid=1001,mode=0400" in run
    for volume, path in (("storage", render.NESTED_STORAGE), ("cache", render.NESTED_VOLUMES),
                         ("state", render.STATE_DIR)):
        assert f"$NAME-{volume}:{path}:z" in run
    register = shlex.split(VALUES["instance_runlabels"]["register"])
    assert "$PWD/$NAME-config.toml:/etc/gitlab-runner/config.toml:Z" in register
    assert VALUES["label_texts"]["doctor"] == VALUES["runlabels"]["doctor"]


@pytest.mark.tools
@pytest.mark.parametrize("bad", ["bad/name", "-x", ".x", "a b", "x;touch${IFS}y", "ci2:tag", "ü"])
def test_a_name_podman_would_refuse_is_refused_first(fake_podman, bad, tmp_path):
    status, argv, err = run_label("setupstorage", fake_podman, bad)
    assert status == 2 and argv == [], (status, argv, err)
    assert "an instance name starts with a letter or digit, then letters, digits, _ . or - only" in err, err


@pytest.mark.tools
def test_an_image_podman_cannot_inspect_runs_nothing(fake_podman):
    """Its names unknown, the default instance cannot be told from another: no command at all."""
    Path(fake_podman.split(":")[0], "no-image").touch()
    status, argv, err = run_label("setupstorage", fake_podman, "pipglr-test")
    assert status == 2 and argv == [] and "image not known" in err, (status, argv, err)


@pytest.mark.parametrize("bad", ["", "bad/name", "-x", "a b", "x%i"])
def test_quadlet_refuses_a_bad_instance_name(bad):
    with pytest.raises(ConfigError, match="instance name"):
        quadlet.render_quadlet(config.load(None), IMAGE, bad)


def test_quadlet_for_an_instance(tmp_path):
    text = quadlet.render_quadlet(config.load(None), IMAGE, "ci2")
    lines = text.splitlines()
    for line in ("ContainerName=ci2", "HostName=ci2", "Volume=ci2-storage:/home/podman/.local/share/containers:z",
                 "Volume=ci2-cache:/home/podman/.local/share/containers/storage/volumes:z",
                 "Volume=ci2-state:/var/lib/pipglr:z",
                 "Secret=ci2-config.toml,target=config.toml,type=mount,uid=1001,gid=1001,mode=0400",
                 f"#   podman container runlabel --name ci2 setupstorage {IMAGE}"):
        assert line in lines, line
    assert "pipglr-storage" not in text and "Secret=config.toml" not in text
    assert quadlet.render_quadlet(config.load(None), IMAGE, "pipglr") == quadlet.render_quadlet(config.load(None), IMAGE)
    settings = tmp_path / "pipglr.toml"
    settings.write_text("")
    out = tmp_path / "ci2.container"
    result = CliRunner().invoke(main, ["--config", str(settings), "quadlet", "--instance", "ci2", IMAGE, "-o", str(out)])
    assert result.exit_code == 0 and out.read_text() == text, result.output
    assert "systemctl --user start ci2" in result.output
    result = CliRunner().invoke(main, ["--config", str(settings), "quadlet", "--instance", "a/b", IMAGE])
    assert result.exit_code == 1 and result.output.startswith("error: instance name 'a/b'"), result.output


# --- on the stand-in host -------------------------------------------------------------------------

INSTANCES = {"": ("config.toml", "config.toml", "pipglr"), "ci2": ("ci2-config.toml", "ci2-config.toml", "ci2")}


class Alice:
    """alice on a stand-in host with the test GitLab: her commands, and the runlabels as she types them."""

    def __init__(self, standin: StandIn, image: str):
        self.standin, self.image = standin, image
        self.archives: list[str] = []

    def __call__(self, *argv: str, check: bool = True, input: str | None = None):
        return self.standin.as_user("alice", list(argv), check=check, input=input)

    def runlabel(self, name: str, label: str, *args: str, check: bool = True):
        return self("podman", "container", "runlabel", *(["--name", name] if name else []), label, self.image,
                    *args, check=check)

    def save_preloads(self) -> None:
        """Air-gapped: the helper and the job image come through `preload`, from archives in the stand-in."""
        for ref in (HELPER, BASE):
            archive = Path(tempfile.mkstemp(dir=self.standin.api_dir, suffix=".tar")[1])
            sh("podman", "save", "--output", str(archive), ref)
            os.chmod(archive, 0o644)
            self.archives.append(f"/api/{archive.name}")

    def set_up_and_run(self, name: str) -> None:
        """setupstorage, setupcache, preload and run for instance NAME (its config secret made)."""
        self.runlabel(name, "setupstorage")
        self.runlabel(name, "setupcache")
        for archive in self.archives:
            self("sh", "-c", f"podman container runlabel {'--name ' + name if name else ''} preload {self.image} "
                             f"< {archive}")
        self.runlabel(name, "run")


@contextlib.contextmanager
def alice_on_a_standin(image: str, what: str):
    """A stand-in host with the test GitLab and IMAGE in alice's storage: (alice, the GitLab); the host is
    removed after, and the time it took printed as WHAT."""
    started = time.monotonic()
    standin = StandIn(BASE, volumes=(VOLUME,))
    try:
        standin.start()
        gitlab = Coordinator(standin, f"reg-{uuid.uuid4().hex}").start()
        standin.load_image("alice", image)
        yield Alice(standin, image), gitlab
    finally:
        standin.close()
        print(f"{what}: {time.monotonic() - started:.0f} s")


@pytest.mark.slow
def test_two_instances_side_by_side_each_take_their_own_job(image):
    """The default instance and `ci2`, each registered with its own runner created in GitLab, set up,
    preloaded and started through the runlabels; each takes the job queued for its runner; dumpconfig, logs,
    resetcache and doctor reach each one's own container, volumes and secret."""
    with alice_on_a_standin(image, "two instances side by side") as (alice, gitlab):
        runlabel = alice.runlabel
        bad = runlabel("bad/name", "setupstorage", check=False)
        assert bad.returncode != 0 and "--name bad/name: an instance name starts with" in bad.stderr, bad.stderr
        assert alice("podman", "volume", "ls", "--quiet").stdout.strip() == ""

        alice.save_preloads()
        runners = {}
        for name, (config_file, secret, _) in INSTANCES.items():
            runner = gitlab.request("POST", "/_test/runners", {"description": f"for {name or 'default'}"})
            runners[name] = runner
            alice("sh", "-c", "podman secret rm REGISTRATION_TOKEN >/dev/null 2>&1; true")
            alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=runner["token"] + "\n")
            alice("touch", config_file)
            runlabel(name, "register", "--", "--url", URL, "--name", f"on-{name or 'default'}")
            alice("podman", "secret", "create", secret, config_file)
            alice.set_up_and_run(name)
        for _, _, container in INSTANCES.values():
            alice.standin.wait_booted(container=container, what=f"the {container} container to boot")

        assert set(alice("podman", "ps", "--format", "{{.Names}}").stdout.split()) == {"pipglr", "ci2"}
        volumes = set(alice("podman", "volume", "ls", "--format", "{{.Name}}").stdout.split())
        assert volumes == {f"{c}-{v}" for c in ("pipglr", "ci2") for v in ("storage", "cache", "state")}, volumes
        assert {"config.toml", "ci2-config.toml"} <= set(alice("podman", "secret", "ls", "--format",
                                                               "{{.Name}}").stdout.split())
        jobs = {name: gitlab.request("POST", "/_test/jobs", {"script": ["echo ran-for-" + (name or "default")],
                                                            "image": BASE, "runner_id": runner["id"]})["id"]
                for name, runner in runners.items()}

        def finished():
            state = gitlab.state()["jobs"]
            done = [state[str(j)] for j in jobs.values() if state[str(j)]["state"] in ("success", "failed")]
            return done if len(done) == len(jobs) else None
        processes.wait_for(finished, 300, interval=1, what="both instances' jobs to finish")
        state = gitlab.state()["jobs"]
        for name, job_id in jobs.items():
            job = state[str(job_id)]
            assert job["state"] == "success", job["trace"][-2000:]
            assert job["runner_id"] == runners[name]["id"] and f"ran-for-{name or 'default'}" in job["trace"]
        # dumpconfig, logs and resetcache reach each instance's own state volume and container.
        for name in INSTANCES:
            own, other = f"on-{name or 'default'}", "on-default" if name else "on-ci2"
            live = runlabel(name, "dumpconfig").stdout
            assert f'name = "{own}"' in live and other not in live, live
            assert f'token = "{runners[name]["token"]}"' in live
            report = runlabel(name, "logs").stdout
            assert f'name = "{own}"' in report and f'name = "{other}"' not in report
            runlabel(name, "resetcache")
            secret, container = INSTANCES[name][1], INSTANCES[name][2]
            doctor = alice("sh", "-s", input=runlabel(name, "doctor").stdout, check=False)
            said = doctor.stdout + doctor.stderr
            assert doctor.returncode == 0, said
            for line in (f"ok    volume {container}-storage exists", f"ok    volume {container}-cache exists",
                         f"ok    the {secret} secret parses and has 1 runner(s)"):
                assert line in said, f"{line!r} not in {said}"
        # The instance's quadlet, as podman's quadlet reads it (dry run; the default's is started in test_quadlet).
        unit = quadlet.render_quadlet(config.load(None), image, "ci2")
        alice("sh", "-c", f'mkdir -p "$HOME/{UNIT_DIR}" && cat > "$HOME/{UNIT_DIR}/ci2.container"', input=unit)
        generator = next(g for g in GENERATORS if alice("test", "-x", g, check=False).returncode == 0)
        dry = alice(generator, "-dryrun", *([] if generator.endswith("user-generator") else ["-user"]))
        assert not [line for line in dry.stderr.splitlines() if "error" in line.lower() or "unsupported" in line]
        exec_start = next(line for line in dry.stdout.split("---ci2.service---", 1)[1].splitlines()
                          if line.startswith("ExecStart="))
        for arg in ("--name ci2", "--hostname ci2", "--secret ci2-config.toml,target=config.toml,type=mount",
                    "-v ci2-storage:", "-v ci2-cache:", "-v ci2-state:"):
            assert arg in exec_start, f"{arg!r} not in {exec_start}"


def test_the_coordinator_keeps_a_runners_managers_as_gitlab_does():
    """The fleet test reads the managers from the test GitLab: one per system ID, made at the first request
    (verify or job request, again after deletion), deleted by DELETE /runners/managers, the runner staying."""
    server = gitlab_coordinator.serve("127.0.0.1", 0, "reg")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, data=json.dumps(body).encode() if body else None,
                                         method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {}

    def managers() -> dict[str, int]:
        return {m["system_id"]: m["requests"] for m in call("GET", "/_test/state")[1]["managers"][str(runner["id"])]}

    try:
        runner = call("POST", "/_test/runners", {"description": "fleet"})[1]
        assert call("POST", "/api/v4/runners/verify", {"token": runner["token"], "system_id": "r_one0ff"})[0] == 200
        for system_id in ("s_a", "s_a", "s_b"):
            assert call("POST", "/api/v4/jobs/request", {"token": runner["token"], "system_id": system_id})[0] == 204
        assert call("POST", "/api/v4/jobs/request", {"token": "glrt-wrong", "system_id": "s_c"})[0] == 403
        assert managers() == {"r_one0ff": 1, "s_a": 2, "s_b": 1}
        for system_id in ("s_b", "s_unknown"):
            assert call("DELETE", "/api/v4/runners/managers", {"token": runner["token"], "system_id": system_id})[0] == 204
        state = call("GET", "/_test/state")[1]
        assert [(e["system_id"], e["known"]) for e in state["events"] if e["kind"] == "unregister-manager"] == [
            ("s_b", True), ("s_unknown", False)]
        assert managers() == {"r_one0ff": 1, "s_a": 2} and [r["id"] for r in state["runners"]] == [runner["id"]]
        call("POST", "/api/v4/jobs/request", {"token": runner["token"], "system_id": "s_b"})
        assert managers() == {"r_one0ff": 1, "s_a": 2, "s_b": 1}
    finally:
        server.shutdown()
        server.server_close()


FLEET = ("fleet1", "fleet2", "fleet3")
# A job that waits in its step until the test releases it: three held at once are running on three managers
# (a manager busy with a job asks for no other: concurrent = 1 per host, as register writes it).
HELD = ['echo "held job $CI_JOB_ID" > "/cache/$CI_JOB_ID-waiting"',
        'until [ -e "/cache/$CI_JOB_ID-release" ]; do sleep 1; done', "echo held-job-released"]


@pytest.mark.slow
def test_one_runner_token_on_three_instances_is_three_managers(image):
    """docs/fleet.md: one runner created in GitLab, registered once, its config.toml the secret of three
    instances (each its own state volume, so its own system ID) is one runner with three managers at the
    coordinator; three jobs held at once run one on each; `unregister` on one deletes its manager only, and
    the next jobs run on the other two."""
    started = time.monotonic()
    with alice_on_a_standin(image, "one token on three instances") as (alice, gitlab):
        alice.save_preloads()
        runner = gitlab.request("POST", "/_test/runners", {"description": "fleet"})
        alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=runner["token"] + "\n")
        alice("touch", "config.toml")
        alice.runlabel("", "register", "--", "--url", URL, "--name", "fleet")
        for name in FLEET:  # the same config.toml, as is, on every instance
            alice("podman", "secret", "create", f"{name}-config.toml", "config.toml")
            alice.set_up_and_run(name)
        booting = time.monotonic()
        for name in FLEET:
            alice.standin.wait_booted(container=name, what=f"the {name} container to boot")

        def system_id(name: str) -> str | None:
            """What gitlab-runner of instance NAME keeps in its state volume (made at its first start)."""
            read = alice("podman", "exec", name, "cat", "/var/lib/pipglr/.runner_system_id", check=False)
            return read.stdout.strip() if read.returncode == 0 else None

        ids = {name: processes.wait_for(lambda name=name: system_id(name), 120, interval=1,
                                        what=f"{name}'s .runner_system_id") for name in FLEET}
        assert all(re.fullmatch(r"s_[0-9a-f]{12}", i) for i in ids.values()) and len(set(ids.values())) == 3, ids
        caches = {name: alice("podman", "volume", "inspect", "--format", "{{.Mountpoint}}",
                              f"{name}-cache").stdout.strip() for name in FLEET}

        def in_caches(script: str) -> str:
            """SCRIPT run by sh as alice in her user namespace (the cache volumes' owners are the containers' users)."""
            return alice("podman", "unshare", "sh", "-c", script).stdout

        def waiting() -> dict[int, str]:
            """The held jobs waiting in their step: job id -> the instance whose cache volume holds its file."""
            found = {}
            for line in in_caches("; ".join(f"ls -d {c}/*/_data/*-waiting 2>/dev/null" for c in caches.values())
                                  + "; true").splitlines():
                name = next(n for n, c in caches.items() if line.startswith(c + "/"))
                found[int(line.rsplit("/", 1)[1].removesuffix("-waiting"))] = name
            return found

        def hold(count: int) -> dict[int, str]:
            """Queue COUNT held jobs and wait until all run at once: job id -> the instance running it."""
            jobs = [gitlab.request("POST", "/_test/jobs", {"script": HELD, "image": BASE,
                                                          "runner_id": runner["id"]})["id"] for _ in range(count)]
            held = processes.wait_for(lambda: (w := waiting()) and set(jobs) <= set(w) and w, 300, interval=2,
                                      what=f"{count} held jobs to run at once")
            return {job: held[job] for job in jobs}

        def release(jobs: dict[int, str]) -> dict[str, dict]:
            """Let JOBS end; wait for each: the instance -> its job as the coordinator has it."""
            in_caches("; ".join(f'for f in {caches[name]}/*/_data/{job}-waiting; do touch "${{f%-waiting}}-release"; done'
                                for job, name in jobs.items()))

            def finished():
                state = gitlab.state()["jobs"]
                done = [state[str(j)] for j in jobs if state[str(j)]["state"] in ("success", "failed")]
                return len(done) == len(jobs) and {jobs[job["id"]]: job for job in done}
            return processes.wait_for(finished, 180, interval=1, what=f"jobs {sorted(jobs)} to finish")

        def check_ran(done: dict[str, dict], names: set[str]) -> None:
            assert set(done) == names, done.keys()
            for name, job in done.items():
                assert job["state"] == "success", job["trace"][-2000:]
                assert job["runner_id"] == runner["id"] and job["system_id"] == ids[name], (name, job["system_id"])
                assert f" via {name}..." in job["trace"] and "held-job-released" in job["trace"], job["trace"][-2000:]

        # Three jobs at once: one on each instance, each taken by that instance's manager.
        first = hold(3)
        running = time.monotonic()
        state = gitlab.state()
        assert sorted(first.values()) == list(FLEET), first
        for job, name in first.items():
            assert state["jobs"][str(job)]["state"] == "running"
            assert state["jobs"][str(job)]["system_id"] == ids[name], (name, state["jobs"][str(job)])
        # One runner at the coordinator; its managers: the three instances and register's one-off check.
        assert [r["id"] for r in state["runners"]] == [runner["id"]], state["runners"]
        verified = {e["system_id"] for e in state["events"] if e["kind"] == "verify"}
        managers = {m["system_id"] for m in state["managers"][str(runner["id"])]}
        assert managers == set(ids.values()) | verified and len(verified) == 1, (managers, verified)
        # Every job request carries the ID of the instance that sent it (and one runner's token).
        asked = {r["system_id"] for r in state["requests"] if r["runner_id"] == runner["id"]}
        assert asked == set(ids.values()) and all(r["runner_id"] == runner["id"] for r in state["requests"]), asked
        check_ran(release(first), set(FLEET))

        # unregister on fleet3: its manager goes, the runner and the others' managers stay.
        def config_loads(name: str) -> int:
            journal = alice("podman", "exec", name, "journalctl", "-u", "runner.service", "-o", "cat", "--no-pager")
            return journal.stdout.count("Configuration loaded")

        loaded = config_loads("fleet3")
        alice.runlabel("fleet3", "unregister", "--", "--all-runners")
        unregistered_at = time.monotonic()
        # gitlab-runner reads its changed config within 3 s (ReloadConfigInterval); then fleet3 asks no more.
        processes.wait_for(lambda: config_loads("fleet3") > loaded, 60, interval=0.5,
                           what="fleet3's gitlab-runner to reload its config")
        reloaded = time.monotonic() - unregistered_at
        state = gitlab.state()
        unregistered = [{k: e.get(k) for k in ("kind", "runner_id", "system_id", "known")} for e in state["events"]
                        if e["kind"].startswith("unregister")]
        assert unregistered == [{"kind": "unregister-manager", "runner_id": runner["id"],
                                 "system_id": ids["fleet3"], "known": True}], unregistered
        assert [r["id"] for r in state["runners"]] == [runner["id"]], state["runners"]

        def fleet3_manager(state: dict) -> dict | None:
            return next((m for m in state["managers"][str(runner["id"])] if m["system_id"] == ids["fleet3"]), None)
        # fleet3 asked between its manager's deletion and its config reload: GitLab made the manager again.
        again = fleet3_manager(state)
        assert "[[runners]]" not in alice.runlabel("fleet3", "dumpconfig").stdout
        assert f'token = "{runner["token"]}"' in alice.runlabel("fleet1", "dumpconfig").stdout
        # A host left with no runner says so in its health check (podman restarts it after 3 failed checks).
        health = alice("podman", "exec", "fleet3", render.HEALTH["cmd"], check=False)
        assert health.returncode == 1 and "has no [[runners]]: gitlab-runner takes no jobs" in health.stderr, health

        second = hold(2)
        assert sorted(second.values()) == ["fleet1", "fleet2"], second
        check_ran(release(second), {"fleet1", "fleet2"})
        state = gitlab.state()
        assert fleet3_manager(state) == again, "fleet3 asked for jobs after its config reload"
        assert {ids["fleet1"], ids["fleet2"]} <= {m["system_id"] for m in state["managers"][str(runner["id"])]}
        print(f"fleet: three held jobs running {running - booting:.0f} s after the last `run` "
              f"({running - started:.0f} s into the test); fleet3's config reload seen {reloaded:.1f} s after "
              f"unregister; fleet3 asked again in between: {again}")


def doctor_names(fake_podman: str, instance: str) -> tuple[int, str]:
    """The rendered doctor's choice of names (its block after "The instance's names"), run by sh."""
    script = render.render_file(config.load(None), "files/doctor")
    block = re.search(r"^# The instance's names.*?^fi\n", script, re.MULTILINE | re.DOTALL)
    assert block, "the doctor's instance block moved"
    body = "\n".join([f"image={IMAGE} instance='{instance}'", block.group(0),
                      'echo "container=$container secret=$secret mount=$secret_mount named=$named."'])
    proc = processes.call(["sh", "-c", body], env={**os.environ, "PATH": fake_podman}, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.tools
def test_the_doctor_checks_the_instance_the_labels_name(fake_podman):
    for podman_name in DEFAULT_NAMES:
        assert doctor_names(fake_podman, podman_name) == (
            0, "container=pipglr secret=config.toml mount=config.toml named=.\n"), podman_name
    status, out = doctor_names(fake_podman, "ci2")
    assert status == 0 and out.endswith(
        "container=ci2 secret=ci2-config.toml mount=ci2-config.toml,target=config.toml named=--name ci2 .\n"), out
    assert "note  instance ci2: container ci2, volumes ci2-storage, ci2-cache, ci2-state, secret ci2-config.toml" in out
    status, out = doctor_names(fake_podman, "bad/name")
    assert status == 1 and "FAIL  --name bad/name: an instance name starts with a letter or digit" in out, out
    doctor = shlex.split(VALUES["runlabels"]["doctor"])
    assert "s|^instance=.*|instance=$NAME|" in doctor and "s|^image=.*|image=$IMAGE|" in doctor


def test_cli_doctor_refuses_a_bad_instance_name_before_anything(tmp_path):
    settings = tmp_path / "pipglr.toml"
    settings.write_text("")
    result = CliRunner().invoke(main, ["--config", str(settings), "doctor", "--instance", "a/b", IMAGE])
    assert result.exit_code == 1 and result.output.startswith("error: instance name 'a/b'"), result.output
