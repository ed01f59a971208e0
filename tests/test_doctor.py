"""The doctor, as users run it without the tool (`podman container runlabel doctor IMAGE | sh`),
on the stand-in host: a good setup passes, broken ones name the problem and the fix."""

from __future__ import annotations

import pytest

from pipglr_builder import config, processes, quadlet, render
from pipglr_builder.standin import StandIn

from .conftest import BASE, cli, sh

pytestmark = pytest.mark.slow
RUNNER = '[[runners]]\n  name = "d"\n  url = "http://gitlab.invalid"\n  token = "glrt-doctor123456"\n  executor = "docker"\n'


@pytest.fixture(scope="module")
def standin(image):
    host = StandIn(BASE)
    try:
        host.start()
        for user in ("alice", "bob"):
            host.load_image(user, image)
        yield host
    finally:
        host.close()


def doctor(standin, user, image):
    """The runlabel prints the script; the user's shell runs it."""
    script = standin.as_user(user, ["podman", "container", "runlabel", "doctor", image]).stdout
    assert script.startswith("#!/bin/sh") and f"image={image}" in script
    result = standin.as_user(user, ["sh", "-s"], input=script, check=False)
    return result.returncode, result.stdout + result.stderr


def test_fresh_user_is_told_each_missing_step(standin, image):
    code, out = doctor(standin, "alice", image)
    assert code == 1
    assert "ok    linger is enabled for alice" in out
    assert "ok    /etc/subuid gives alice 65539 IDs" in out
    assert "FAIL  volume pipglr-storage is missing" in out
    assert f"fix: podman container runlabel setupstorage {image}" in out
    assert "FAIL  podman secret config.toml is missing" in out
    assert "podman secret create REGISTRATION_TOKEN - && touch ./config.toml" in out, out
    assert "echo glrt" not in out, out  # a token typed on a command line stays in the shell's history


