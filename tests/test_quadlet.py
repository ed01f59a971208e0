"""The quadlet unit (`build.py quadlet`): same container as the `run` runlabel, accepted by podman 5.4's quadlet.

Unit tests parse the rendered .container file and labels/run (shlex) and
compare them flag by flag, so the two cannot drift. The slow test installs
the unit for alice on the stand-in host, checks it with quadlet's dry run and
`systemd-analyze verify`, and starts pipglr with `systemctl --user start` from
an image in a registry on the stand-in host (TLS, a test CA, a login), registered with the test
GitLab, then updates it with `podman auto-update`: refused until alice logs in; then started by
podman-auto-update.timer itself, to a healthy new image while a job runs (the job finishes, the next
runs on the new image); then, run by hand, to a never-healthy one that is rolled back (and takes jobs
again); last, with alice trusting only signed images of the repository, an unsigned one is refused.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipglr_builder import config, quadlet, render, trust
from pipglr_builder.cli import main
from pipglr_builder.errors import ConfigError
from pipglr_builder.harness.coordinator import URL, VOLUME, Coordinator
from pipglr_builder.processes import wait_for
from pipglr_builder.standin import USERS, StandIn

from . import registry
from .conftest import BASE, ROOT, cli, image_exists, keygen, sh

IMAGE = "localhost/pipglr:latest"
CUSTOM = {"podman_uid": "2000", "runner_uid": "3000", "session_server_listen": "0.0.0.0:8093",
          "metrics_listen": "0.0.0.0:9252"}
LIMITS = {"cpus": "1.5", "memory": "4g", "pids_limit": "4096"}

# `podman run` flags of labels/run and where the quadlet carries them.
NATIVE = {"--name": "ContainerName", "--hostname": "HostName", "--device": "AddDevice", "--secret": "Secret",
          "--volume": "Volume", "--publish": "PublishPort", "--stop-timeout": "StopTimeout",
          "--pids-limit": "PidsLimit", "--health-cmd": "HealthCmd", "--health-interval": "HealthInterval",
          "--health-timeout": "HealthTimeout", "--health-retries": "HealthRetries",
          "--health-start-period": "HealthStartPeriod", "--health-on-failure": "HealthOnFailure"}
# Flags whose value differs on purpose: the run label's container has no supervisor, so podman restarts an
# unhealthy one itself; the quadlet's is killed and systemd's Restart= starts it (a `podman restart` under
# systemd would replace the unit's main process behind its back).
DIFFERENT = {("--health-on-failure", "restart"): "kill"}
# Only in the quadlet: systemd's readiness and podman auto-update have no meaning for `runlabel run`.
QUADLET_ONLY = {"Notify", "AutoUpdate"}
# No quadlet key in podman 5.4 (podman-systemd.unit(5)): passed through PodmanArgs=. `--env NAME` (the
# caller's value) has none either: Environment= needs NAME=VALUE and quadlet drops a bare NAME.
PASSED_WITH_VALUE = {"--systemd", "--env", "--cpus", "--memory"}
PASSED_ALONE = {"--privileged"}
IMPLIED = {"--detach"}  # quadlet's ExecStart always runs `podman run ... -d`
VOLUMES = {"pipglr-storage": "/home/podman/.local/share/containers", "pipglr-cache": "/home/podman/.local/share/containers/storage/volumes",
           "pipglr-state": "/var/lib/pipglr"}


def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), ...]} (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(entries: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in entries if k == key]


def podman_flags(tokens: list[str], where: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """`podman run` options as (flag, value or None) until the first argument; and the arguments."""
    flags: list[tuple[str, str | None]] = []
    rest = list(tokens)
    while rest and rest[0].startswith("-"):
        flag, has_inline, inline = rest.pop(0).partition("=")
        if flag in NATIVE or flag in PASSED_WITH_VALUE:
            flags.append((flag, inline if has_inline else rest.pop(0)))
        elif flag in PASSED_ALONE or flag in IMPLIED:
            flags.append((flag, None))
        else:
            pytest.fail(f"{where} uses {flag}, which this test does not know: carry it in both labels/run and "
                        "quadlet/pipglr.container.j2 (a native key if podman-systemd.unit(5) has one, else "
                        "PodmanArgs=), then add it here")
    return flags, rest


def passed(flag: str, value: str | None) -> str:
    return flag if value is None else f"{flag}={value}"


def run_label_as_quadlet(cfg: config.Config) -> dict[str, set[str]]:
    """labels/run (rendered) parsed with shlex, as the quadlet keys that must carry each flag."""
    argv = shlex.split(render.template_values(cfg)["runlabels"]["run"])
    assert argv[:2] == ["podman", "run"], argv
    flags, rest = podman_flags(argv[2:], "labels/run")
    assert rest == ["$IMAGE"], f"labels/run should end with the image: {rest}"
    expected: dict[str, set[str]] = {key: set() for key in (*NATIVE.values(), "PodmanArgs")}
    for flag, value in flags:
        if flag in NATIVE:
            expected[NATIVE[flag]].add(DIFFERENT.get((flag, value), value))
        elif flag not in IMPLIED:
            expected["PodmanArgs"].add(passed(flag, value))
    return expected


def container_keys(text: str) -> dict[str, set[str]]:
    entries = unit_sections(text)["Container"]
    keys = {key: set(values(entries, key)) for key in (*NATIVE.values(), "PodmanArgs")}
    flags, rest = podman_flags([arg for line in values(entries, "PodmanArgs") for arg in shlex.split(line)],
                               "quadlet PodmanArgs=")
    assert not rest, f"PodmanArgs= with arguments that are not options: {rest}"
    keys["PodmanArgs"] = {passed(flag, value) for flag, value in flags}
    return keys


@pytest.mark.parametrize("overrides", [{}, CUSTOM])
def test_quadlet_has_the_run_label_container(overrides):
    cfg = config.load(None, overrides)
    text = quadlet.render_quadlet(cfg, IMAGE)
    runner = cfg.runner_uid
    for line in ("[Unit]", "[Container]", f"Image={IMAGE}", "ContainerName=pipglr", "HostName=pipglr",
                 "AddDevice=/dev/fuse", f"Secret=config.toml,type=mount,uid={runner},gid={runner},mode=0400",
                 *(f"Volume={name}:{path}:z" for name, path in VOLUMES.items()),
                 "PodmanArgs=--privileged --systemd=always", "PodmanArgs=--env RUNNER_LOG_LEVEL --env PODMAN_LOG_LEVEL --env PIPGLR_CA_BUNDLE",
                 "[Service]", "Restart=on-failure", "SuccessExitStatus=130", "[Install]", "WantedBy=default.target"):
        assert line in text.splitlines(), f"{line!r} missing from the quadlet:\n{text}"
    sections = unit_sections(text)
    assert values(sections["Unit"], "Description"), "the unit needs a Description"
    assert set(sections) == {"Unit", "Container", "Service", "Install"}


@pytest.mark.parametrize("overrides", [{}, CUSTOM, LIMITS, {"memory": "1g"}])
def test_quadlet_and_run_label_cannot_drift(overrides):
    """Every flag of labels/run is in the quadlet and the quadlet has nothing the run label lacks."""
    cfg = config.load(None, overrides)
    text = quadlet.render_quadlet(cfg, IMAGE)
    assert container_keys(text) == run_label_as_quadlet(cfg)
    container = unit_sections(text)["Container"]
    assert values(container, "Image") == [IMAGE]
    known = {"Image", "PodmanArgs", *NATIVE.values(), *QUADLET_ONLY}
    assert {key for key, _ in container} <= known, "a [Container] key the run label does not have"


def test_quadlet_carries_the_resource_limits():
    """No limit by default (PidsLimit=0 leaves it unset); cpus and memory through PodmanArgs= (no quadlet key)."""
    container = unit_sections(quadlet.render_quadlet(config.load(None), IMAGE))["Container"]
    assert values(container, "PidsLimit") == ["0"]
    assert not [v for v in values(container, "PodmanArgs") if "--cpus" in v or "--memory" in v]
    lines = quadlet.render_quadlet(config.load(None, LIMITS), IMAGE).splitlines()
    for line in ("PidsLimit=4096", "PodmanArgs=--cpus 1.5", "PodmanArgs=--memory 4g"):
        assert line in lines, f"{line!r} missing from the quadlet"


def test_cli_quadlet_takes_the_limits_as_flags(tmp_path):
    settings = tmp_path / "pipglr.toml"
    settings.write_text('memory = "2g"\n')
    result = CliRunner().invoke(main, ["--config", str(settings), "quadlet", "--cpus", "1.5", IMAGE])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "PodmanArgs=--cpus 1.5" in lines and "PodmanArgs=--memory 2g" in lines
    result = CliRunner().invoke(main, ["--config", str(settings), "quadlet", "--memory", "4", IMAGE])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: memory = '4' (flag): expected empty (no limit) or a size with the unit k, m")


def test_quadlet_uses_the_template_values():
    cfg = config.load(None, CUSTOM)
    text = quadlet.render_quadlet(cfg, "registry.example.com/group/pipglr@sha256:" + "a" * 64)
    assert "uid=3000,gid=3000" in text
    assert "Image=registry.example.com/group/pipglr@sha256:" + "a" * 64 in text.splitlines()
    assert quadlet.render_quadlet(cfg, IMAGE) == quadlet.render_quadlet(cfg, IMAGE)


@pytest.mark.parametrize("image, registry", [
    ("registry.example.com/group/pipglr:latest", True), ("registry.example.com:5000/pipglr", True),
    ("localhost:5000/pipglr:nightly", True),  # a registry on this machine
    ("localhost/pipglr:latest", False),  # this machine's own storage: no registry to ask
    ("pipglr:latest", False), ("registry.example.com/group/pipglr@sha256:" + "a" * 64, False),  # pinned
])
def test_quadlet_auto_updates_an_image_from_a_registry(image, registry):
    container = unit_sections(quadlet.render_quadlet(config.load(None), image))["Container"]
    assert values(container, "AutoUpdate") == (["registry"] if registry else [])


def test_quadlet_is_ready_when_healthy_and_restarted_when_not():
    cfg = config.load(None)
    sections = unit_sections(quadlet.render_quadlet(cfg, IMAGE))
    container, service = sections["Container"], sections["Service"]
    assert values(container, "Notify") == ["healthy"], "started = can run jobs (auto-update's rollback test)"
    assert values(container, "HealthCmd") == [render.HEALTH["cmd"]]
    assert values(container, "HealthOnFailure") == ["kill"] and values(service, "Restart") == ["on-failure"]
    # systemd waits for the first healthy check; the start period and the retries fit in easily.
    start_period = int(render.HEALTH["start_period"].removesuffix("s"))
    interval = int(render.HEALTH["interval"].removesuffix("s"))
    timeout = int(values(service, "TimeoutStartSec")[0])
    assert timeout > start_period + render.HEALTH["retries"] * interval + 300, timeout


@pytest.mark.parametrize("image", ["", "localhost/pipglr latest", "localhost/pipglr:%i", "a\nExecStartPre=/bin/x",
                                   "-localhost/pipglr"])
def test_quadlet_refuses_images_that_break_the_unit(image):
    with pytest.raises(ConfigError, match="cannot go into a quadlet unit"):
        quadlet.render_quadlet(config.load(None), image)


def test_cli_quadlet_to_stdout_and_file(tmp_path):
    settings = tmp_path / "pipglr.toml"
    settings.write_text("")
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(settings), "quadlet", IMAGE])
    assert result.exit_code == 0, result.output
    assert result.output == quadlet.render_quadlet(config.load(None), IMAGE)

    out = tmp_path / "systemd" / "pipglr.container"
    result = runner.invoke(main, ["--config", str(settings), "quadlet", "--output", str(out)])
    assert result.exit_code == 0, result.output
    cfg = config.load(None)
    assert out.read_text() == quadlet.render_quadlet(cfg, cfg.image_ref)
    assert "systemctl --user daemon-reload" in result.output

    result = runner.invoke(main, ["--config", str(settings), "quadlet", "bad image"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "Traceback" not in result.output


# --- on the stand-in host -------------------------------------------------------------------------

UNIT_DIR = ".config/containers/systemd"
TIMER_D = ".config/systemd/user/podman-auto-update.timer.d"  # drop-ins for podman's timer
GENERATORS = ("/usr/lib/systemd/user-generators/podman-user-generator", "/usr/libexec/podman/quadlet")


@pytest.mark.slow
def test_quadlet_starts_pipglr_under_the_users_systemd(image, tmp_path):
    """Also podman auto-update from a registry on the stand-in host that wants a login: none, no update; with
    alice's login, the timer's run puts a healthy new image in place of the running one and a job running
    meanwhile finishes (the drain); a new image that never becomes healthy is rolled back; jobs run after each;
    an unsigned image is refused once alice trusts only the publisher's signatures."""
    # The registry runs on the stand-in host's loopback (serve_in_standin), port 5000 of its own network
    # (by address: the stand-in's /etc/hosts names no localhost).
    served = "127.0.0.1:5000/pipglr:latest"
    unit = tmp_path / "pipglr.container"
    proc = cli("quadlet", served, "--output", str(unit))
    assert f"wrote {unit}" in proc.stdout
    container = unit_sections(unit.read_text())["Container"]
    secret = values(container, "Secret")[0]
    runner_uid = dict(opt.partition("=")[::2] for opt in secret.split(",")[1:])["uid"]
    standin = StandIn(BASE if image_exists(BASE) else image, volumes=(registry.standin_volume(), VOLUME))
    alice = USERS["alice"]
    try:
        standin.start()
        gitlab = Coordinator(standin, f"reg-{uuid.uuid4().hex}").start()

        def as_alice(*argv: str, check: bool = True, input: str | None = None, timeout: float = 600):
            return standin.as_user("alice", list(argv), check=check, input=input, timeout=timeout)

        as_alice("sh", "-c", f'mkdir -p "$HOME/{UNIT_DIR}" && cat > "$HOME/{UNIT_DIR}/pipglr.container"',
                 input=unit.read_text())
        # A debug switch the way the unit's comments tell users to set one: a quadlet drop-in.
        as_alice("sh", "-c", f'mkdir -p "$HOME/{UNIT_DIR}/pipglr.container.d" && '
                 f'cat > "$HOME/{UNIT_DIR}/pipglr.container.d/debug.conf"',
                 input="[Service]\nEnvironment=RUNNER_LOG_LEVEL=debug\n")

        # Quadlet's dry run as alice: the unit it would generate, and nothing refused.
        generator = next(g for g in GENERATORS if as_alice("test", "-x", g, check=False).returncode == 0)
        user_mode = [] if generator.endswith("user-generator") else ["-user"]  # the symlink's name implies it
        dry = as_alice(generator, "-dryrun", *user_mode, check=False)
        assert dry.returncode == 0, dry.stderr
        problems = [line for line in dry.stderr.splitlines()
                    if any(word in line.lower() for word in ("error", "warn", "unsupported", "unknown"))]
        assert not problems, dry.stderr
        assert "---pipglr.service---" in dry.stdout, dry.stdout + dry.stderr
        service = dry.stdout.split("---pipglr.service---", 1)[1]
        exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
        for arg in ("--name pipglr", "--hostname pipglr", "--device /dev/fuse", "--privileged", "--systemd=always",
                    "--sdnotify=healthy", f"--health-cmd {render.HEALTH['cmd']}", "--health-on-failure kill",
                    f"--secret {secret}", "--env RUNNER_LOG_LEVEL --env PODMAN_LOG_LEVEL --env PIPGLR_CA_BUNDLE",
                    *(f"-v {name}:{path}:z" for name, path in VOLUMES.items())):
            assert arg in exec_start, f"{arg!r} not in {exec_start}"
        assert exec_start.endswith(f" {served}"), exec_start
        assert "--label io.containers.autoupdate=registry" in exec_start, exec_start
        assert "\nType=notify\n" in service, service
        # The update's drain chain: systemctl restart runs ExecStop, `podman rm --force` without --time stops
        # the container with its StopTimeout= (stop_timeout + 30), within TimeoutStopSec= (stop_timeout + 60).
        stops = [line for line in service.splitlines() if line.startswith(("ExecStop=", "ExecStopPost="))]
        assert stops and all(" rm " in line and not {"-t", "--time"} & {a.split("=")[0] for a in line.split()}
                             for line in stops), stops
        outer_stop = int(values(container, "StopTimeout")[0])
        assert f"\nTimeoutStopSec={outer_stop + 30}\n" in service, service
        # The same unit for an image in this machine's storage: no registry to update from.
        local_unit = quadlet.render_quadlet(config.load(None), image)
        as_alice("sh", "-c", f'cat > "$HOME/{UNIT_DIR}/local.container"', input=local_unit)
        local = as_alice(generator, "-dryrun", *user_mode).stdout.split("---local.service---", 1)[1].split("\n---", 1)[0]
        assert "io.containers.autoupdate" not in local, "a local image has no registry to update from"
        as_alice("sh", "-c", f'rm "$HOME/{UNIT_DIR}/local.container"')

        # What the user's systemd loads: the generator's output after daemon-reload, verified.
        as_alice("systemctl", "--user", "daemon-reload")
        generated = f"/run/user/{alice}/systemd/generator/pipglr.service"
        as_alice("test", "-f", generated)
        # [Install] WantedBy= is applied by the generator itself (quadlet units cannot be `enable`d).
        as_alice("test", "-L", f"/run/user/{alice}/systemd/generator/default.target.wants/pipglr.service")
        verify = as_alice("systemd-analyze", "--user", "verify", generated, check=False)
        assert verify.returncode == 0 and not verify.stderr.strip() and not verify.stdout.strip(), \
            verify.stdout + verify.stderr

        # The image in a registry alice's podman reaches: TLS from a private CA, which alice's podman trusts
        # through certs.d (docs/using.md); not marked insecure. The registry wants a login for everything.
        standin.load_image("alice", image)
        address, username, password = registry.serve_in_standin(standin.name, tmp_path / "registry-ca")
        assert served.startswith(f"{address}/")
        as_alice("sh", "-c", f'mkdir -p "$HOME/.config/containers/certs.d/{address}" && '
                 f'cat > "$HOME/.config/containers/certs.d/{address}/ca.crt"',
                 input=(tmp_path / "registry-ca" / "ca.crt").read_text())
        # The pushes stand for the nightly, with a login of their own (a file of its own): alice's podman has
        # none until she logs in below, as docs/using.md says.
        publisher = ("--authfile", "publisher-auth.json")
        as_alice("podman", "login", *publisher, "--username", username, "--password-stdin", address, input=password)
        as_alice("podman", "tag", image, served)
        as_alice("podman", "push", "--quiet", *publisher, served)
        as_alice("podman", "rmi", image)  # the unit runs what it names: the registry's image

        # Register as the README says, a runner created in GitLab (the test coordinator): register writes
        # ./config.toml, the secret is made from it unedited. Two jobs at a time: while one runs the runner
        # still asks for the next, which is how the update's gap is measured below.
        created = gitlab.request("POST", "/_test/runners", {"description": "quadlet"})
        as_alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=created["token"])
        as_alice("sh", "-c", "echo 'concurrent = 2' > config.toml")
        as_alice("podman", "container", "runlabel", "register", served, "--", "--url", URL, "--name", "quadlet")
        as_alice("podman", "secret", "create", "config.toml", "config.toml")
        # Start it the way the unit's comments tell users to.
        for label in ("setupstorage", "setupcache"):
            as_alice("podman", "container", "runlabel", label, served)
        # The jobs' image, as an air-gapped user preloads one: podman save NAME | runlabel preload.
        with tempfile.NamedTemporaryFile(dir=standin.api_dir, suffix=".tar") as archive:
            sh("podman", "save", "--output", archive.name, BASE)
            os.chmod(archive.name, 0o644)
            as_alice("sh", "-c", f"podman container runlabel preload {served} < /api/{Path(archive.name).name}")
        as_alice("systemctl", "--user", "start", "pipglr.service")
        # Notify=healthy: started means the health check has passed.
        assert as_alice("podman", "healthcheck", "run", "pipglr", check=False).returncode == 0
        state = json.loads(as_alice("podman", "container", "inspect", "pipglr").stdout)[0]["State"]
        assert (state.get("Health") or state.get("Healthcheck"))["Status"] == "healthy", state

        def booted():
            return standin.wait_booted(what="systemd in the quadlet's pipglr container to boot")

        state = booted()
        failed = as_alice("podman", "exec", "pipglr", "systemctl", "--failed", "--no-legend", check=False).stdout
        assert state == "running", f"pipglr is {state}; failed units:\n{failed}"
        assert as_alice("systemctl", "--user", "is-active", "pipglr.service", check=False).stdout.strip() == "active"

        inspect = json.loads(as_alice("podman", "container", "inspect", "pipglr").stdout)[0]
        mounts = {m.get("Name"): m["Destination"] for m in inspect["Mounts"] if m.get("Type") == "volume"}
        assert mounts == VOLUMES, inspect["Mounts"]
        assert inspect["Config"]["Labels"].get("PODMAN_SYSTEMD_UNIT") == "pipglr.service"
        mounted = as_alice("podman", "exec", "pipglr", "stat", "-c", "%u %g %a", "/run/secrets/config.toml").stdout
        assert mounted.split() == [runner_uid, runner_uid, "400"]
        levels = as_alice("podman", "exec", "pipglr", "cat", render.RUN_ENV).stdout.splitlines()
        assert "RUNNER_LOG_LEVEL=debug" in levels and "LOGGING=--log-level=info" in levels, levels

        # A reboot inside ends the container with status 129: Restart=on-failure brings it back.
        as_alice("podman", "exec", "pipglr", "systemctl", "reboot", check=False)
        wait_for(lambda: as_alice("systemctl", "--user", "show", "--value", "--property", "NRestarts",
                                  "pipglr.service").stdout.strip() not in ("", "0"), 120,
                 what="systemd to restart pipglr.service after a reboot inside")
        assert booted() == "running"
        # Notify=healthy: the restarted unit is active once the health check passes. (A stop before that
        # waits for TimeoutStopSec: docs/using.md says why.)
        wait_for(lambda: as_alice("systemctl", "--user", "is-active", "pipglr.service", check=False).stdout.strip()
                 == "active", 180, interval=2, what="the restarted pipglr.service to become active (healthy)")

        # The podman-auto-update.timer drop-in of docs/using.md, loaded by the user's systemd.
        as_alice("sh", "-c", f'mkdir -p "$HOME/{TIMER_D}" && cat > "$HOME/{TIMER_D}/pipglr.conf"',
                 input=(ROOT / "examples" / "podman-auto-update-pipglr.conf").read_text())
        as_alice("systemctl", "--user", "daemon-reload")
        as_alice("systemctl", "--user", "enable", "--now", "podman-auto-update.timer")
        timer = as_alice("systemctl", "--user", "show", "--property", "RandomizedDelayUSec,FixedRandomDelay,"
                         "TimersCalendar,ActiveState", "podman-auto-update.timer").stdout
        for expected in ("RandomizedDelayUSec=2h", "FixedRandomDelay=yes", "ActiveState=active", "05:00:00 UTC"):
            assert expected in timer, timer
        assert timer.count("OnCalendar=") == 1, f"the drop-in replaces podman's daily schedule:\n{timer}"
        # The service the timer starts waits for the whole drain: no start timeout of its own.
        assert as_alice("systemctl", "--user", "show", "--value", "--property", "Type,TimeoutStartUSec",
                        "podman-auto-update.service").stdout.split() == ["oneshot", "infinity"]

        # podman auto-update, as the timer runs it: a new healthy image under the tag replaces the running one.
        def running_image() -> str:
            return json.loads(as_alice("podman", "container", "inspect", "pipglr").stdout)[0]["Image"]

        def push_next(containerfile: str, healthcheck: str | None = None) -> str:
            """Build an image FROM the served one in alice's storage, push it under the same tag: its ID."""
            as_alice("sh", "-c", 'rm -rf "$HOME/next" && mkdir "$HOME/next" && cat > "$HOME/next/Containerfile"',
                     input=containerfile)
            if healthcheck is not None:
                as_alice("sh", "-c", 'cat > "$HOME/next/healthcheck" && chmod 755 "$HOME/next/healthcheck"',
                         input=healthcheck)
            # Built under another name: alice's tag keeps naming the running image until auto-update pulls.
            as_alice("podman", "build", "--quiet", "--pull=never", "--tag", "localhost/pipglr-next", "next")
            as_alice("podman", "push", "--quiet", *publisher, "localhost/pipglr-next", served)
            built = as_alice("podman", "image", "inspect", "--format", "{{.Id}}", "localhost/pipglr-next").stdout
            as_alice("podman", "untag", "localhost/pipglr-next")
            return built.strip()

        def auto_update(what: str) -> str:
            proc = as_alice("podman", "auto-update", "--format", "{{.Unit}} {{.Image}} {{.Updated}}",
                            check=False, timeout=1500)
            journal = as_alice("journalctl", "--user", "-u", "pipglr.service", "-n", "40", "--no-pager",
                               check=False).stdout
            print(f"podman auto-update ({what}): exit {proc.returncode}\n{proc.stdout}{proc.stderr}\n{journal}")
            return proc.stdout + proc.stderr

        def update_service() -> dict[str, str]:
            """podman-auto-update.service, which the timer starts: its last run and how that ended."""
            shown = as_alice("systemctl", "--user", "show", "--property", "InvocationID,ActiveState,Result,"
                             "ExecMainStartTimestampMonotonic", "podman-auto-update.service").stdout
            return dict(line.partition("=")[::2] for line in shown.splitlines())

        def update_journal(invocation: str) -> str:
            """What one run of that service printed: auto-update's table (UNIT ... UPDATED) or its error (the
            journalctl of docs/using.md, one run of it)."""
            return as_alice("journalctl", "--user", "-u", "podman-auto-update", "--no-pager", "-o", "cat",
                            f"_SYSTEMD_INVOCATION_ID={invocation}").stdout

        def reported(table: str) -> list[str]:
            """The UPDATED column of pipglr.service's rows in auto-update's table."""
            return [row.split()[-1] for row in table.splitlines()
                    if row.split()[:1] == ["pipglr.service"] and served in row.split()]

        def healthy() -> bool:
            return as_alice("podman", "healthcheck", "run", "pipglr", check=False).returncode == 0

        def unit_state() -> str:
            return as_alice("systemctl", "--user", "show", "--value", "--property", "ActiveState",
                            "pipglr.service").stdout.strip()

        def add_job(*script: str) -> int:
            return gitlab.request("POST", "/_test/jobs", {"script": list(script), "image": BASE})["id"]

        def job_state(job_id: int) -> dict:
            return gitlab.state()["jobs"][str(job_id)]

        def wait_job(job_id: int, timeout: float = 300) -> dict:
            return wait_for(lambda: (job := job_state(job_id))["state"] in ("success", "failed") and job, timeout,
                            interval=1, what=f"job {job_id} to finish")

        def succeeded(job: dict) -> bool:
            """gitlab-runner's last trace line, after everything the job ran."""
            return job["state"] == "success" and "Job succeeded" in (job["trace"].rstrip().splitlines() or [""])[-1]

        # A job's /cache as alice sees it: a nested volume on pipglr-cache (podman unshare: its owners are
        # the container's users). The drain job waits in its step until the test puts a file there.
        cache = as_alice("podman", "volume", "inspect", "--format", "{{.Mountpoint}}", "pipglr-cache").stdout.strip()

        def in_cache(script: str) -> bool:
            return as_alice("podman", "unshare", "sh", "-c", script, check=False).returncode == 0

        first = running_image()
        good = push_next(f"FROM {served}\nLABEL io.pipglr.test-update=healthy\n")
        assert good != first
        # Without a login alice's podman may not even look: the timer's service fails, its journal says why
        # (`journalctl --user -u podman-auto-update`), and the host keeps running what it ran.
        refused = as_alice("systemctl", "--user", "start", "podman-auto-update.service", check=False)
        assert refused.returncode != 0, "podman auto-update should fail without a login"
        service = update_service()
        assert (service["ActiveState"], service["Result"]) == ("failed", "exit-code"), service
        journal = update_journal(service["InvocationID"])
        assert reported(journal) == ["failed"] and "authentication required" in journal, journal
        assert running_image() == first and unit_state() == "active"
        # alice logs in as docs/using.md says: to the file in her home, which podman reads after
        # $XDG_RUNTIME_DIR/containers/auth.json (where a plain `podman login` writes: a tmpfs, empty at boot).
        as_alice("podman", "login", "--authfile", ".config/containers/auth.json", "--username", username,
                 "--password-stdin", address, input=password)
        assert as_alice("stat", "-c", "%a", ".config/containers/auth.json").stdout.strip() == "600"
        assert as_alice("sh", "-c", 'test ! -e "$XDG_RUNTIME_DIR/containers/auth.json"', check=False).returncode == 0
        drain = add_job('echo "drain job $CI_JOB_ID waiting" > "/cache/$CI_JOB_ID-waiting"',
                        'until [ -e "/cache/$CI_JOB_ID-release" ]; do sleep 1; done', "echo drain-job-released")
        wait_for(lambda: in_cache(f"ls {cache}/*/_data/{drain}-waiting"), 300, interval=2,
                 what="the drain job to wait in its step")

        # The timer itself starts this update, while the job runs: a test-only drop-in, read after pipglr.conf,
        # has it elapse 2 s after its restart (AccuracySec=1s: by default it may wait a minute more). The
        # update restarts the unit (systemctl restart).
        soon = f"{TIMER_D}/zz-test-soon.conf"
        as_alice("sh", "-c", f'cat > "$HOME/{soon}"',
                 input="[Timer]\nOnCalendar=\nOnActiveSec=2s\nRandomizedDelaySec=0\nAccuracySec=1s\n")
        as_alice("systemctl", "--user", "daemon-reload")
        since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        as_alice("systemctl", "--user", "restart", "podman-auto-update.timer")
        def timer_started() -> dict[str, str] | None:
            now = update_service()
            return now if (now["InvocationID"] != service["InvocationID"] and int(now["ExecMainStartTimestampMonotonic"])
                           > int(service["ExecMainStartTimestampMonotonic"])) else None

        run = wait_for(timer_started, 120, interval=0.5, what="podman-auto-update.timer to start the update")
        # The figures count from the service's own start, not from when this poll saw it: CLOCK_MONOTONIC, which
        # the stand-in shares with this process (one kernel, no time namespace).
        update_started = int(run["ExecMainStartTimestampMonotonic"]) / 1e6
        assert 0 <= time.monotonic() - update_started < 60, (run, time.monotonic())

        def graceful() -> str | None:
            """The old runner's SIGQUIT, in `podman logs` (pipglr-console.service shows the shutdown too)."""
            logs = as_alice("podman", "logs", "--since", since, "pipglr", check=False)
            return next((line for line in (logs.stdout + logs.stderr).splitlines()
                         if "Starting graceful shutdown" in line), None)

        stop_line = wait_for(graceful, 300, interval=1, what="the old runner's graceful stop (SIGQUIT)")
        stopping = time.monotonic()
        # No health check runs on a stopping container (HealthOnFailure=kill cannot cut a long drain short).
        during = as_alice("podman", "healthcheck", "run", "pipglr", check=False)
        assert during.returncode == 125 and "is not running" in during.stderr, during

        # Held past podman's default stop timeout (10 s, which killed jobs before StopTimeout= was set): the
        # restart stops the container with the quadlet's StopTimeout, not podman's default.
        def drained_past_default() -> bool:
            assert job_state(drain)["state"] == "running", job_state(drain)
            assert unit_state() == "deactivating", unit_state()
            return time.monotonic() - stopping > 15

        wait_for(drained_past_default, 60, interval=1, what="the drain to outlast podman's default stop timeout")
        assert in_cache(f'for f in {cache}/*/_data/{drain}-waiting; do touch "${{f%-waiting}}-release"; done')
        released = time.monotonic()
        job = wait_job(drain, 120)
        assert succeeded(job), job["trace"][-3000:]
        assert "drain-job-released" in job["trace"], job["trace"][-3000:]
        done = wait_for(lambda: (now := update_service())["ActiveState"] in ("inactive", "failed") and now, 1500,
                        interval=1, what="the timer's podman-auto-update.service to finish")
        updated_at = time.monotonic()
        output = update_journal(run["InvocationID"])
        print(f"podman-auto-update.service, started by the timer: {done}\n{output}")
        assert (done["InvocationID"], done["Result"]) == (run["InvocationID"], "success"), done
        assert reported(output) == ["true"], output
        assert running_image() == good, "the unit should run the new image"
        assert unit_state() == "active"
        assert healthy()
        # The documented timer again: the test's drop-in gone and the timer restarted (one that has elapsed
        # gets no next time from a daemon-reload alone): next at 05:00 UTC plus this host's delay.
        as_alice("rm", soon)
        as_alice("systemctl", "--user", "daemon-reload")
        as_alice("systemctl", "--user", "restart", "podman-auto-update.timer")
        timer = as_alice("systemctl", "--user", "show", "--property", "TimersMonotonic,TimersCalendar",
                         "podman-auto-update.timer").stdout
        assert "OnActive" not in timer and "05:00:00 UTC" in timer, timer
        next_run = as_alice("systemctl", "--user", "show", "--value", "--property", "NextElapseUSecRealtime",
                            "podman-auto-update.timer").stdout.strip()
        next_at = datetime.datetime.strptime(next_run, "%a %Y-%m-%d %H:%M:%S %Z").replace(tzinfo=datetime.UTC)
        assert datetime.datetime.now(datetime.UTC) < next_at and 5 <= next_at.hour < 7, next_run
        assert update_service()["InvocationID"] == run["InvocationID"], "the timer should not run again now"

        # The next job runs on the new image; the gap: the old runner's last job request to the new one's first.
        after = wait_job(add_job("echo on-the-new-image"))
        assert succeeded(after) and "on-the-new-image" in after["trace"], after["trace"][-3000:]

        def at(stamp: str) -> datetime.datetime:
            return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)

        finished = at(job["finished_at"])
        booted_at = as_alice("podman", "container", "inspect", "--format", "{{.State.StartedAt}}", "pipglr").stdout
        asked = sorted(at(r["at"]) for r in gitlab.state()["requests"] if r["runner_id"] == created["id"])
        old_last = max(t for t in asked if t <= finished)
        new_first = min(t for t in asked if t > finished)
        # The draining runner asked for no job (a request already on its way at SIGQUIT: 1 s).
        sigquit = datetime.datetime.fromisoformat(stop_line.split()[0])
        assert old_last <= sigquit + datetime.timedelta(seconds=1), (old_last, stop_line)
        print(f"drain figures: auto-update {updated_at - update_started:.0f} s (SIGQUIT seen after "
              f"{stopping - update_started:.0f} s, job released after {released - update_started:.0f} s, "
              f"release to active {updated_at - released:.0f} s); no job requests "
              f"{(new_first - old_last).total_seconds():.0f} s ({old_last:%H:%M:%S} to {new_first:%H:%M:%S}), "
              f"job finished to first new request {(new_first - finished).total_seconds():.0f} s; "
              f"new container started {booted_at.strip()}; SIGQUIT: {stop_line}")

        # A new image that never becomes healthy: its health check always fails (so Notify=healthy never
        # says started and HealthOnFailure=kill ends it); auto-update puts the previous image back.
        broken = push_next(f"FROM {served}\nCOPY healthcheck {render.HEALTH['cmd']}\n",
                           healthcheck="#!/bin/sh\necho 'broken on purpose by test_quadlet' >&2\nexit 1\n")
        assert broken != good

        def failed_starts() -> int:
            journal = as_alice("journalctl", "--user", "-u", "pipglr.service", "--no-pager", "-o", "cat").stdout
            return journal.count("Failed to start pipglr.service")

        failed_before = failed_starts()
        output = auto_update("an image that never becomes healthy")
        assert failed_starts() > failed_before, "the broken image's start should have failed (never healthy)"
        assert f"pipglr.service {served} rolled back" in output.splitlines(), output
        wait_for(lambda: as_alice("systemctl", "--user", "is-active", "pipglr.service", check=False).stdout.strip()
                 == "active", 300, interval=2, what="pipglr.service active again after the rollback")
        assert running_image() == good, "the rollback should run the previous image"
        assert as_alice("podman", "image", "inspect", "--format", "{{.Id}}", served).stdout.strip() == good
        assert healthy()
        back = wait_job(add_job("echo after-the-rollback"))
        assert succeeded(back) and "after-the-rollback" in back["trace"], back["trace"][-3000:]

        # Only signed images (docs/using.md): alice trusts the repository with the publisher's key, the files
        # exactly as `pipglr-build trust` plans them for her (trust.plan on her home, the stand-in's own
        # /etc/containers as the system's). An image then pushed under the tag unsigned is refused by the update's
        # pull, and pipglr stays on the image it runs.
        keys = tmp_path / "keys"
        keys.mkdir()
        keygen(keys, "publisher")
        system = tmp_path / "standin-containers"
        sh("podman", "cp", f"{standin.name}:/etc/containers", str(system))
        home = Path("/home/alice")
        assert not home.exists(), "trust.plan reads alice's files from this machine: there must be none here"
        for change in trust.plan(home, served.rpartition(":")[0], (keys / "publisher.pub").read_bytes(), system):
            as_alice("sh", "-c", f'mkdir -p "{change.path.parent}" && cat > "{change.path}" && '
                     f'chmod {change.mode:o} "{change.path}"', input=change.content)
        unsigned = push_next(f"FROM {served}\nLABEL io.pipglr.test=unsigned\n")
        assert unsigned != good
        output = auto_update("an unsigned image under the tag")
        assert "A signature was required, but no signature exists" in output, output
        assert running_image() == good and unit_state() == "active" and healthy()
        assert as_alice("podman", "image", "inspect", "--format", "{{.Id}}", served).stdout.strip() == good

        as_alice("systemctl", "--user", "stop", "pipglr.service")
        shown = as_alice("systemctl", "--user", "show", "--property", "ActiveState,Result", "pipglr.service").stdout
        assert sorted(shown.split()) == ["ActiveState=inactive", "Result=success"], \
            f"a stop should be clean (SuccessExitStatus=130):\n{shown}"
        assert as_alice("podman", "container", "exists", "pipglr", check=False).returncode == 1, \
            "the quadlet's container should be removed when the service stops"
        volumes = set(as_alice("podman", "volume", "ls", "--quiet").stdout.split())
        assert set(VOLUMES) <= volumes, "stopping the service must keep the volumes"
    finally:
        standin.close()
