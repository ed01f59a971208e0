"""`build.py nightly` into a real registry (Debian's docker-registry, TLS + basic auth, on loopback).

amd64 gets the full verify profile, arm64 (under qemu-user-static) the
emulated one; then the manifest list is pushed under latest, the runner
version and the date, each with the suffix -gomodule: the tests build the
runner from its Go module on purpose (runner_args), which is no release
build. A second run with unchanged inputs pushes nothing; a run whose build
fails pushes nothing and exits 1.
"""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from pipglr_builder import publish

from .conftest import cli, need, runner_args, sh, stop_midway
from .registry import start_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    need("docker-registry", "skopeo", "openssl", "htpasswd")
    running = start_registry(tmp_path_factory.mktemp("nightly-registry"), tls=True, auth=True)
    try:
        publish.login(running.registry, running.username, running.password)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def image_name():
    name = f"localhost/pipglr-nightly-{uuid.uuid4().hex[:8]}"
    yield name
    refs = sh("podman", "images", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    for ref in refs:
        if ref.startswith(name + ":"):
            sh("buildah", "manifest", "rm", ref, check=False)
            sh("podman", "rmi", "--force", ref, check=False)


def nightly(registry, image_name, report, *extra):
    reg = registry.registry
    return cli("nightly", "--platform", "linux/amd64,linux/arm64", "--image-name", image_name,
               "--publish-repository", f"{registry.address}/pipglr", "--publish-cert-dir", reg.cert_dir,
               "--publish-authfile", reg.authfile, "--report", str(report), *runner_args(), *extra, check=False)


def test_nightly_builds_verifies_and_pushes_both_platforms(registry, image_name, tmp_path_factory, fresh_storage):
    report_dir = tmp_path_factory.getbasetemp() / "nightly-report"
    proc = nightly(registry, image_name, report_dir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads((report_dir / "report.json").read_text())
    today = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    assert report["result"] == "ok" and report["push"] == "pushed"
    assert set(report["pushed"]) == {"latest-gomodule", "19.4.0-gomodule", f"{today}-gomodule"}
    assert report["runner_source"] == "gomodule"
    assert len(set(report["pushed"].values())) == 1, "all tags name the same manifest list"
    for platform, profile in (("linux/amd64", "full"), ("linux/arm64", "emulated")):
        entry = report["platforms"][platform]
        assert entry["verified"] and entry["failed_checks"] == [] and entry["verify_profile"] == profile
        assert entry["size_bytes"] > 100e6 and entry["build_seconds"] >= 0
        assert entry["versions"]["gitlab-runner"] == "19.4.0"
        assert entry["versions"]["podman"].startswith("5.") and entry["versions"]["base_suite"] == "trixie"
    summary = (report_dir / "summary.txt").read_text()
    assert "OK" in summary and "linux/arm64" in summary and "verified" in summary

    reg = registry.registry
    for tag in report["pushed"]:
        assert publish.remote_platforms(reg, "pipglr", tag) == ["linux/amd64", "linux/arm64"]
        assert publish.remote_digest(reg, "pipglr", tag) == report["pushed"][tag]
    raw = sh("skopeo", "inspect", "--raw", *reg.flags(), f"docker://{reg.ref('pipglr', 'latest-gomodule')}").stdout
    assert {m["platform"]["architecture"] for m in json.loads(raw)["manifests"]} == {"amd64", "arm64"}

    # A fresh storage can pull the amd64 image and run it.
    ref = reg.ref("pipglr", "latest-gomodule")
    pulled = sh(*fresh_storage, "pull", "--quiet", "--arch", "amd64", *reg.flags(), f"docker://{ref}", check=False)
    assert pulled.returncode == 0, pulled.stderr
    ran = sh(*fresh_storage, "run", "--rm", "--entrypoint", "/usr/local/bin/gitlab-runner", ref, "--version",
             check=False)
    assert ran.returncode == 0 and "19.4.0" in ran.stdout, ran.stderr
    found = json.loads(sh(*fresh_storage, "image", "inspect", ref).stdout)[0]["Labels"]
    assert found["io.pipglr.runner-source"] == "gomodule"


def test_second_nightly_with_unchanged_inputs_pushes_nothing(registry, image_name, tmp_path_factory):
    report_dir = tmp_path_factory.getbasetemp() / "nightly-report"
    before = json.loads((report_dir / "report.json").read_text())["pushed"]
    proc = nightly(registry, image_name, report_dir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["push"].startswith("skipped: nothing changed"), report["push"]
    assert not any(p["rebuilt"] for p in report["platforms"].values())
    assert report["pushed"] == before
    assert "unchanged" in (report_dir / "summary.txt").read_text()


def test_failed_build_pushes_nothing(registry, image_name, tmp_path_factory):
    report_dir = tmp_path_factory.getbasetemp() / "nightly-broken"
    reg = registry.registry
    proc = cli("nightly", "--platform", "linux/amd64,linux/arm64", "--image-name", image_name + "-broken",
               "--publish-repository", f"{registry.address}/pipglr-broken", "--publish-cert-dir", reg.cert_dir,
               "--publish-authfile", reg.authfile, "--report", str(report_dir), "--extra-packages",
               "no-such-package-pipglr", *runner_args(), check=False)
    assert proc.returncode == 1
    report = json.loads((report_dir / "report.json").read_text())
    assert report["result"] == "failed" and "error" in report and report["pushed"] == {}
    assert publish.remote_digest(reg, "pipglr-broken", "latest-gomodule") is None
    assert "Traceback" not in proc.stderr


def test_stopped_nightly_pushes_nothing_and_still_reports(registry, image_name, tmp_path_factory):
    """SIGTERM while verify runs its checks: exit 130, the report says interrupted, nothing pushed."""
    report_dir = tmp_path_factory.getbasetemp() / "nightly-stopped"
    reg = registry.registry
    returncode, err = stop_midway(
        "nightly", "--platform", "linux/amd64", "--image-name", image_name + "-stopped",
        "--publish-repository", f"{registry.address}/pipglr-stopped", "--publish-cert-dir", reg.cert_dir,
        "--publish-authfile", reg.authfile, "--report", str(report_dir), *runner_args(),
        when=lambda err: "verify: running the checks" in err, timeout=1200, what="nightly to reach the checks",
        exit_within=180)
    assert returncode == 130, err[-3000:]
    assert "Traceback" not in err
    report = json.loads((report_dir / "report.json").read_text())
    assert report["result"] == "interrupted" and report["pushed"] == {}
    assert publish.remote_digest(reg, "pipglr-stopped", "latest-gomodule") is None
    for ref in sh("podman", "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        if ref.startswith(image_name + "-stopped:"):
            sh("podman", "rmi", "--force", ref, check=False)
