"""Integration: bootstrap the base, build the amd64 image with the real CLI, boot it.

Marked slow: it runs mmdebstrap, buildah and podman for real (minutes on a
cold cache, about a minute warm).

The `booted` tests resemble checks in pipglr_builder/checks/ but are not duplicates:
they boot the image with rootful podman (boot.RootfulBoot, the emulated profile's
boot) on amd64, where the checks run in the test run only on the rootless stand-in
(tests/test_verify.py) or under emulation with the runtime checks skipped
(tests/test_nightly.py); and they assert more (no failed units on a rootful boot,
pipglr-prune.service verified, the timer's normalised OnCalendar, no fuse-overlayfs).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest
import testinfra

from pipglr_builder import config, processes, render
from pipglr_builder.boot import RootfulBoot
from pipglr_builder.processes import unique

from .conftest import (
    BASE,
    HELPER,
    HELPER_WRITTEN,
    IMAGE_NAME,
    ROOT,
    cli,
    image_exists,
    listed,
    local_image_refs,
    runner_args,
    sh,
    stop_midway,
)

pytestmark = pytest.mark.slow


class Booted(RootfulBoot):
    def exec(self, *argv: str, user: str = "root") -> subprocess.CompletedProcess:
        return sh(*self.exec_argv(user), *argv, check=False)

    def system_state(self) -> str:
        return self.exec("systemctl", "is-system-running").stdout.strip()


@pytest.fixture(scope="session")
def booted(image):
    container = Booted(image)
    try:
        yield container.start()
    finally:
        container.close()


def labels(ref: str) -> dict[str, str]:
    return json.loads(sh("podman", "image", "inspect", ref).stdout)[0]["Labels"]


def test_bootstrap_base_second_call_does_no_work():
    first = cli("bootstrap-base")
    second = cli("bootstrap-base")
    assert "up to date" in second.stderr, second.stderr
    assert "mmdebstrap" not in second.stderr
    assert first.stdout == second.stdout == "localhost/pipglr-base:trixie-amd64\n"


def test_image_lists_its_packages_and_archive(booted, image):
    """verify's package list check, on the booted image; the base's archive dates reach the image's labels."""
    from pipglr_builder import base_image
    from pipglr_builder.checks import test_image as checks
    checks.test_package_list_matches_dpkg(testinfra.get_host(f"podman://{booted.name}"))
    archive = labels(image)[base_image.ARCHIVE_LABEL]
    assert re.fullmatch(r"trixie \S+Z, trixie-updates \S+Z, trixie-security \S+Z", archive), archive
    assert labels(image)[base_image.KEY_LABEL] == labels(BASE)[base_image.KEY_LABEL]  # given to FROM scratch


def test_image_holds_no_docs_translations_or_podman_test_binary(booted, image):
    """What nothing in the image reads is left out (Containerfile step 1): docs but the copyrights, manuals,
    info, translations, podman's test binary; also from the base, whose layer the image does not keep (one
    layer holds the base and the packages); packages installed later leave them out too (dpkg's excludes)."""
    left = booted.exec("sh", "-c", "find /usr/share/locale /usr/share/man /usr/share/info -mindepth 1 2>/dev/null; "
                       "find /usr/share/doc -type f ! -name copyright; ls /usr/libexec/podman/podman-testing 2>&1; "
                       "ls /usr/share/doc/podman/copyright /usr/share/doc/coreutils/copyright").stdout
    assert left.splitlines() == ["ls: cannot access '/usr/libexec/podman/podman-testing': No such file or directory",
                                 "/usr/share/doc/coreutils/copyright", "/usr/share/doc/podman/copyright"], left
    assert "path-exclude=/usr/share/man/*" in booted.exec("cat", "/etc/dpkg/dpkg.cfg.d/pipglr-excludes").stdout
    base_layers = json.loads(sh("podman", "image", "inspect", BASE).stdout)[0]["RootFS"]["Layers"]
    assert not set(base_layers) & set(json.loads(sh("podman", "image", "inspect", image).stdout)[0]["RootFS"]["Layers"])


