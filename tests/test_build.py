"""The build stage as data: buildah argv and the inputs key that lets an unchanged build be skipped."""

from pipglr_builder import build, buildah, config, render


def test_bud_argv_builds_one_platform_with_its_base():
    cfg = config.load(None, {"platforms": "linux/amd64,linux/arm64"})
    argv = build.bud_argv(cfg, "arm64", render.TEMPLATES, "localhost/pipglr:tmp", "2026-01-01T00:00:00Z", "k")
    assert argv[:6] == ["buildah", "bud", "--layers", "--force-rm", "--isolation", "chroot"]
    assert ["--arch", "arm64"] == argv[argv.index("--arch"):argv.index("--arch") + 2]
    assert "BASE_IMAGE=localhost/pipglr-base:trixie-arm64" in argv
    assert "TARGETARCH=arm64" in argv and "CREATED=2026-01-01T00:00:00Z" in argv
    assert f"{buildah.INPUTS_LABEL}=k" in argv
    argv = build.bud_argv(cfg, "arm64", render.TEMPLATES, "t", "c", "k", runner_sha256="ab" * 32)
    assert f"RUNNER_SHA256={'ab' * 32}" in argv  # part of the install step's cache key
    argv = build.bud_argv(cfg, "arm64", render.TEMPLATES, "t", "c", "k", base={"BASE_KEY": "b1", "BASE_ARCHIVE": "a"})
    assert "BASE_KEY=b1" in argv and "BASE_ARCHIVE=a" in argv  # the image is FROM scratch: the base's labels
    assert not any(a.startswith("VERIFIED=") for a in argv)  # a plain build keeps the Containerfile's default
    argv = build.bud_argv(cfg, "arm64", render.TEMPLATES, "t", "c", "k", verified="emulated profile: ...")
    assert "VERIFIED=emulated profile: ..." in argv


def test_inputs_key_is_stable_and_sees_every_input(tmp_path):
    cfg = config.load(None)
    a = render.render(cfg, tmp_path / "a")
    b = render.render(cfg, tmp_path / "b")
    key = buildah.inputs_key(a, "sha256:base", "amd64")
    assert key == buildah.inputs_key(b, "sha256:base", "amd64")
    assert key != buildah.inputs_key(a, "sha256:other-base", "amd64")
    assert key != buildah.inputs_key(a, "sha256:base", "arm64")
    assert key != buildah.inputs_key(a, "sha256:base", "amd64", extra="the checks a nightly runs")  # its label
    (b / "runner" / "gitlab-runner-amd64").write_bytes(b"new runner")
    assert key != buildah.inputs_key(b, "sha256:base", "amd64")
    c = render.render(config.load(None, {"prune_interval": "weekly"}), tmp_path / "c")
    assert key != buildah.inputs_key(c, "sha256:base", "amd64")


def test_platform_refs():
    one = config.load(None)
    two = config.load(None, {"platforms": "linux/amd64,linux/arm64", "tags": "nightly,19.4.0"})
    assert build.platform_ref(one, "amd64") == "localhost/pipglr:latest"
    assert build.platform_ref(two, "arm64") == "localhost/pipglr:nightly-arm64"
    assert build.final_refs(two) == ["localhost/pipglr:nightly", "localhost/pipglr:19.4.0"]
