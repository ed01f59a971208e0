"""`build.py verify` on freshly built images: rootless on the stand-in user host, through the runlabels.

Also proves NESTED_PRIVILEGED both ways: the default image (true) lets a job
be privileged, add capabilities, drop seccomp (or use a profile that allows by
default), use a host device and share the outer container's PID, IPC or UTS
namespace; an image built with false refuses each (the check suite asserts
whichever the image's label says, so both runs must pass).
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from .conftest import IMAGE_NAME, cli, runner_args, sh, stop_midway

pytestmark = pytest.mark.slow


def leftovers(output: str) -> set[str]:
    """Containers and volumes still there of those verify said it started (other runs may be busy too)."""
    started = set(re.findall(r"(pipglr-(?:standin|boot)-[0-9a-f]{8})", output))
    names = sh("podman", "ps", "--all", "--format", "{{.Names}}").stdout.split()
    volumes = sh("podman", "volume", "ls", "--quiet").stdout.split()
    return {n for n in names + volumes if any(n.startswith(s) for s in started)}


def assert_verified(proc, image: str) -> str:
    out = proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert f"verify {image} (amd64, full profile)" in out
    summary = re.search(r"^(\d+) passed, (\d+) failed$", out, re.MULTILINE)
    assert summary and int(summary.group(1)) >= 17 and summary.group(2) == "0", out[-3000:]
    return out


# The checks of NESTED_PRIVILEGED (each way of asking, the default capabilities, the marker) and of setuid files.
PRIVILEGE_CHECKS = tuple(f"test_jobs_asking_for_more_follow_nested_privileged[{ask}]"
                         for ask in ("privileged", "cap_add", "seccomp_unconfined", "device", "pid_host", "ipc_host",
                                     "uts_host", "bind_dev", "bind_socket", "bind_root")) + (
    "test_userns_host_is_the_default", "test_seccomp_profiles_follow_nested_privileged[allowing_by_default]",
    "test_seccomp_profiles_follow_nested_privileged[stricter_than_default]",
    "test_hook_knows_podmans_default_capabilities", "test_jobs_are_refused_without_a_readable_marker[missing]",
    "test_jobs_are_refused_without_a_readable_marker[unreadable]", "test_unprivileged_jobs_always_run",
    "test_runner_volumes_always_run",
    "test_only_the_id_mappers_are_setuid_or_setgid")


def assert_passed(out: str, checks) -> None:
    for check in checks:
        assert re.search(rf"^  ok    {re.escape(check)}$", out, re.MULTILINE), f"{check} did not pass:\n{out[-3000:]}"


def test_verify_default_image(image):
    out = assert_verified(cli("verify", image, check=False), image)
    assert_passed(out, ("test_systemd_is_pid1_and_running", "test_job_runs_with_expanded_uid_map",
                        "test_job_has_network", "test_job_with_an_init_runs_catatonit_as_pid_1",
                        "test_65536_sub_ids_are_refused_with_the_fix",
                        "test_no_secret_in_image_or_history", "test_storage_volume_is_native_overlay",
                        *PRIVILEGE_CHECKS))
    assert "podman container runlabel setupstorage" in out and "runlabel run" in out
    assert re.search(r"pipglr-standin-[0-9a-f]{8}", out)
    assert leftovers(out) == set(), "verify left containers or volumes behind"


def test_verify_image_without_nested_privileges_with_session_server():
    tag = f"t-unpriv-{uuid.uuid4().hex[:8]}"
    ref = f"{IMAGE_NAME}:{tag}"
    cli("build", "--image-name", IMAGE_NAME, "--tags", tag, "--nested-privileged", "false",
        "--session-server-listen", "0.0.0.0:8093", *runner_args())
    try:
        labels = sh("podman", "image", "inspect", "--format", "{{index .Labels \"io.pipglr.nested-privileged\"}}",
                    ref).stdout.strip()
        assert labels == "false"
        assert_passed(assert_verified(cli("verify", ref, check=False), ref), PRIVILEGE_CHECKS)
    finally:
        if not os.environ.get("PIPGLR_KEEP_IMAGES"):
            sh("podman", "rmi", "--force", ref, check=False)


def test_verify_missing_image_is_a_clear_error():
    proc = cli("verify", "localhost/pipglr-test:does-not-exist", check=False)
    assert proc.returncode == 1
    assert "not found in local storage" in proc.stderr and "Traceback" not in proc.stderr


def _standin_running(err: str) -> bool:
    names = re.findall(r"stand-in user host (pipglr-standin-[0-9a-f]{8})", err)
    return bool(names) and sh("podman", "container", "exists", names[0], check=False).returncode == 0


@pytest.mark.parametrize("moment", ["setting up", "running the checks"])
def test_verify_cleans_up_when_interrupted(image, moment):
    """SIGTERM (a scheduler's stop) in the middle of verify: exit 130, nothing left behind.

    While the checks run, pytest itself catches the interruption; verify must still stop, not report failures."""
    def when(err: str) -> bool:
        return _standin_running(err) if moment == "setting up" else "verify: running the checks" in err
    returncode, err = stop_midway("verify", image, when=when, timeout=400,
                                  what=f"verify to be {moment}", exit_within=180)
    assert returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-2000:]
    assert "interrupted" in err
    assert leftovers(err) == set(), "an interrupted verify left containers or volumes behind"
