"""Fixtures of the verification suite. `target` comes from verify.py."""

import shlex

import pytest
from testinfra.backend.podman import PodmanBackend
from testinfra.host import Host


def pytest_configure(config):
    config.addinivalue_line("markers", "full: needs the full profile (rootless on a user host, nested jobs)")


class TargetBackend(PodmanBackend):
    """testinfra's podman backend with the podman CLI the target names (verify.Target.podman_argv: on a
    stand-in host, alice's own podman there rather than its API socket)."""

    def __init__(self, target, user=None):
        self.target = target
        super().__init__(f"{user}@{target.container}" if user else target.container)

    def run(self, command, *args, **kwargs):
        cmd = self.get_command(command, *args)
        argv = [*self.target.podman_argv(), "exec", *(["--user", self.user] if self.user else []), self.name,
                "/bin/sh", "-c", cmd]
        out = self.run_local(shlex.join(argv))
        out.command = self.encode(cmd)
        return out


@pytest.fixture(scope="session")
def host(target):
    """The outer container, as root."""
    return Host(TargetBackend(target))


@pytest.fixture(scope="session")
def runner(target):
    """The outer container, as user runner."""
    return Host(TargetBackend(target, "runner"))


@pytest.fixture(scope="session")
def expect(target):
    """What the image was built with, read from its labels."""
    labels = target.labels
    return {
        "podman_uid": int(labels["io.pipglr.podman-uid"]),
        "runner_uid": int(labels["io.pipglr.runner-uid"]),
        "prune_interval": labels["io.pipglr.prune-interval"],
        "prune_age": labels["io.pipglr.prune-age"],
        "nested_privileged": labels["io.pipglr.nested-privileged"] == "true",
        "runner_version": labels["io.pipglr.runner-version"],
    }
