"""publish: argv builders and failure explanations as data; pushes against a real registry on 127.0.0.1."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from pipglr_builder import publish
from pipglr_builder.publish import PublishError, Registry

from .conftest import need, sh
from .registry import RunningRegistry, start_registry

ARCHES = ("amd64", "arm64")


# --- unit tests: no host programs ---------------------------------------------------------------------------------

def test_ref_is_address_name_tag():
    assert Registry("127.0.0.1:5000").ref("team/pipglr", "v1.2") == "127.0.0.1:5000/team/pipglr:v1.2"


@pytest.mark.parametrize("name", ["Team/pipglr", "pipglr/", "-x", "a//b", ""])
def test_bad_name_is_refused(name):
    with pytest.raises(PublishError, match="not a valid repository name"):
        Registry("r:5000").ref(name, "v1")


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a:b", "x" * 129])
def test_bad_tag_is_refused(tag):
    with pytest.raises(PublishError, match="tag .* is not valid"):
        Registry("r:5000").ref("pipglr", tag)


@pytest.mark.parametrize("address", ["https://r:5000", "r:5000/path", ""])
def test_address_with_scheme_or_path_is_refused(address):
    with pytest.raises(PublishError, match="not host\\[:port\\]"):
        Registry(address)


def test_manifest_push_argv():
    reg = Registry("r:5000", tls_verify=True, cert_dir="/certs", authfile="/a/auth.json")
    assert publish.manifest_push_argv("localhost/pipglr:latest", reg, "team/pipglr", "v1", "/tmp/d") == [
        "buildah", "manifest", "push", "--all", "--quiet", "--tls-verify=true", "--cert-dir", "/certs",
        "--authfile", "/a/auth.json", "--digestfile", "/tmp/d", "localhost/pipglr:latest",
        "docker://r:5000/team/pipglr:v1",
    ]


def test_image_push_argv_plain_http():
    reg = Registry("127.0.0.1:5000", tls_verify=False)
    assert publish.image_push_argv("localhost/pipglr:latest-amd64", reg, "pipglr", "v1", "/tmp/d") == [
        "buildah", "push", "--quiet", "--tls-verify=false", "--digestfile", "/tmp/d",
        "localhost/pipglr:latest-amd64", "docker://127.0.0.1:5000/pipglr:v1",
    ]


def test_login_argv_takes_password_on_stdin_only():
    reg = Registry("r:5000", cert_dir="/certs", authfile="/a/auth.json")
    argv = publish.login_argv(reg, "alice")
    assert argv == ["podman", "login", "--tls-verify=true", "--cert-dir", "/certs", "--authfile", "/a/auth.json",
                    "--username", "alice", "--password-stdin", "r:5000"]
    assert not any(a in ("-p", "--password") or a.startswith("--password=") for a in argv)


def test_inspect_raw_argv():
    reg = Registry("r:5000", tls_verify=False)
    assert publish.inspect_raw_argv(reg, "pipglr", "v1") == [
        "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://r:5000/pipglr:v1"]
    assert publish.inspect_raw_argv(reg, "pipglr", "v1", config=True)[:4] == ["skopeo", "inspect", "--raw", "--config"]


def test_platforms_of_list_skips_attestations_and_keeps_variants():
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:2", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:3", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "sha256:4", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}).encode()
    assert publish.platforms_of_list(raw) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    single = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
    assert publish.platforms_of_list(single) is None


def test_digest_is_sha256_of_exact_bytes():
    assert publish.digest_of(b"{}") == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert publish.digest_of(b"{}\n") != publish.digest_of(b"{}")


REG = Registry("127.0.0.1:5000", tls_verify=True)


@pytest.mark.parametrize(("output", "expected"), [
    ('dial tcp 127.0.0.1:5000: connect: connection refused', "cannot reach the registry at 127.0.0.1:5000"),
    ('Get "https://127.0.0.1:5000/v2/": http: server gave HTTP response to HTTPS client',
     r"speaks plain HTTP.*tls_verify=False"),
    ('Get "https://127.0.0.1:5000/v2/": x509: certificate signed by unknown authority',
     r"TLS verification .* failed: pass the directory .* cert_dir \(--cert-dir DIR with DIR/ca.crt\)"),
    ("remote error: tls: bad certificate", "TLS verification"),
    ('Error: logging into "127.0.0.1:5000": invalid username/password', "refused the user name or password"),
    ("reading manifest v1 in 127.0.0.1:5000/pipglr: unauthorized: authentication required", "publish.login"),
])
def test_explain_names_the_cause_and_the_fix(output, expected):
    assert re.search(expected, publish.explain(output, REG))


def test_explain_with_cert_dir_says_it_lacks_the_ca():
    reg = Registry("127.0.0.1:5000", cert_dir="/certs")
    assert "the cert dir /certs does not hold the CA" in publish.explain("x509: certificate signed by unknown "
                                                                         "authority", reg)


def test_explain_ignores_words_in_names():
    # Image names may contain "tls" or "unauthorized"; only the tools' error phrases count.
    assert publish.explain("reading manifest tls:v1 in r/unauthorized-certificate: oops", REG) is None
    assert publish.is_not_found("reading manifest nope in 127.0.0.1:5000/x: manifest unknown: manifest unknown")


def test_scrub_hides_secrets():
    assert publish.scrub("user bob password hunter2", "hunter2", None) == "user bob password ********"


# --- against a real registry ------------------------------------------------------------------------------------

def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def plain_registry(tmp_path):
    need("docker-registry", "skopeo", "buildah", "podman")
    running = start_registry(tmp_path / "plain-registry", tls=False, auth=False)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def secure_registry(tmp_path):
    need("docker-registry", "skopeo", "buildah", "podman", "openssl", "htpasswd")
    running = start_registry(tmp_path / "secure-registry", tls=True, auth=True)
    try:
        yield running
    finally:
        running.stop()


def buildah_ok(*argv: str) -> str:
    proc = sh("buildah", *argv, check=False)
    assert proc.returncode == 0, f"buildah {' '.join(argv)}: {proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture
def local_list(tmp_path):
    """A two-platform manifest list of tiny FROM-scratch images (one COPY'd file each; nothing runs)."""
    need("buildah")
    name = f"localhost/{unique('pipglr-publish-test')}"
    made_images: list[str] = []
    list_ref = f"{name}:list"
    list_made = False
    try:
        ids = {}
        for arch in ARCHES:
            context = tmp_path / f"context-{arch}"
            context.mkdir()
            (context / "hello").write_text(f"hello from {name} for {arch}\n")
            (context / "Containerfile").write_text("FROM scratch\nCOPY hello /hello\n")
            ref = f"{name}:{arch}"
            buildah_ok("bud", "--quiet", "--arch", arch, "--os", "linux", "--tag", ref, str(context))
            made_images.append(ref)
            ids[arch] = buildah_ok("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
        buildah_ok("manifest", "create", list_ref)
        list_made = True
        for arch in ARCHES:
            buildah_ok("manifest", "add", "--arch", arch, "--os", "linux", list_ref, f"containers-storage:{name}:{arch}")
        yield {"list": list_ref, "images": {arch: f"{name}:{arch}" for arch in ARCHES}, "ids": ids}
    finally:
        if list_made:
            sh("buildah", "manifest", "rm", list_ref, check=False)
        for ref in made_images:
            sh("buildah", "rmi", ref, check=False)


def pull_amd64(podman: list[str], running: RunningRegistry, ref: str) -> dict:
    reg = running.registry
    argv = [*podman, "pull", "--quiet", "--arch", "amd64", *reg.flags(), f"docker://{ref}"]
    proc = sh(*argv, check=False)
    assert proc.returncode == 0, proc.stderr
    inspected = sh(*podman, "image", "inspect", ref).stdout
    (image,) = json.loads(inspected)
    return image


def remote_list_entries(running: RunningRegistry, name: str, tag: str) -> dict[str, str]:
    """{arch: digest} of the manifest list as skopeo reads it."""
    raw = sh("skopeo", "inspect", "--raw", *running.registry.flags(), f"docker://{running.registry.ref(name, tag)}")
    return {m["platform"]["architecture"]: m["digest"] for m in json.loads(raw.stdout)["manifests"]}


def check_published_list(running: RunningRegistry, local: dict, name: str, podman: list[str]) -> None:
    reg = running.registry
    digests = publish.push_manifest(local["list"], reg, name, ["v1", "latest"])
    assert set(digests) == {"v1", "latest"}
    assert digests["v1"] == digests["latest"]
    assert digests["v1"].startswith("sha256:") and len(digests["v1"]) == 71
    for tag in ("v1", "latest"):
        assert publish.remote_digest(reg, name, tag) == digests[tag]
        assert publish.remote_platforms(reg, name, tag) == ["linux/amd64", "linux/arm64"]
    assert publish.remote_digest(reg, name, "no-such-tag") is None
    assert publish.remote_digest(reg, unique("never/pushed"), "v1") is None

    entries = remote_list_entries(running, name, "v1")
    assert sorted(entries) == ["amd64", "arm64"]
    image = pull_amd64(podman, running, reg.ref(name, "v1"))
    assert image["Architecture"] == "amd64"
    assert image["Id"] == local["ids"]["amd64"]  # same config, so the same image ID as the local one
    assert f"{reg.address}/{name}@{entries['amd64']}" in image["RepoDigests"]


@pytest.mark.slow
def test_push_manifest_plain_http(plain_registry, local_list, fresh_storage):
    check_published_list(plain_registry, local_list, unique("pipglr/publish"), fresh_storage)


@pytest.mark.slow
def test_push_image_single_platform(plain_registry, local_list):
    reg, name = plain_registry.registry, unique("pipglr/single")
    digests = publish.push_image(local_list["images"]["arm64"], reg, name, ["arm64"])
    assert publish.remote_digest(reg, name, "arm64") == digests["arm64"]
    assert publish.remote_platforms(reg, name, "arm64") == ["linux/arm64"]


@pytest.mark.slow
def test_push_image_refuses_a_list_and_a_missing_image(plain_registry, local_list):
    reg = plain_registry.registry
    with pytest.raises(PublishError, match="no local image or manifest list named"):
        publish.push_manifest(f"{local_list['list']}-missing", reg, "pipglr/x", ["v1"])
    with pytest.raises(PublishError, match="is a single image, not a manifest list: push it with push_image"):
        publish.push_manifest(local_list["images"]["amd64"], reg, "pipglr/x", ["v1"])


@pytest.mark.slow
def test_plain_http_registry_with_tls_verify_says_so(plain_registry):
    reg = Registry(plain_registry.address, tls_verify=True)
    with pytest.raises(PublishError, match=r"speaks plain HTTP, but TLS verification is on.*tls_verify=False"):
        publish.remote_digest(reg, "pipglr/x", "v1")


@pytest.mark.slow
def test_missing_platforms_tag_says_so(plain_registry):
    with pytest.raises(PublishError, match="does not exist in the registry"):
        publish.remote_platforms(plain_registry.registry, "pipglr/x", "v1")


@pytest.mark.tools
def test_connection_refused_says_so():
    need("skopeo")
    # Port 9 on loopback (discard) is closed here: connection refused at once.
    with pytest.raises(PublishError, match=r"cannot reach the registry at 127.0.0.1:9.*is running"):
        publish.remote_digest(Registry("127.0.0.1:9", tls_verify=False), "pipglr/x", "v1")


@pytest.mark.slow
def test_tls_and_auth(secure_registry, local_list, fresh_storage):
    running = secure_registry
    reg = running.registry
    name = unique("pipglr/secure")

    # Not logged in yet: the registry asks for credentials.
    Path(reg.authfile).write_text('{"auths": {}}')
    with pytest.raises(PublishError, match="wants credentials it did not get.*publish.login"):
        publish.remote_digest(reg, name, "v1")

    wrong = "not-" + running.password
    with pytest.raises(PublishError, match="refused the user name or password: check both") as failed:
        publish.login(reg, running.username, wrong)
    assert wrong not in str(failed.value) and running.password not in str(failed.value)

    publish.login(reg, running.username, running.password)
    check_published_list(running, local_list, name, fresh_storage)


@pytest.mark.slow
def test_tls_without_cert_dir_says_so(secure_registry, local_list):
    running = secure_registry
    publish.login(running.registry, running.username, running.password)
    reg = Registry(running.address, tls_verify=True, cert_dir=None, authfile=running.registry.authfile)
    with pytest.raises(PublishError, match=r"TLS verification .* failed: pass the directory .*cert_dir"):
        publish.remote_digest(reg, "pipglr/x", "v1")
    # buildah 1.28 `manifest push --digestfile` exits 0 on this failure: push_manifest must still fail clearly.
    with pytest.raises(PublishError, match=r"pushing .* failed \(buildah exited 0 but wrote no digest\): "
                                           r"TLS verification .* failed"):
        publish.push_manifest(local_list["list"], reg, unique("pipglr/secure"), ["v1"])
    with pytest.raises(PublishError, match=r"TLS verification .* failed"):
        publish.push_image(local_list["images"]["amd64"], reg, unique("pipglr/secure"), ["v1"])
