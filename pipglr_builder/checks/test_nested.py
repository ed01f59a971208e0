"""Nested jobs through the socket as user runner, the way gitlab-runner's docker executor makes them."""

import json
import re
import uuid

import pytest

from pipglr_builder.processes import wait_for
from pipglr_builder.render import NESTED_SOCKET as SOCKET

pytestmark = pytest.mark.full
IDS = (0, 1000, 65534, 65535)
HOOK = "/usr/local/libexec/pipglr/deny-privileged-jobs"
MARKER = "/etc/pipglr/nested-privileged"


def api(target, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
    """One Docker API call as user runner; returns (HTTP status, body)."""
    argv = ["curl", "-sS", "--unix-socket", SOCKET, "-X", method, "-o", "/dev/stdout", "-w", "\n%{http_code}",
            f"http://d/v1.41{path}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    out = target.exec(*argv, user="runner", check=True).stdout
    text, _, status = out.rpartition("\n")
    return int(status), text


def create(target, script: str, host_config: dict | None = None, tty: bool = True, network: str = "host",
           aliases: tuple = ()) -> str:
    """Create a job container on NETWORK (with ALIASES there; HOST_CONFIG added to the runner's usual
    HostConfig); its id."""
    name = f"pipglr-check-{uuid.uuid4().hex[:8]}"
    status, body = api(target, "POST", f"/containers/create?name={name}", {
        # Tty: plain logs (without it the Docker API multiplexes them in frames). But with a
        # terminal podman 5.4 loses a failed hook's error in about 1 start of 4 ("conmon bytes").
        "Image": target.job_image, "Entrypoint": ["/bin/sh", "-c"], "Cmd": [script], "Tty": tty,
        "HostConfig": {"NetworkMode": network, **(host_config or {})},
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": list(aliases)}}} if aliases else {},
    })
    assert status == 201, body
    return json.loads(body)["Id"]


def run_job(target, script: str, host_config: dict | None = None, tty: bool = True,
            network: str = "host") -> tuple[int, str, str]:
    """Create, start, wait for and remove a job container; return (exit code, logs or the start error, id)."""
    cid = create(target, script, host_config, tty, network)
    try:
        status, body = api(target, "POST", f"/containers/{cid}/start")
        if status != 204:
            return -1, body, cid
        status, body = api(target, "POST", f"/containers/{cid}/wait")
        code = json.loads(body)["StatusCode"]
        _, logs = api(target, "GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
        return code, logs, cid
    finally:
        api(target, "DELETE", f"/containers/{cid}?force=1&v=1")


def test_job_runs_with_expanded_uid_map(target):
    chowns = "; ".join(f"touch /tmp/f{i} && chown {i}:{i} /tmp/f{i}" for i in IDS)
    code, logs, cid = run_job(target, f"set -e; {chowns}; stat -c '%u:%g' " + " ".join(f"/tmp/f{i}" for i in IDS)
                              + "; cat /proc/self/uid_map")
    assert code == 0, logs
    for i in IDS:
        assert f"{i}:{i}" in logs
    status, _ = api(target, "GET", f"/containers/{cid}/json")
    assert status == 404, "the job container was not removed"


def test_job_with_an_init_runs_catatonit_as_pid_1(target):
    # gitlab-runner's FF_USE_INIT_WITH_DOCKER_EXECUTOR sends HostConfig.Init: podman then needs catatonit
    # (without it: `lookup init binary: exec: "catatonit": executable file not found in $PATH`).
    # podman mounts the init at /run/podman-init; catatonit's --version says "tini version ..._catatonit".
    code, logs, _ = run_job(target, "init=$(tr '\\0' '\\n' < /proc/1/cmdline | head -n 1); echo init=$init; "
                                    "$init --version", {"Init": True})
    assert code == 0 and "init=/run/podman-init" in logs and "_catatonit" in logs, logs


def test_job_has_network(target):
    # A server on the outer container's loopback; a job in network mode host
    # must reach it. No traffic leaves the machine.
    port = 18000 + uuid.uuid4().int % 1000
    uid = target.labels["io.pipglr.podman-uid"]
    service = f"pipglr-check-api-{port}"
    target.exec("systemd-run", "--uid", uid, "--setenv", f"XDG_RUNTIME_DIR=/run/user/{uid}", "--unit", service,
                "podman", "system", "service", "--time=60", f"tcp://127.0.0.1:{port}", check=True)
    try:
        script = (f"for i in $(seq 1 50); do curl -sS http://127.0.0.1:{port}/_ping && exit 0; sleep 0.2; done; "
                  "exit 1")
        code, logs, _ = run_job(target, script)
        assert code == 0 and logs.strip().endswith("OK"), logs
    finally:
        target.exec("systemctl", "stop", service)


def test_job_network_resolves_a_service_by_alias(target):
    # What register configures (FF_NETWORK_PER_BUILD): a network per job, where
    # netavark and aardvark-dns give a service its alias; removed afterwards.
    network = f"pipglr-check-net-{uuid.uuid4().hex[:8]}"
    status, body = api(target, "POST", "/networks/create", {"Name": network})
    assert status == 201, body
    # Stops at SIGTERM (a PID 1 that ignores it costs podman's 10 s stop timeout).
    service = create(target, "trap 'exit 0' TERM; sleep 120 & wait", network=network, aliases=("web",))
    try:
        status, body = api(target, "POST", f"/containers/{service}/start")
        assert status == 204, body
        code, logs, _ = run_job(target, "getent hosts web", network=network)
        assert code == 0 and "web" in logs, logs
    finally:
        api(target, "DELETE", f"/containers/{service}?force=1&v=1")
        status, body = api(target, "DELETE", f"/networks/{network}")
    assert status == 204, f"the job network was not removed: {body}"


def hook_lines(target, text: str) -> list[str]:
    journal = target.exec("journalctl", "--no-pager", "-o", "cat", "-t", "deny-privileged-jobs").stdout
    return [line for line in journal.splitlines() if text in line]


def new_hook_line(target, text: str, before: int) -> str:
    """The hook's newest journal line with TEXT, once there are more than BEFORE (journald may lag)."""
    def newer():
        lines = hook_lines(target, text)
        return lines[-1] if len(lines) > before else None
    return wait_for(newer, 15, what=f"a new '{text}' in the journal of deny-privileged-jobs")


def cap_eff(logs: str) -> int:
    return int(re.search(r"CapEff:\s*([0-9a-f]+)", logs).group(1), 16)


def outer_namespace(target, kind: str) -> str:
    """The outer container's namespace of KIND (its PID 1's), as readlink shows it: pid:[4026532480]."""
    return target.exec("readlink", f"/proc/1/ns/{kind}", check=True).stdout.strip()


def shares(kind: str):
    """A job's proof that it got the outer container's namespace of KIND."""
    return f"readlink /proc/self/ns/{kind}", lambda logs, target: outer_namespace(target, kind) in logs


# The ways a job asks for more than podman's defaults through the Docker API, as gitlab-runner's
# privileged, cap_add, security_opt, devices, pid_mode and ipcmode settings do: (HostConfig, script,
# proof it got it (from its logs and the target), the reason the hook gives when it refuses).
ASKS = {
    "privileged": ({"Privileged": True}, "grep CapEff /proc/self/status",
                   lambda logs, _: cap_eff(logs) in (0x1ffffffffff, 0x3fffffffff), "privileged (or unmask=ALL)"),
    "cap_add": ({"CapAdd": ["NET_ADMIN"]}, "grep CapEff /proc/self/status",
                lambda logs, _: cap_eff(logs) & (1 << 12), "capabilities beyond the default: CAP_NET_ADMIN"),
    "seccomp_unconfined": ({"SecurityOpt": ["seccomp=unconfined"]}, "grep Seccomp: /proc/self/status",
                           lambda logs, _: re.search(r"Seccomp:\s*0\b", logs), "seccomp=unconfined"),
    "device": ({"Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"}]},
               "test -c /dev/fuse && echo has-fuse", lambda logs, _: "has-fuse" in logs, "host devices: /dev/fuse"),
    # The outer container's namespaces: pid would let a job see and signal the nested podman, conmon and
    # other jobs (all of its uid), ipc give it the outer /dev/shm with podman's lock file, uts its hostname.
    "pid_host": ({"PidMode": "host"}, *shares("pid"), "namespaces of the outer container: pid"),
    "ipc_host": ({"IpcMode": "host"}, *shares("ipc"), "namespaces of the outer container: ipc"),
    "uts_host": ({"UTSMode": "host"}, *shares("uts"), "namespaces of the outer container: uts"),
    # Paths of the outer container as volumes: its devices, the API socket's folder, its root.
    "bind_dev": ({"Binds": ["/dev:/outer-dev"]}, "test -c /outer-dev/fuse && echo has-outer-dev",
                 lambda logs, _: "has-outer-dev" in logs, "mounts from the outer container: /dev"),
    "bind_socket": ({"Binds": ["/run/pipglr:/outer-run"]}, "test -S /outer-run/podman.sock && echo has-socket",
                    lambda logs, _: "has-socket" in logs, "mounts from the outer container: /run/pipglr"),
    "bind_root": ({"Binds": ["/:/outer"]}, "test -f /outer/etc/pipglr/nested-privileged && echo has-outer-root",
                  lambda logs, _: "has-outer-root" in logs, "mounts from the outer container: /"),
}


@pytest.mark.parametrize("ask", ASKS)
def test_jobs_asking_for_more_follow_nested_privileged(target, expect, ask):
    host_config, script, granted, reason = ASKS[ask]
    before = len(hook_lines(target, reason))
    code, logs, _ = run_job(target, script, host_config, tty=False)  # as gitlab-runner: no terminal
    if expect["nested_privileged"]:
        assert code == 0 and granted(logs, target), logs
    else:
        assert code != 0, f"a job with {host_config} ran although the image says NESTED_PRIVILEGED=false"
        assert "deny-privileged-jobs" in logs, logs  # the API error names the refusing hook
        assert "NESTED_PRIVILEGED=false" in new_hook_line(target, reason, before)


def test_userns_host_is_the_default(target):
    """Rootless podman runs every job in the nested podman's user namespace (the one with the expanded
    uid_map): a job asking for UsernsMode host gets just that, not the outer container's; the hook lets it run."""
    script = "readlink /proc/self/ns/user; cat /proc/self/uid_map"
    code, default, _ = run_job(target, script, tty=False)
    assert code == 0, default
    code, host, _ = run_job(target, script, {"UsernsMode": "host"}, tty=False)
    assert code == 0, host
    assert host == default and outer_namespace(target, "user") not in host, (host, default)


# A seccomp profile the API client names by a path in the outer container (podman 5.4's Docker API reads
# SecurityOpt seccomp=VALUE as a path; gitlab-runner sends the file's JSON, which it fails to open):
# (a command printing the profile, mkdir's error under it, the reason when refused or None).
DENY_MKDIR = '{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}'
WITHOUT_MKDIR = """jq '.syscalls |= map(.names -= ["mkdir", "mkdirat"])' /usr/share/containers/seccomp.json"""
PROFILES = {
    "allowing_by_default": (f"""echo '{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{DENY_MKDIR}]}}'""",
                            "Operation not permitted",
                            "a seccomp profile that lets unnamed syscalls run (defaultAction SCMP_ACT_ALLOW)"),
    "stricter_than_default": (WITHOUT_MKDIR, "Function not implemented", None),
}


@pytest.mark.parametrize("profile", PROFILES)
def test_seccomp_profiles_follow_nested_privileged(target, expect, profile):
    """A profile that allows what it does not name is no filter: refused like seccomp=unconfined. One that
    only takes syscalls away from podman's default runs in either mode."""
    make, granted, reason = PROFILES[profile]
    path = f"/tmp/pipglr-check-seccomp-{uuid.uuid4().hex[:8]}.json"
    target.exec("sh", "-c", f"{make} > {path} && chmod 644 {path}", check=True)
    before = len(hook_lines(target, reason)) if reason else 0
    try:
        code, logs, _ = run_job(target, "mkdir /tmp/made", {"SecurityOpt": [f"seccomp={path}"]}, tty=False)
    finally:
        target.exec("rm", "-f", path)
    if expect["nested_privileged"] or reason is None:
        assert code != 0 and granted in logs, logs  # ran, with the profile's errno for mkdir
    else:
        assert code != 0 and "deny-privileged-jobs" in logs, logs
        assert "NESTED_PRIVILEGED=false" in new_hook_line(target, reason, before)


def test_hook_knows_podmans_default_capabilities(target):
    """The hook's DEFAULT_CAPS is what the nested podman really gives a job that asks for nothing."""
    listed = re.search(r'^DEFAULT_CAPS="([A-Z_ ]+)"$', target.exec("cat", HOOK, check=True).stdout, re.MULTILINE)
    status, body = api(target, "POST", f"/containers/create?name=pipglr-check-{uuid.uuid4().hex[:8]}",
                       {"Image": target.job_image, "Entrypoint": ["true"], "HostConfig": {"NetworkMode": "host"}})
    assert status == 201, body
    cid = json.loads(body)["Id"]
    try:
        caps = target.exec("podman", "container", "inspect", "--format", "{{json .BoundingCaps}}", cid,
                           user="podman", check=True).stdout
    finally:
        api(target, "DELETE", f"/containers/{cid}?force=1")
    assert sorted(json.loads(caps)) == sorted(listed.group(1).split())


@pytest.mark.parametrize("spoil, restore", [("mv {m} {m}.saved", "mv {m}.saved {m}"),
                                            ("chmod 000 {m}", "chmod 644 {m}")], ids=["missing", "unreadable"])
def test_jobs_are_refused_without_a_readable_marker(target, spoil, restore):
    """Fail closed: without the image's NESTED_PRIVILEGED marker even an ordinary job is refused."""
    reason = f"{MARKER} is missing or unreadable"
    before = len(hook_lines(target, reason))
    target.exec("sh", "-c", spoil.format(m=MARKER), check=True)
    try:
        code, logs, _ = run_job(target, "true", tty=False)
    finally:
        target.exec("sh", "-c", restore.format(m=MARKER), check=True)
    assert code != 0 and "deny-privileged-jobs" in logs, logs
    new_hook_line(target, reason, before)
    assert run_job(target, "true")[0] == 0, "jobs stay refused after the marker came back"


def test_unprivileged_jobs_always_run(target):
    code, logs, _ = run_job(target, "id -u")
    assert (code, logs.strip()) == (0, "0")


def test_runner_volumes_always_run(target):
    """What gitlab-runner's config mounts (a cache volume, the CA bundle read-only) passes the hook."""
    volume = f"pipglr-check-cache-{uuid.uuid4().hex[:8]}"
    try:
        code, logs, _ = run_job(target, "touch /cache/f && test -s /etc/pipglr/ca-certificates.crt && echo mounted",
                                {"Binds": [f"{volume}:/cache",
                                           "/etc/ssl/certs/ca-certificates.crt:/etc/pipglr/ca-certificates.crt:ro"]},
                                tty=False)
    finally:
        api(target, "DELETE", f"/volumes/{volume}?force=1")
    assert code == 0 and "mounted" in logs, logs  # without a terminal the logs come in the API's frames


def test_65536_sub_ids_are_refused_with_the_fix(target):
    """bob has the distribution default of 65536 sub-IDs: the user gets the fix, not newuidmap's error."""
    standin = target.standin
    standin.load_image("bob", target.image)
    result = standin.as_user("bob", ["podman", "container", "runlabel", "setupstorage", target.image], check=False)
    message = result.stdout + result.stderr
    assert result.returncode != 0
    for text in ("/etc/subuid", "/etc/subgid", "65536", "65539", "podman system migrate"):
        assert text in message, message
    assert "write to uid_map failed" not in message
