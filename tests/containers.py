"""Test support: boot built images with podman and wait on conditions (never fixed sleeps)."""

from __future__ import annotations

import subprocess
import time
import uuid

# This VM's cgroups are v1 "hybrid": systemd 257 in the image needs a cgroup2
# hierarchy, so the test boot mounts one in a private cgroup namespace first
# (shared/ENVIRONMENT.md). Users' cgroup v2 hosts need none of this.
CGROUP2_BOOT = "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && exec /usr/local/libexec/pipglr/entrypoint"


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input, timeout=timeout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll CONDITION until it returns a truthy value; fail with WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Booted:
    """An image booted rootful with systemd as PID 1; removed with its volumes on close()."""

    def __init__(self, image: str, name: str | None = None):
        self.name = name or unique("pipglr-boot")
        self.volumes = [f"{self.name}-storage", f"{self.name}-cache"]
        sh("podman", "run", "--detach", "--name", self.name, "--hostname", "pipglr",
           "--privileged", "--cgroupns=private", "--systemd=always", "--device", "/dev/fuse",
           "--volume", f"{self.volumes[0]}:/home/podman/.local/share/containers",
           "--volume", f"{self.volumes[1]}:/cache",
           "--entrypoint", "/bin/sh", image, "-c", CGROUP2_BOOT)

    def exec(self, *argv: str, user: str = "root", check: bool = False) -> subprocess.CompletedProcess:
        env = ["--env", "XDG_RUNTIME_DIR=/run/user/1000"] if user == "podman" else []
        return sh("podman", "exec", "--user", user, *env, self.name, *argv, check=check)

    def system_state(self) -> str:
        return self.exec("systemctl", "is-system-running").stdout.strip()

    def wait_booted(self, timeout: float = 120) -> str:
        return wait_for(lambda: self.system_state() if self.system_state() in ("running", "degraded") else None,
                        timeout, what=f"systemd in {self.name} to finish booting")

    def close(self) -> None:
        sh("podman", "rm", "--force", "--volumes", "--time", "10", self.name, check=False)
        sh("podman", "volume", "rm", "--force", *self.volumes, check=False)
