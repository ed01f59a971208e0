"""A GitLab behind a private CA: the CA given at `runlabel register` and `runlabel run`
(PIPGLR_CA_BUNDLE) is trusted by gitlab-runner and reaches the job containers.
No GIT_SSL_NO_VERIFY anywhere: the coordinator's certificate is signed only by the test CA."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import pytest

from pipglr_builder import processes
from pipglr_builder.harness.coordinator import HOST, VOLUME, Coordinator
from pipglr_builder.standin import StandIn

from .conftest import BASE, HELPER, ROOT
from .registry import make_certificates
from .test_e2e import World

pytestmark = pytest.mark.slow
PORT = 8443  # the coordinator serves HTTPS here
URL = f"https://{HOST}:{PORT}"


def make_ca(directory: Path) -> Path:
    """A test CA and a server certificate for host.containers.internal signed by it, readable in the stand-in."""
    made = make_certificates(directory, server=HOST, alt_names=f"DNS:{HOST}", ca_name="pipglr test CA")
    for path in made:
        path.chmod(0o644)
    return made[0]


@pytest.fixture(scope="module")
def world(image, tmp_path_factory):
    certs = tmp_path_factory.mktemp("ca")
    ca = make_ca(certs)
    certs.chmod(0o755)
    standin = StandIn(BASE, volumes=(VOLUME, f"{certs}:/certs:ro"))
    try:
        standin.start()
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False  # the control API is reached by the stand-in's address
        gitlab = Coordinator(standin, f"reg-{uuid.uuid4().hex}", port=PORT, scheme="https", context=context)
        w = World(standin, image, gitlab.start("--tls-cert", "/certs/server.crt", "--tls-key", "/certs/server.key",
                                               what="the HTTPS test coordinator"))
        standin.load_image("alice", image)
        w.ca = ca.read_text()
        yield w
    finally:
        standin.close()


def register(world, with_ca: bool):
    env = 'PIPGLR_CA_BUNDLE="$(cat /certs/ca.crt)" ' if with_ca else ""
    return world.alice("sh", "-c", f"{env}podman container runlabel register {world.image} -- --url {URL}",
                       check=False)


def test_without_the_ca_registration_fails_on_the_certificate(world):
    world.alice("podman", "secret", "create", "REGISTRATION_TOKEN", "-", input=world.registration_token + "\n")
    world.alice("touch", "config.toml")
    result = register(world, with_ca=False)
    assert result.returncode != 0
    assert "certificate" in (result.stdout + result.stderr), result.stdout + result.stderr
    assert world.state()["runners"] == []


def test_with_the_ca_registration_and_jobs_work(world):
    result = register(world, with_ca=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trusting the CA bundle" in result.stdout + result.stderr
    assert URL in world.alice("cat", "config.toml").stdout
    world.alice("podman", "secret", "create", "config.toml", "config.toml")
    for label in ("setupstorage", "setupcache"):
        world.alice("podman", "container", "runlabel", label, world.image)
    world.alice("sh", "-c", f'PIPGLR_CA_BUNDLE="$(cat /certs/ca.crt)" podman container runlabel run {world.image}')
    world.wait_booted()
    world.load_nested(BASE)
    world.load_nested(HELPER)  # the helper the build made
    marker = [line for line in world.ca.splitlines() if line and not line.startswith("-----")][1]
    job = world.wait_job(world.add_job(f"grep -qF '{marker}' /etc/pipglr/ca-certificates.crt && echo CA-IN-JOB"))
    assert job["state"] == "success", job["trace"][-3000:]
    assert "CA-IN-JOB" in job["trace"]  # the trace itself came over HTTPS signed by the test CA


def test_no_advice_to_disable_tls_verification():
    proc = processes.call(["git", "-C", str(ROOT), "ls-files"])
    assert proc.returncode == 0, proc.stderr
    tracked = proc.stdout
    for name in tracked.split():
        if not name.startswith("tests/") and (ROOT / name).is_file():  # top-level links to template folders
            assert "GIT_SSL_NO_VERIFY" not in (ROOT / name).read_text(errors="ignore"), f"{name} mentions it"