def test_image_has_every_runlabel_verbatim(image):
    expected = render.template_values(config.load(ROOT / "pipglr.toml"))["label_texts"]
    found = labels(image)
    assert {"register", "setupstorage", "setupcache", "dumpconfig", "run"} <= set(render.RUNLABELS)
    for name in render.RUNLABELS:
        assert found[name] == expected[name], f"runlabel {name} changed in the build ($-expansion?)"
        assert "$IMAGE" in found[name]  # every label runs or names the image it belongs to


def test_image_has_oci_labels(image):
    found = labels(image)
    assert found["org.opencontainers.image.version"] == "19.4.0"
    assert found["io.pipglr.runner-version"] == "19.4.0"
    assert found["io.pipglr.runner-source"] == "gomodule"  # the tests build from the Go module (runner_args)
    assert found["org.opencontainers.image.created"].endswith("Z")
    assert found["org.opencontainers.image.revision"] not in ("", "unknown")
    assert "org.opencontainers.image.source" in found


# What `register` hands gitlab-runner (register.env sourced as register does), the version the real runner
# reports (what it puts in CI_RUNNER_VERSION), and the image's own verdict on an older image's pin.
HELPER_SCRIPT = r"""
. /etc/pipglr/register.env; printf '%s\n' "$DOCKER_HELPER_IMAGE"
. /usr/local/libexec/pipglr/config-lib; runner_version
printf '[[runners]]\n  [runners.docker]\n    helper_image = "%s"\n' "$(own_helper_repo):x86_64-v19.3.1" > /tmp/c.toml
image_helper_pins /tmp/c.toml
"""


def test_helper_name_follows_the_runner(image):
    """register writes ...-v${CI_RUNNER_VERSION}; the real runner's version expands it to the helper the build
    tagged; an older image's literal pin is found as our own (runner-config rewrites it at start)."""
    written, version, pin = sh("podman", "run", "--rm", "--entrypoint", "/bin/sh", image, "-c",
                               HELPER_SCRIPT).stdout.splitlines()
    assert written == HELPER_WRITTEN and "${CI_RUNNER_VERSION}" in written
    assert written.replace("${CI_RUNNER_VERSION}", version) == HELPER
    assert pin == f"own {HELPER.rpartition(':')[0]}:x86_64-v19.3.1"


def test_runlabel_command_expands_image(image):
    # podman's own runlabel, in display mode: proves the label is usable as-is. podman fills in one of the
    # image's names: another test worker's build of the same inputs tags the same image too.
    out = sh("podman", "container", "runlabel", "--display", "setupstorage", image).stdout
    uid = render.DEFAULT_PODMAN_UID
    found = re.search(rf"(\S+) /usr/bin/chown {uid}:{uid} /home/podman/.local/share/containers", out)
    assert found, out
    image_id = sh("podman", "image", "inspect", "--format", "{{.Id}}", image).stdout
    assert sh("podman", "image", "inspect", "--format", "{{.Id}}", found[1]).stdout == image_id


def test_systemd_is_pid1_and_running(booted):
    host = testinfra.get_host(f"podman://{booted.name}")
    assert host.check_output("ps -o comm= -p 1") in ("systemd", "init")
    assert booted.system_state() == "running", booted.exec("systemctl", "--failed", "--no-legend").stdout
    assert booted.exec("systemctl", "--failed", "--no-legend").stdout.strip() == ""


def test_podman_socket_answers_runner_only(booted):
    ping = booted.exec("curl", "-sS", "--unix-socket", render.NESTED_SOCKET, "http://d/_ping", user="runner")
    assert ping.stdout == "OK", ping.stderr
    version = json.loads(booted.exec("curl", "-sS", "--unix-socket", render.NESTED_SOCKET,
                                     "http://d/version", user="runner").stdout)
    assert version["Components"][0]["Name"] == "Podman Engine"
    denied = booted.exec("curl", "-sS", "--unix-socket", render.NESTED_SOCKET, "http://d/_ping", user="nobody")
    assert denied.returncode != 0