def test_secret_without_runners_or_broken_is_caught(standin, image):
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n")
    code, out = doctor(standin, "alice", image)
    assert code == 1 and "has no [[runners]]" in out, out
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"])
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = [\n")
    code, out = doctor(standin, "alice", image)
    assert code == 1 and "does not parse" in out, out
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"])


def test_good_setup_is_ready(standin, image):
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n" + RUNNER)
    for label in ("setupstorage", "setupcache"):
        standin.as_user("alice", ["podman", "container", "runlabel", label, image])
    code, out = doctor(standin, "alice", image)
    assert code == 0, out
    assert "ok    the config.toml secret parses and has 1 runner(s)" in out
    assert "ready: the pipglr container can start" in out
    assert f"note  {image} lets jobs run privileged (NESTED_PRIVILEGED=true)" in out, out
    assert "no syscall filter" in out and "wrong for a shared runner" in out
    # This VM's cgroup2 has no controllers to delegate: a warning with the fix, not a failure.
    assert "WARN  cgroup controllers" in out and "Delegate=" in out
    assert "/cache:/cache" not in out


def test_a_config_sharing_one_cache_directory_is_warned_about(standin, image):
    """Registered by an older image: every project shares /cache (the image still runs it)."""
    shared = RUNNER + '  [runners.docker]\n    image = "debian"\n    volumes = ["/cache:/cache"]\n'
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"], check=False)
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n" + shared)
    code, out = doctor(standin, "alice", image)
    assert code == 0, out
    assert "WARN  config.toml binds /cache:/cache: every project reads and can overwrite" in out, out
    assert 'change that volumes entry to "/cache"' in out
    assert "WARN  a runner in config.toml has no pull_policy" in out, out


def test_a_container_from_an_older_run_label_is_warned_about(standin, image):
    """podman's default stop timeout (10 s) kills running jobs at podman stop."""
    standin.as_user("alice", ["podman", "create", "--name", "pipglr", image])
    try:
        _, out = doctor(standin, "alice", image)
        assert "WARN  container pipglr stops after 10 s: podman stop and host shutdowns kill running jobs" in out, out
        assert f"podman rm -f pipglr && podman container runlabel run {image}" in out
    finally:
        standin.as_user("alice", ["podman", "rm", "--force", "pipglr"])
    assert "network_mode" not in out, out


def test_host_network_mode_is_warned_about(standin, image):
    """A runner registered with --docker-network-mode host (or an old config): the services problem, the fix."""
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"])
    host_mode = RUNNER + '  [runners.docker]\n    network_mode = "host"\n'
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n" + host_mode)
    code, out = doctor(standin, "alice", image)
    assert code == 0, out
    assert 'WARN  the config.toml secret has 1 runner(s) with network_mode = "host"' in out, out
    assert "service aliases do not resolve" in out and "delete its network_mode lines" in out


# A config.toml as pipglr's register writes it (its socket, its /cache on pipglr-cache, host network).
PIPGLR_RUNNER = RUNNER + ('  [runners.docker]\n    host = "unix:///home/runner/podman.sock"\n    image = "debian"\n'
                          '    volumes = ["/cache"]\n    cache_dir = "/cache"\n    pull_policy = ["if-not-present"]\n')


def test_a_host_coming_from_pipglr_is_told_what_to_convert(standin, image):
    """pipglr's secret and its pipglr-cache (chowned to runner by pipglr's setupcache): both named, each fix works."""
    for label in ("setupstorage", "setupcache"):
        standin.as_user("alice", ["podman", "container", "runlabel", label, image])
    standin.as_user("alice", ["podman", "run", "--rm", "--user", "root", "--volume", "pipglr-cache:/cache",
                              "--entrypoint", "/usr/bin/chown", image, "-R", "1001:1001", "/cache"])
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"], check=False)
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n" + PIPGLR_RUNNER)
    try:
        code, out = doctor(standin, "alice", image)
        assert code == 1, out
        assert "FAIL  volume pipglr-cache belongs to uid 1001 (pipglr's /cache" in out, out
        fix = next(line for line in out.splitlines() if "podman volume rm pipglr-cache pipglr-storage" in line)
        assert "note  the config.toml secret was written for pipglr (podman socket /home/runner/podman.sock: 1, " in out
        convert = next(line for line in out.splitlines() if "to convert the secret too" in line)

        # The printed fixes, as the user pastes them.
        standin.as_user("alice", ["sh", "-c", fix.split("fix: when no job runs: ", 1)[1].split("   (", 1)[0]])
        standin.as_user("alice", ["sh", "-c", convert.split("runner rotated): ", 1)[1]])
        converted = standin.as_user("alice", ["cat", "config.toml"]).stdout
        assert 'host = "unix:///run/pipglr/podman.sock"' in converted and "cache_dir" not in converted, converted
        assert 'token = "glrt-doctor123456"' in converted and 'volumes = ["/cache"]' in converted
        code, out = doctor(standin, "alice", image)
        assert code == 0, out
        assert "pipglr-cache belongs" not in out and "written for pipglr" not in out, out
    finally:
        standin.as_user("alice", ["podman", "volume", "rm", "--force", "pipglr-state"], check=False)


def test_65536_sub_ids_and_missing_linger(standin, image):
    sh("podman", "exec", standin.name, "loginctl", "disable-linger", "bob")
    # Without linger bob has no user manager (and no /run/user/2001): like a login
    # shell without a systemd session, he runs the script with a runtime dir of his own.
    script = standin.as_user("alice", ["podman", "container", "runlabel", "doctor", image]).stdout
    sh("podman", "exec", standin.name, "install", "-d", "-o", "bob", "-m", "0700", "/tmp/bob-runtime")
    result = processes.execute(["podman", "exec", "--interactive", "--user", "bob", "--workdir", "/home/bob", "--env",
                                "XDG_RUNTIME_DIR=/tmp/bob-runtime", standin.name, "sh", "-s"], input=script, check=False)
    code, out = result.returncode, result.stdout + result.stderr
    assert code == 1
    assert "FAIL  /etc/subuid gives bob 65536 IDs; pipglr needs 65539" in out, out
    assert "FAIL  /etc/subgid gives bob 65536 IDs" in out
    assert "bob:\\1:65539" in out and "podman system migrate" in out
    assert "FAIL  linger is not enabled for bob" in out and "sudo loginctl enable-linger bob" in out


@pytest.mark.tools
def test_doctor_command_on_this_machine():
    """This VM is cgroup v1 and the tests run as root: the doctor must say both, and exit 1."""
    proc = cli("doctor", check=False)
    assert proc.returncode == 1
    assert "FAIL  cgroup v1" in proc.stdout and "WARN  running as root" in proc.stdout


# Resource limits on the outer container (settings cpus, memory, pids_limit): this stand-in, like this VM,
# delegates no cgroup controller, so each limit is refused here; that a limit really limits is not exercised.
LIMITS = {"cpus": "1.5", "memory": "4g", "pids_limit": "4096"}
# podman 5.4 with crun on a host that does not delegate the controller (measured on the stand-in).
REFUSALS = {("--cpus", "1.5"): "crun: controller `cpu` is not available",
            ("--memory", "4g"): "crun: opening file `memory.max` for writing: No such file or directory",
            ("--pids-limit", "4096"): "crun: controller `pids` is not available"}


def test_limits_the_host_does_not_delegate_are_named_and_refused(standin, image):
    cfg = config.load(None, LIMITS)
    # The doctor of this configuration, as `pipglr-build doctor --cpus 1.5 --memory 4g --pids-limit 4096` runs it.
    result = standin.as_user("alice", ["sh", "-s", "--", image], input=render.render_file(cfg, "files/doctor"),
                             check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    for setting, value, controller in (("cpus", "1.5", "cpu"), ("memory", "4g", "memory"),
                                       ("pids_limit", "4096", "pids")):
        assert (f"FAIL  {setting} = {value} is set on the pipglr container, but alice is not delegated the "
                f"{controller} controller (delegated: none): podman refuses to start pipglr with this limit") in out, out
    assert out.count("Delegate=cpu cpuset io memory pids") >= 3 and "sudo systemctl restart user@2000.service" in out

    # What podman says: the run label a user types, of an image that carries these limits (the label
    # written as the Containerfile writes it).
    values = render.template_values(cfg)
    run, limited = values["label_texts"]["run"], "localhost/pipglr-limits:test"  # as the image holds it
    standin.as_user("alice", ["sh", "-c", "mkdir -p limits && cat > limits/Containerfile"],
                    input=f'FROM {image}\nLABEL run="{values["labels"]["run"]}"\n')
    standin.as_user("alice", ["podman", "build", "--quiet", "--tag", limited, "limits"])
    label = standin.as_user("alice", ["podman", "image", "inspect", "--format", '{{index .Labels "run"}}', limited])
    assert label.stdout.strip() == run
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"], check=False)
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input="concurrent = 1\n" + RUNNER)
    try:
        started = standin.as_user("alice", ["podman", "container", "runlabel", "run", limited], check=False)
        said = started.stdout + started.stderr
        assert started.returncode != 0 and REFUSALS[("--memory", "4g")] in said, said  # crun sets memory first
        state = standin.as_user("alice", ["podman", "inspect", "--format", "{{.State.Status}}", "pipglr"]).stdout
        assert state.strip() != "running"
    finally:
        standin.as_user("alice", ["podman", "rm", "--force", "--time", "0", "pipglr"], check=False)
        standin.as_user("alice", ["podman", "rmi", limited], check=False)

    # The quadlet of this configuration: podman 5.4's generator takes its lines (Memory= it would not).
    standin.as_user("alice", ["sh", "-c", "mkdir -p limits-units && cat > limits-units/pipglr.container"],
                    input=quadlet.render_quadlet(cfg, image))
    dry = standin.as_user("alice", ["env", "QUADLET_UNIT_DIRS=/home/alice/limits-units", "/usr/libexec/podman/quadlet",
                                    "-user", "-dryrun"], check=False)
    assert dry.returncode == 0 and "unsupported" not in dry.stderr, dry.stderr
    exec_start = next(line for line in dry.stdout.splitlines() if line.startswith("ExecStart="))
    assert all(flag in exec_start for flag in ("--pids-limit 4096", "--cpus 1.5", "--memory 4g")), exec_start

    # Each limit alone is refused with its own message; the same container without a limit starts.
    plain = ["podman", "run", "--rm", "--pids-limit", "0", "--entrypoint", "true", image]
    assert standin.as_user("alice", plain, check=False).returncode == 0
    for (flag, value), message in REFUSALS.items():
        refused = standin.as_user("alice", [*plain[:3], flag, value, *plain[5:]], check=False)
        assert refused.returncode != 0 and message in refused.stderr, (flag, refused.stderr)


OLD_PIN = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.3.1"


def test_a_helper_pinned_to_another_runner_is_warned_about(standin, image):
    """A config registered by an older image pins its runner's helper: in the secret and in the live config."""
    pinned = "concurrent = 1\n" + RUNNER + f'  [runners.docker]\n    helper_image = "{OLD_PIN}"\n'
    standin.as_user("alice", ["podman", "secret", "rm", "config.toml"], check=False)
    standin.as_user("alice", ["podman", "secret", "create", "config.toml", "-"], input=pinned)
    standin.as_user("alice", ["podman", "run", "--rm", "--interactive", "--volume", "pipglr-state:/var/lib/pipglr",
                              "--entrypoint", "/bin/sh", image, "-c", "cat > /var/lib/pipglr/config.toml"], input=pinned)
    try:
        code, out = doctor(standin, "alice", image)
        assert code == 0, out
        assert f"WARN  the config.toml secret pins helper_image {OLD_PIN}; this image runs gitlab-runner 19.4.0" in out, out
        assert "tag as ...-v${CI_RUNNER_VERSION} (gitlab-runner expands it to its own version)" in out
        assert (f"WARN  the live config (volume pipglr-state) pins helper_image {OLD_PIN}; this image runs "
                "gitlab-runner 19.4.0") in out
        assert "podman restart pipglr (runner-config rewrites it at start" in out
    finally:
        standin.as_user("alice", ["podman", "volume", "rm", "--force", "pipglr-state"])


def test_a_user_manager_that_stops_before_pipglr_is_warned_about_with_the_drop_in(standin, image):
    """The stand-in host (trixie, systemd 257) stops user@UID.service after 2 min; pipglr needs 630 s.
    The printed fix, run as root, is what makes the doctor content."""
    uid = standin.as_user("alice", ["id", "-u"]).stdout.strip()
    _, out = doctor(standin, "alice", image)
    assert f"WARN  user@{uid}.service stops your whole user manager after 2min at host shutdown" in out, out
    fix = next(line for line in out.splitlines() if "pipglr-stop-timeout.conf" in line).split("fix: ", 1)[1]
    sh("podman", "exec", standin.name, "sh", "-c", fix.replace("sudo ", ""))  # root on the host runs it as is
    try:
        assert sh("podman", "exec", standin.name, "systemctl", "show", f"user@{uid}.service", "-P",
                  "TimeoutStopUSec").stdout.strip() == "11min"
        _, out = doctor(standin, "alice", image)
        assert f"ok    user@{uid}.service gives pipglr 11min to stop at shutdown (needs 660 s)" in out, out
    finally:
        sh("podman", "exec", standin.name, "sh", "-c", f"rm -r /etc/systemd/system/user@{uid}.service.d && "
                                                     "systemctl daemon-reload")
