"""`build.py nightly` into a real registry (Debian's docker-registry, TLS + basic auth, on loopback).

amd64 gets the full verify profile, arm64 (under qemu-user-static) the
emulated one; then the manifest list is pushed under latest, the runner
version and the date, each with the suffix -gomodule: the tests build the
runner from its Go module on purpose (runner_args), which is no release
build. Every tag is signed with a key `pipglr-build keygen` made. A second
run with unchanged inputs pushes (and signs) nothing; a run whose build fails
pushes nothing and exits 1. Last, a rootless user with the policy
`pipglr-build trust` wrote pulls the signed image, and refuses an unsigned
and a foreign-signed one pushed under the same tag.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from pipglr_builder import publish, signing, verify
from pipglr_builder.standin import USERS, StandIn

from .conftest import BASE, cli, keygen, local_image_refs, need, runner_args, sh, stop_midway
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
    for ref in local_image_refs():
        if ref.startswith(name + ":"):
            sh("buildah", "manifest", "rm", ref, check=False)
            sh("podman", "rmi", "--force", ref, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The publisher's key pair (made by `pipglr-build keygen`, passphrase in a file) and a stranger's."""
    cli("bootstrap-base", "--platform", "linux/amd64")  # keygen runs skopeo on the Debian base (cached)
    return keygen(tmp_path_factory.mktemp("signing-keys"), "pipglr", "stranger")


def nightly(registry, image_name, report, keys, *extra):
    reg = registry.registry
    return cli("nightly", "--platform", "linux/amd64,linux/arm64", "--image-name", image_name,
               "--publish-repository", f"{registry.address}/pipglr", "--publish-cert-dir", reg.cert_dir,
               "--publish-authfile", reg.authfile, "--report", str(report), *runner_args(),
               "--publish-sign-key", str(keys / "pipglr.private"),
               "--publish-sign-passphrase-file", str(keys / "passphrase"), *extra, check=False)


def secrets_absent(keys: Path, *texts: str) -> None:
    """Neither the private key nor its passphrase in TEXTS."""
    private = (keys / "pipglr.private").read_text()
    body = "".join(private.splitlines()[1:-1])[:40]
    for text in texts:
        assert keys.joinpath("passphrase").read_text().strip() not in text
        assert body not in text.replace("\n", "")


def signature_tags(reg, repository: str) -> set[str]:
    out = sh("skopeo", "list-tags", *reg.flags(), f"docker://{reg.address}/{repository}").stdout
    return {t for t in json.loads(out)["Tags"] if t.endswith(".sig")}


def test_nightly_builds_verifies_and_pushes_both_platforms(registry, image_name, tmp_path_factory, fresh_storage,
                                                            keys):
    report_dir = tmp_path_factory.getbasetemp() / "nightly-report"
    proc = nightly(registry, image_name, report_dir, keys)
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

    # Signed: every tag; one signature for the list and one for each platform's image, in the registry.
    assert sorted(report["signed"]) == sorted(report["pushed"])
    assert (report_dir / "signing-key.pub").read_bytes() == (keys / "pipglr.pub").read_bytes()
    assert report["signing_key"] == signing.fingerprint(keys / "pipglr.pub") and report["signing_key"] in summary
    raw_list = json.loads(sh("skopeo", "inspect", "--raw", *registry.registry.flags(),
                             f"docker://{registry.registry.ref('pipglr', 'latest-gomodule')}").stdout)
    digests = {report["pushed"]["latest-gomodule"], *(m["digest"] for m in raw_list["manifests"])}
    assert signature_tags(registry.registry, "pipglr") == {signing.signature_tag(d) for d in digests}
    secrets_absent(keys, proc.stdout, proc.stderr, *(p.read_text() for p in report_dir.iterdir()))

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
    # Each platform's image says which checks it passed before the push (arm64: no nested job under qemu-user).
    for arch, profile in (("amd64", "full"), ("arm64", "emulated")):
        labels = json.loads(sh("skopeo", "inspect", "--override-arch", arch, *reg.flags(), f"docker://{ref}").stdout)
        assert labels["Labels"]["io.pipglr.verified"] == verify.PROFILE_CHECKS[profile], labels["Labels"]