def test_the_runner_unit_has_its_go_heap_setting(booted):
    """The environment systemd gives gitlab-runner (here it waits for a config: no process yet)."""
    environment = booted.exec("systemctl", "show", "--property", "Environment", "--value", "runner.service").stdout
    assert "GOGC=50" in environment.split(), environment


def test_the_journal_in_memory_is_capped(booted):
    """journald's own account of its limit (the journal is on a tmpfs; without the cap a tenth of it)."""
    said = booted.exec("journalctl", "--no-pager", "-b", "-u", "systemd-journald", "-o", "cat").stdout
    assert re.search(r"^(System Journal .* max 64M|Runtime Journal .* max 16M)", said, re.MULTILINE), said


def test_runner_waits_for_the_config_it_names(booted):
    log = booted.exec("journalctl", "--no-pager", "-u", "runner.service").stdout
    assert "/run/secrets/config.toml is missing" in log
    assert "podman secret create config.toml" in log


def test_root_steps_follow_no_link_of_podman_or_runner(image):
    """In place, as the units run them: podman plants the old prune-helpers link to the live config
    (the daily prune emptied it and made it world-readable), runner plants its seed marker as a link
    to a file of root's (runner-config wrote the checksum into it). Neither root step follows them."""
    box = Booted(image, name=unique("pipglr-root-steps"))
    try:
        box.start()
        live = 'concurrent = 1\n[[runners]]\n  name = "t"\n  url = "http://127.0.0.1:9/"\n  token = "glrt-t"\n' \
               '  executor = "docker"\n  [runners.docker]\n    helper_image = "reg.example/helper:v1"\n'
        for path, mode in (("/var/lib/pipglr/config.toml", "600"), ("/run/secrets/config.toml", "400")):
            made = box.exec("sh", "-c", f"mkdir -p /run/secrets && printf '%s' '{live}' > {path} && "
                            f"chown runner:runner {path} && chmod {mode} {path}")
            assert made.returncode == 0, made.stderr
        marker = box.exec("cat", "/etc/pipglr/nested-privileged").stdout
        assert box.exec("ln", "-s", "/var/lib/pipglr/config.toml", f"{render.RUN_DIR}/prune-helpers",
                        user="podman").returncode == 0
        assert box.exec("ln", "-s", "/etc/pipglr/nested-privileged", "/var/lib/pipglr/.seeded-from-secret.sha256",
                        user="runner").returncode == 0

        prune = box.exec("systemctl", "start", "pipglr-prune.service")
        assert prune.returncode == 0, box.exec("journalctl", "--no-pager", "-u", "pipglr-prune.service").stdout
        box.exec("systemctl", "restart", "runner.service")
        log = box.exec("journalctl", "--no-pager", "-u", "runner.service").stdout
        assert "seeded from the config.toml secret" in log, log
        # Runner's link was replaced by runner's own file (runner-config writes there as runner).
        assert box.exec("stat", "-c", "%F %U", "/var/lib/pipglr/.seeded-from-secret.sha256").stdout.strip() == \
            "regular file runner"

        assert box.exec("cat", "/etc/pipglr/nested-privileged").stdout == marker
        assert box.exec("stat", "-c", "%U:%G %a", "/etc/pipglr/nested-privileged").stdout.strip() == "root:root 644"
        assert box.exec("cat", "/var/lib/pipglr/config.toml").stdout == live
        assert box.exec("stat", "-c", "%U %a", "/var/lib/pipglr/config.toml").stdout.strip() == "runner 600"
        assert box.exec("cat", f"{render.RUN_ROOT_DIR}/prune-helpers").stdout == "reg.example/helper:v1\n"
        assert box.exec("stat", "-c", "%U:%G %a", render.RUN_ROOT_DIR, render.RUN_ENV).stdout.split("\n")[:2] == \
            ["root:root 755", "root:root 644"]
    finally:
        box.close()


