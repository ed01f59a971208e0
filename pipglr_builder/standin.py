"""A stand-in for a user's host: where the full verify profile and the tests run pipglr.

Users run pipglr with rootless podman on cgroup v2 hosts. Machines with
cgroup v1 (such as this project's CI VMs) cannot boot systemd in a rootless
container, so `StandIn` starts a container that behaves like such a host
(systemd, cgroup2, users with linger and subuid allocations; its image is
templates/standin/Containerfile) and runs the user's commands inside it as
those users, exactly as they would type them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import buildah, processes
from .boot import booted_state
from .processes import unique, wait_for

CONTEXT = Path(__file__).resolve().parent / "templates" / "standin"
USERS = {"alice": 2000, "bob": 2001}  # see templates/standin/Containerfile


class StandIn:
    """A container acting as a user's cgroup v2 host with rootless podman."""

    def __init__(self, base_image: str, name: str | None = None, volumes: tuple[str, ...] = (),
                 home_fs: Path | None = None):
        self.base_image = base_image
        self.extra_volumes = volumes  # host:container[:options], e.g. test helpers
        self.home_fs = home_fs  # an ext4 image file for /home instead of a directory volume (the bench)
        self.name = name or unique("pipglr-standin")
        self.home_volume = f"{self.name}-home"
        self.api_dir: Path | None = None  # made by start(): a StandIn never started leaves nothing behind

    @property
    def image(self) -> str:
        containerfile = (CONTEXT / "Containerfile").read_bytes()
        key = hashlib.sha256(containerfile + self.base_image.encode()).hexdigest()[:12]
        return f"localhost/pipglr-standin:{key}"

    def _ensure_image(self) -> None:
        # Stand-ins started at once (verify runs beside the tests' own) build the image once: in turn.
        with open(Path(tempfile.gettempdir()) / "pipglr-standin-build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if processes.execute(["podman", "image", "exists", self.image], check=False).returncode == 0:
                return
            processes.say(f"stand-in: building {self.image} (a cgroup v2 host with rootless podman)")
            processes.run(buildah.bud_argv(CONTEXT, self.image,
                                           args=buildah.build_args({"BASE_IMAGE": self.base_image}),
                                           containerfile=CONTEXT / "Containerfile"), quiet=True)

    def start(self, timeout: float = 180) -> StandIn:
        self._ensure_image()
        self.api_dir = Path(tempfile.mkdtemp(prefix="pipglr-standin-api-"))
        os.chmod(self.api_dir, 0o777)
        if self.home_fs is not None:
            # A volume on the image file, mounted through a loop device; podman copies nothing into a
            # volume that has a device, so the users' homes come from the stand-in's image by hand.
            processes.execute(["podman", "volume", "create", "--opt", f"device={self.home_fs}", "--opt", "type=ext4",
                               "--opt", "o=loop", self.home_volume])
            processes.execute(["podman", "run", "--rm", "--entrypoint", "cp", "--volume", f"{self.home_volume}:/mnt",
                               self.image, "-a", "/home/.", "/mnt/"])
        # --no-hosts: this machine's /etc/hosts entries (host.containers.internal
        # pointing at this machine) must not leak into the user's containers.
        processes.execute(["podman", "run", "--detach", "--name", self.name, "--hostname", "standin", "--no-hosts",
                           "--privileged", "--cgroupns=private", "--systemd=always",
                           "--device", "/dev/fuse", "--device", "/dev/net/tun",
                           # A host has no task limit of podman's 2048 (this machine's cgroup v1 enforces it).
                           "--pids-limit", "-1",
                           # Users' container storage must not be on overlay (no overlay on overlay).
                           "--volume", f"{self.home_volume}:/home", "--volume", f"{self.api_dir}:/api",
                           *(arg for v in self.extra_volumes for arg in ("--volume", v)), self.image])
        wait_for(lambda: booted_state(["podman", "exec", self.name]), timeout, what="the stand-in host to boot")
        # A host's network is online: nothing in the stand-in pulls network-online.target in, and quadlet
        # units wait for it (podman-user-wait-network-online.service) 90 s at every start (measured).
        processes.execute(["podman", "exec", self.name, "systemctl", "start", "network-online.target"])
        for user, uid in USERS.items():
            bus = f"/run/user/{uid}/bus"
            wait_for(lambda bus=bus: processes.execute(["podman", "exec", self.name, "test", "-S", bus],
                                                       check=False).returncode == 0, 60, what=f"{user}'s user manager")
        return self

    def wait_booted(self, user: str = "alice", container: str = "pipglr", timeout: float = 180,
                    what: str = "the pipglr container to boot") -> str:
        """Wait until systemd has booted in USER's CONTAINER (started by the run runlabel or the quadlet); its state."""
        return wait_for(lambda: booted_state([*self.user_argv(user), "podman", "exec", container]), timeout, what=what)

    def user_argv(self, user: str, interactive: bool = False) -> list[str]:
        uid = USERS[user]
        return ["podman", "exec", *(["--interactive"] if interactive else []), "--user", user,
                "--workdir", f"/home/{user}", "--env", f"XDG_RUNTIME_DIR=/run/user/{uid}",
                "--env", f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus", self.name]

    def as_user(self, user: str, argv: list[str], *, check: bool = True, input: str | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ARGV in the stand-in host as USER in a login-like environment."""
        return processes.execute([*self.user_argv(user, interactive=input is not None), *argv], check=check,
                                 input=input, timeout=timeout)

    def load_image(self, user: str, ref: str) -> None:
        """Copy IMAGE from host storage into USER's rootless storage (podman save | podman load)."""
        processes.copy_image(ref, [*self.user_argv(user, interactive=True), "podman", "load", "--quiet"])

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
        return processes.execute(argv).stdout.strip()

    def close(self) -> None:
        processes.execute(["podman", "rm", "--force", "--volumes", "--time", "0", self.name], check=False)
        processes.execute(["podman", "volume", "rm", "--force", self.home_volume], check=False)
        if self.api_dir is not None:
            shutil.rmtree(self.api_dir, ignore_errors=True)