def test_second_nightly_with_unchanged_inputs_pushes_nothing(registry, image_name, tmp_path_factory, keys):
    report_dir = tmp_path_factory.getbasetemp() / "nightly-report"
    before = json.loads((report_dir / "report.json").read_text())["pushed"]
    proc = nightly(registry, image_name, report_dir, keys)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["push"].startswith("skipped: nothing changed"), report["push"]
    assert not any(p["rebuilt"] for p in report["platforms"].values())
    assert report["pushed"] == before
    assert report["signed"] == [], "already signed: nothing signed again"
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
    for ref in local_image_refs():
        if ref.startswith(image_name + "-stopped:"):
            sh("podman", "rmi", "--force", ref, check=False)


def alice_pull(home: Path, store: Path, certs: Path, ref: str) -> tuple[int, str, str]:
    """`podman pull REF` as alice, rootless with the stand-in's podman 5.4 (in a container of the stand-in image,
    no boot needed to pull), her ~/.config from HOME and her storage in STORE; (exit code, output, image ID)."""
    script = (f"podman pull --quiet --cert-dir /certs --authfile ~/.config/containers/auth.json {ref}; rc=$?; "
              f"echo; echo ID=$(podman image inspect --format '{{{{.Id}}}}' {ref} 2>/dev/null); exit $rc")
    proc = sh("podman", "run", "--rm", "--privileged", "--network", "host", "--user", "alice",
              "--env", "PODMAN_IGNORE_CGROUPSV1_WARNING=1", "--volume", f"{home / '.config'}:/home/alice/.config",
              # Also where `trust` ran (HOME=home): policy.json names the key by that absolute path.
              "--volume", f"{home / '.config'}:{home / '.config'}:ro",
              "--volume", f"{store}:/home/alice/.local/share/containers", "--volume", f"{certs}:/certs:ro",
              "--entrypoint", "sh", StandIn(BASE).image, "-c", script, check=False)
    image_id = proc.stdout.rpartition("ID=")[2].strip()
    return proc.returncode, proc.stdout + proc.stderr, image_id


def test_only_signed_images_are_pulled(registry, tmp_path_factory, keys):
    """`pipglr-build trust` as alice: the nightly's signed image is pulled; an unsigned and then a stranger-signed
    image pushed under the same tag are refused, and alice keeps the image she has; other repositories as before."""
    reg = registry.registry
    report = json.loads((tmp_path_factory.getbasetemp() / "nightly-report" / "report.json").read_text())
    tag = "latest-gomodule"
    assert "signing_key" in report, "the nightly tests before this one pushed and signed"
    StandIn(BASE)._ensure_image()
    work = Path(tmp_path_factory.mktemp("alice"))
    home, store = work / "home", work / "store"
    home.mkdir()
    store.mkdir()
    trusted = cli("trust", f"{reg.address}/pipglr", "--key",
                  str(tmp_path_factory.getbasetemp() / "nightly-report" / "signing-key.pub"),
                  env=dict(os.environ, HOME=str(home)))
    assert "wrote" in trusted.stdout and "policy.json" in trusted.stdout
    shutil.copyfile(reg.authfile, home / ".config" / "containers" / "auth.json")  # her own login
    uid = USERS["alice"]
    for path in (home, store, *home.rglob("*")):
        os.chown(path, uid, uid)
    try:
        code, out, signed_id = alice_pull(home, store, Path(reg.cert_dir), reg.ref("pipglr", tag))
        assert code == 0 and signed_id, out

        # Unsigned, under the same tag.
        publish.push_image(BASE, reg, "pipglr", [tag])
        code, out, kept = alice_pull(home, store, Path(reg.cert_dir), reg.ref("pipglr", tag))
        assert code != 0 and "Source image rejected" in out and "signature" in out, out
        assert kept == signed_id, "alice keeps the image she had"

        # Signed by a stranger's key, under the same tag.
        digest = publish.remote_digest(reg, "pipglr", tag)
        signer = signing.ensure_signer(BASE)
        stranger = (keys / "passphrase").read_text().strip()
        signing.sign(signer, keys / "stranger.private", stranger, reg, "pipglr", tag, digest)
        assert signing.signature_tag(digest) in signature_tags(reg, "pipglr")
        code, out, kept = alice_pull(home, store, Path(reg.cert_dir), reg.ref("pipglr", tag))
        assert code != 0 and "Source image rejected" in out, out
        assert kept == signed_id

        # The rest of her policy is as it was: another repository's unsigned image is pulled.
        publish.push_image(BASE, reg, "other", ["latest"])
        code, out, other_id = alice_pull(home, store, Path(reg.cert_dir), reg.ref("other", "latest"))
        assert code == 0 and other_id, out
    finally:
        shutil.rmtree(work, ignore_errors=True)