def test_podman_logs_shows_systemd_podman_and_runner_with_secrets_redacted(booted):
    """Where pipglr users look first: `podman logs pipglr` (it printed 0 lines before pipglr-console.service)."""
    booted.exec("logger", "-t", "pipglr-test", "token=glrt-t0psecretLogValue and registration GR1348941s3cretLogValue")

    def shown():
        out = sh("podman", "logs", booted.name, check=False)
        text = out.stdout + out.stderr
        return text if "pipglr-test" in text else None
    text = processes.wait_for(shown, 60, what="the test's journal line in podman logs")
    assert "/run/secrets/config.toml is missing" in text, text[-3000:]  # runner.service (runner-config's stderr)
    assert "Reached target" in text or "Started" in text, text[-3000:]  # systemd
    assert f"systemd[{render.DEFAULT_PODMAN_UID}]" in text or "podman.socket" in text, text[-3000:]  # podman's manager
    assert "t0psecretLogValue" not in text and "s3cretLogValue" not in text
    assert "glrt-[REDACTED]" in text and "GR1348941[REDACTED]" in text
    assert booted.exec("systemctl", "is-active", "pipglr-console.service").stdout.strip() == "active"


LIVE_RUNNER = """concurrent = 1

[[runners]]
  name = "rotating"
  url = "http://127.0.0.1:9"
  id = 7
  token = "glrt-{token}"
  token_obtained_at = {obtained}
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "docker"
  [runners.docker]
    image = "debian:trixie"
"""


def test_image_carries_no_system_id(image):
    """No .runner_system_id, and an empty /etc/machine-id (gitlab-runner derives its system ID from it): a host
    gets its own system ID at its first start, never one baked into the image for every host."""
    found = sh("podman", "run", "--rm", "--entrypoint", "sh", image, "-c",
               "find / -xdev -name .runner_system_id; echo \"machine-id:[$(cat /etc/machine-id)]\"; "
               "readlink /var/lib/dbus/machine-id").stdout
    assert found.splitlines() == ["machine-id:[]", "/etc/machine-id"], found


def derived_system_id(box) -> str:
    """The system ID gitlab-runner derives in booted BOX at a first start (`list` writes it beside its config)."""
    return box.exec("sh", "-c", "d=$(mktemp -d) && touch $d/config.toml && gitlab-runner list --config "
                    "$d/config.toml >/dev/null 2>&1; cat $d/.runner_system_id; rm -rf $d", user="runner").stdout.strip()


def test_config_changes_keep_the_rotated_token_and_a_broken_secret_is_refused(image, booted):
    """runner-config in the booted image: a new secret keeps the token GitLab rotated since, keeps
    .runner_system_id, and a secret gitlab-runner cannot parse never replaces the working live config.
    This boot and the module's other one (booted) get different system IDs, as two hosts do."""
    box = Booted(image).start()
    try:
        def write(path: str, text: str) -> None:
            processes.execute(["podman", "exec", "--interactive", box.name, "sh", "-c",
                               f"mkdir -p $(dirname {path}) && cat > {path}"], input=text)

        def restart_with_secret(text: str) -> str:
            write("/run/secrets/config.toml", text)
            box.exec("systemctl", "reset-failed", "runner.service")
            box.exec("systemctl", "restart", "runner.service")
            return box.exec("cat", "/var/lib/pipglr/config.toml").stdout

        first = LIVE_RUNNER.format(token="registered", obtained="2026-11-01T00:00:00Z")
        assert restart_with_secret(first) == first
        processes.wait_for(lambda: box.exec("test", "-s", "/var/lib/pipglr/.runner_system_id").returncode == 0, 60,
                           what="gitlab-runner to write its system ID")
        system_id = box.exec("cat", "/var/lib/pipglr/.runner_system_id").stdout
        other = derived_system_id(booted)
        assert system_id.startswith("s_") and other.startswith("s_") and other != system_id.strip(), (system_id, other)
        # GitLab rotated the token: gitlab-runner wrote it into the live config (as it does, with nanoseconds).
        rotated = LIVE_RUNNER.format(token="rotated", obtained="2026-12-03T10:00:00.123456789Z")
        write("/var/lib/pipglr/config.toml", rotated)
        # The user edits the old ./config.toml (concurrent 1 -> 3) and recreates the secret.
        live = restart_with_secret(first.replace("concurrent = 1", "concurrent = 3"))
        assert live == rotated.replace("concurrent = 1", "concurrent = 3"), live
        journal = box.exec("journalctl", "--no-pager", "-u", "runner.service").stdout
        assert "runner 'rotating' (id 7): the secret holds an older token" in journal, journal[-3000:]
        assert box.exec("systemctl", "is-active", "runner.service").stdout.strip() == "active"

        # A secret gitlab-runner cannot parse: not used, the runner runs on, the journal and podman logs say why.
        assert restart_with_secret("garbage [[[\n") == live
        assert box.exec("systemctl", "is-active", "runner.service").stdout.strip() == "active"
        journal = box.exec("journalctl", "--no-pager", "-u", "runner.service").stdout
        assert "the config.toml secret changed but is NOT used: gitlab-runner cannot parse it" in journal
        assert "toml: line 1" in journal, journal[-3000:]
        processes.wait_for(lambda: "is NOT used" in sh("podman", "logs", box.name, check=False).stdout, 30,
                           what="the refusal in podman logs")
        assert box.exec("cat", "/var/lib/pipglr/.runner_system_id").stdout == system_id
    finally:
        box.close()


