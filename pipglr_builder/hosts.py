"""Where verify runs images: a rootful boot, or a stand-in for a user's host.

Users run pipglr with rootless podman on cgroup v2 hosts. Machines with
cgroup v1 (such as this project's CI VMs) cannot boot systemd in a rootless
container, so `StandIn` starts a container that behaves like such a host
(systemd, cgroup2, users with linger and subuid allocations) and runs the
user's commands inside it as those users. `RootfulBoot` boots an image
directly with rootful podman: the lighter profile for emulated platforms.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from . import render, tools
from .errors import PipglrError

HERE = Path(__file__).resolve().parent
# systemd 257 needs a cgroup2 hierarchy: on cgroup v1 hosts give the container
# one of its own in a private cgroup namespace before systemd starts.
CGROUP2_PREFIX = "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && exec"
ENTRYPOINT = "/usr/local/libexec/pipglr/entrypoint"
USERS = {"alice": 2000, "bob": 2001}  # see standin/Containerfile


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll CONDITION until it returns something truthy; raise after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise PipglrError(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")


def booted_state(exec_argv: list[str], env: dict[str, str] | None = None) -> str | None:
    """systemctl is-system-running through EXEC_ARGV, when booting has finished."""
    state = tools.execute([*exec_argv, "systemctl", "is-system-running"], check=False, env=env).stdout.strip()
    return state if state in ("running", "degraded") else None


class RootfulBoot:
    """IMAGE booted by host (root) podman with systemd as PID 1."""

    def __init__(self, image: str, name: str | None = None, arch: str | None = None):
        self.image, self.name = image, name or unique("pipglr-boot")
        self.volumes = [f"{self.name}-storage", f"{self.name}-cache"]
        self.arch = arch

    def start(self, timeout: float = 180) -> RootfulBoot:
        platform = ["--arch", self.arch] if self.arch else []
        tools.execute(["podman", "run", "--detach", "--name", self.name, "--hostname", "pipglr", *platform,
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
        tools.execute(["podman", "rm", "--force", "--volumes", "--time", "0", self.name], check=False)
        tools.execute(["podman", "volume", "rm", "--force", *self.volumes], check=False)


class StandIn:
    """A container acting as a user's cgroup v2 host with rootless podman."""

    def __init__(self, base_image: str, name: str | None = None, volumes: tuple[str, ...] = ()):
        self.base_image = base_image
        self.extra_volumes = volumes  # host:container[:options], e.g. test helpers
        self.name = name or unique("pipglr-standin")
        self.home_volume = f"{self.name}-home"
        self.api_dir = Path(tempfile.mkdtemp(prefix="pipglr-standin-api-"))

    @property
    def image(self) -> str:
        containerfile = (HERE / "standin" / "Containerfile").read_bytes()
        key = hashlib.sha256(containerfile + self.base_image.encode()).hexdigest()[:12]
        return f"localhost/pipglr-standin:{key}"

    def _ensure_image(self) -> None:
        if tools.execute(["podman", "image", "exists", self.image], check=False).returncode == 0:
            return
        tools.say(f"stand-in: building {self.image} (a cgroup v2 host with rootless podman)")
        tools.run(["buildah", "bud", "--layers", "--isolation", "chroot", "--build-arg", f"BASE_IMAGE={self.base_image}",
                   "--file", str(HERE / "standin" / "Containerfile"), "--tag", self.image, str(HERE / "standin")],
                  quiet=True)

    def start(self, timeout: float = 180) -> StandIn:
        self._ensure_image()
        os.chmod(self.api_dir, 0o777)
        # --no-hosts: this machine's /etc/hosts entries (host.containers.internal
        # pointing at this machine) must not leak into the user's containers.
        tools.execute(["podman", "run", "--detach", "--name", self.name, "--hostname", "standin", "--no-hosts",
                       "--privileged", "--cgroupns=private", "--systemd=always",
                       "--device", "/dev/fuse", "--device", "/dev/net/tun",
                       # A host has no task limit of podman's 2048 (this machine's cgroup v1 enforces it).
                       "--pids-limit", "-1",
                       # Users' container storage must not be on overlay (no overlay on overlay).
                       "--volume", f"{self.home_volume}:/home", "--volume", f"{self.api_dir}:/api",
                       *(arg for v in self.extra_volumes for arg in ("--volume", v)), self.image])
        wait_for(lambda: booted_state(["podman", "exec", self.name]), timeout, what="the stand-in host to boot")
        for user, uid in USERS.items():
            bus = f"/run/user/{uid}/bus"
            wait_for(lambda bus=bus: tools.execute(["podman", "exec", self.name, "test", "-S", bus],
                                                   check=False).returncode == 0, 60, what=f"{user}'s user manager")
        return self

    def user_argv(self, user: str, interactive: bool = False) -> list[str]:
        uid = USERS[user]
        return ["podman", "exec", *(["--interactive"] if interactive else []), "--user", user,
                "--workdir", f"/home/{user}", "--env", f"XDG_RUNTIME_DIR=/run/user/{uid}",
                "--env", f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus", self.name]

    def as_user(self, user: str, argv: list[str], *, check: bool = True, input: str | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ARGV in the stand-in host as USER in a login-like environment."""
        return tools.execute([*self.user_argv(user, interactive=input is not None), *argv], check=check,
                             input=input, timeout=timeout)

    def load_image(self, user: str, ref: str) -> None:
        """Copy IMAGE from host storage into USER's rootless storage (podman save | podman load)."""
        tools.copy_image(ref, [*self.user_argv(user, interactive=True), "podman", "load", "--quiet"])

    def start_api(self, user: str = "alice") -> dict[str, str]:
        """Serve USER's podman API on a socket this machine can reach; return the env for the podman CLI."""
        sock = f"/api/{user}.sock"
        self.as_user(user, ["systemd-run", "--user", "--unit", f"pipglr-api-{user}", "--quiet",
                            "podman", "system", "service", "--time=0", f"unix://{sock}"])
        host_sock = self.api_dir / f"{user}.sock"
        wait_for(host_sock.exists, 30, what=f"{user}'s podman API socket")
        return dict(os.environ, CONTAINER_HOST=f"unix://{host_sock}")

    def address(self) -> str:
        """The stand-in's IP address on the bridge network this machine's podman made for it."""
        argv = ["podman", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name]
        return tools.execute(argv).stdout.strip()

    def close(self) -> None:
        tools.execute(["podman", "rm", "--force", "--volumes", "--time", "0", self.name], check=False)
        tools.execute(["podman", "volume", "rm", "--force", self.home_volume], check=False)
        shutil.rmtree(self.api_dir, ignore_errors=True)
