"""Booting an image with systemd as PID 1, and knowing when it has booted.

`RootfulBoot` boots an image directly with this machine's (root) podman:
verify's light profile for emulated platforms, and tests that need a booted
image but no user host. The full profile boots on a stand-in user host
(standin.py), which uses `booted_state` the same way.
"""

from __future__ import annotations

from . import processes, render
from .processes import unique, wait_for

# systemd 257 needs a cgroup2 hierarchy: on cgroup v1 hosts give the container
# one of its own in a private cgroup namespace before systemd starts.
CGROUP2_PREFIX = "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && exec"
ENTRYPOINT = "/usr/local/libexec/pipglr/entrypoint"


def booted_state(exec_argv: list[str], env: dict[str, str] | None = None) -> str | None:
    """systemctl is-system-running through EXEC_ARGV, when booting has finished."""
    state = processes.execute([*exec_argv, "systemctl", "is-system-running"], check=False, env=env).stdout.strip()
    return state if state in ("running", "degraded") else None


class RootfulBoot:
    """IMAGE booted by host (root) podman with systemd as PID 1."""

    def __init__(self, image: str, name: str | None = None, arch: str | None = None):
        self.image, self.name = image, name or unique("pipglr-boot")
        self.volumes = [f"{self.name}-storage", f"{self.name}-cache"]
        self.arch = arch

    def start(self, timeout: float = 180) -> RootfulBoot:
        platform = ["--arch", self.arch] if self.arch else []
        processes.execute(["podman", "run", "--detach", "--name", self.name, "--hostname", "pipglr", *platform,
                           "--privileged", "--cgroupns=private", "--systemd=always", "--device", "/dev/fuse",
                           "--volume", f"{self.volumes[0]}:{render.NESTED_STORAGE}",
                           "--volume", f"{self.volumes[1]}:{render.NESTED_VOLUMES}",
                           "--entrypoint", "/bin/sh", self.image, "-c", f"{CGROUP2_PREFIX} {ENTRYPOINT}"])
        wait_for(lambda: booted_state(self.exec_argv()), timeout, what=f"systemd in {self.name} to boot")
        return self

    def exec_argv(self, user: str = "root") -> list[str]:
        env = ["--env", f"XDG_RUNTIME_DIR={render.PODMAN_RUNTIME_DIR}"] if user == "podman" else []
        return ["podman", "exec", "--user", user, *env, self.name]

    def close(self) -> None:
        processes.execute(["podman", "rm", "--force", "--volumes", "--time", "0", self.name], check=False)
        processes.execute(["podman", "volume", "rm", "--force", *self.volumes], check=False)