def test_unit_files_verify(booted):
    units = ["/etc/systemd/system/runner.service", "/etc/systemd/system/pipglr-prune.service",
             "/etc/systemd/system/pipglr-prune.timer", "/etc/systemd/system/pipglr-console.service",
             "/etc/systemd/system/pipglr-helper.service"]
    result = booted.exec("systemd-analyze", "verify", *units)
    assert result.returncode == 0, result.stderr
    assert "OnCalendar=daily\n" in booted.exec("cat", "/etc/systemd/system/pipglr-prune.timer").stdout
    timer = booted.exec("systemctl", "show", "-P", "TimersCalendar", "pipglr-prune.timer").stdout
    assert "OnCalendar=*-*-* 00:00:00" in timer and "next_elapse=" in timer, timer
    assert booted.exec("systemctl", "is-active", "pipglr-prune.timer").stdout.strip() == "active"
    assert booted.exec("stat", "-c", "%U:%G %a", render.NESTED_SOCKET).stdout.strip() == "podman:podman-api 660"


def test_a_fresh_nested_storage_gets_the_helper_the_image_carries(booted):
    """The booted image's pipglr-storage is new: pipglr-helper.service (as podman) loaded the carried helper
    under the runner's names before the runner started, and said so in the journal."""
    assert booted.exec("systemctl", "is-active", "pipglr-helper.service").stdout.strip() == "active"
    carried = booted.exec("cat", f"{render.HELPER_DIR}/image-id").stdout.strip()
    assert booted.exec("cat", f"{render.HELPER_DIR}/names").stdout.split() == [HELPER]
    stored = booted.exec("podman", "image", "inspect", "--format", "{{.Id}}", HELPER, user="podman").stdout.strip()
    assert stored and stored == carried
    log = booted.exec("journalctl", "--no-pager", "--output", "cat", "-u", "pipglr-helper.service").stdout
    assert f"lacks {HELPER}" in log and f"loaded {carried[:12]} as {HELPER}" in log, log

    def monotonic(unit: str, what: str) -> int:
        return int(booted.exec("systemctl", "show", "-P", what, unit).stdout.strip())
    loaded, runner = (monotonic("pipglr-helper.service", "ActiveEnterTimestampMonotonic"),
                      monotonic("runner.service", "InactiveExitTimestampMonotonic"))
    assert 0 < loaded <= runner, (loaded, runner)


def test_nested_storage_is_native_overlay(booted):
    out = booted.exec("podman", "info", "--format", "{{.Store.GraphDriverName}} {{.Store.GraphOptions}}",
                      user="podman").stdout
    assert out.startswith("overlay"), out
    assert "fuse-overlayfs" not in out


