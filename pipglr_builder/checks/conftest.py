"""Fixtures of the verification suite. `target` comes from verify.py."""

import pytest
import testinfra


def pytest_configure(config):
    config.addinivalue_line("markers", "full: needs the full profile (rootless on a user host, nested jobs)")


@pytest.fixture(scope="session")
def host(target):
    """The outer container, as root (testinfra's podman backend)."""
    return testinfra.get_host(f"podman://{target.container}")


@pytest.fixture(scope="session")
def runner(target):
    """The outer container, as user runner."""
    return testinfra.get_host(f"podman://runner@{target.container}")


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