def build_leftovers() -> set[str]:
    """Temporary tags of IMAGE_NAME and buildah working containers (other runs' count as already there)."""
    tags = local_image_refs()
    containers = listed("buildah", "containers", "--quiet")
    return {t for t in tags if t.startswith(f"{IMAGE_NAME}:build-")} | set(containers)


def assert_no_new_leftovers(before: set[str], what: str):
    """What appeared since BEFORE must go: another test worker's build in progress has working containers
    and temporary tags of its own, which vanish when its step ends; a leftover of ours never does."""
    new = build_leftovers() - before
    try:
        processes.wait_for(lambda: not (new & build_leftovers()), timeout=900, interval=2,
                           what="other builds' working containers to finish")
    except processes.PipglrError:
        raise AssertionError(f"a {what} build left a temporary tag or a working container: "
                             f"{sorted(new & build_leftovers())}") from None


def test_failed_build_leaves_no_half_tagged_image():
    before = build_leftovers()
    tag = unique("broken")
    proc = cli("build", "--image-name", IMAGE_NAME, "--tags", tag, "--extra-packages", "no-such-package-pipglr",
               *runner_args(), check=False)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not image_exists(f"{IMAGE_NAME}:{tag}")
    assert_no_new_leftovers(before, "failed")


def test_stopped_build_leaves_nothing_behind():
    """SIGTERM during a build (a CI timeout): exit 130, and no tag, working container or buildah left."""
    before = build_leftovers()
    tag = unique("stopped")
    # Stopped once apt prints inside the RUN step (-v shows its output): buildah 1.28 dies without removing
    # its working container when SIGTERM lands in the first moment of a step, before it handles signals.
    # --no-cache: the package step runs even when an earlier build with these packages was cached.
    returncode, err = stop_midway("build", "-v", "--no-cache", "--image-name", IMAGE_NAME, "--tags", tag,
                                  "--extra-packages", "hello", *runner_args(),
                                  when=lambda err: "step 2/" in err and "Get:" in err.split("step 2/", 1)[1],
                                  timeout=300, what="apt to run in the build's package step", exit_within=120)
    assert returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert not image_exists(f"{IMAGE_NAME}:{tag}")
    assert_no_new_leftovers(before, "stopped")
    running = sh("pgrep", "-f", f"buildah.*{IMAGE_NAME}:build-", check=False).stdout
    assert running == "", "buildah kept running after the build was stopped"


def test_unchanged_rebuild_is_skipped(image):
    name, tag = image.rsplit(":", 1)
    before = sh("podman", "image", "inspect", "--format", "{{.Id}}", image).stdout
    proc = cli("build", "--image-name", name, "--tags", tag, *runner_args())
    assert "unchanged" in proc.stderr and "not rebuilt" in proc.stderr, proc.stderr[-2000:]
    assert sh("podman", "image", "inspect", "--format", "{{.Id}}", image).stdout == before


def test_another_runner_binary_of_the_same_version_is_installed(image):
    """The install step mounts the binary (no COPY layer): its checksum keeps buildah's layer cache honest."""
    from pipglr_builder import config, runner
    other = runner.helper_binary(runner.from_gomodule(config.load(None), "amd64"), "amd64")  # any other binary
    digest = runner.sha256_of(other)
    name, tag = IMAGE_NAME, f"t-other-{uuid.uuid4().hex[:8]}"
    try:
        cli("build", "--image-name", name, "--tags", tag, "--runner-source", "file", "--runner-file", str(other),
            "--runner-sha256", digest, "--helper-sha256", digest, "--pull-policy", "if-not-present")
        installed = sh("podman", "run", "--rm", "--entrypoint", "sha256sum", f"{name}:{tag}",
                       "/usr/local/bin/gitlab-runner").stdout.split()[0]
        assert installed == digest, "a cached install layer kept the previous binary"
        layers = sh("podman", "history", "--format", "{{.CreatedBy}}", f"{name}:{tag}").stdout
        assert "/tmp/runner" not in "".join(line for line in layers.splitlines() if "COPY" in line)
    finally:
        sh("podman", "rmi", "--force", f"{name}:{tag}", check=False)
