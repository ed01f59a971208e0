"""The helper image as data: the names gitlab-runner looks for, and the buildah command."""

from pathlib import Path

from pipglr_builder import config, helper_image


def test_names_are_the_runners_own_default_per_arch():
    cfg = config.load(None)
    assert helper_image.names(cfg, "amd64") == [
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.0"]
    assert helper_image.names(cfg, "arm64") == [
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:arm64-v19.4.0"]


def test_a_pinned_helper_elsewhere_gets_both_names():
    cfg = config.load(None, {"helper_image": "registry.example.com/ci/helper:{arch}-v{version}"})
    assert helper_image.names(cfg, "amd64") == [
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.0",
        "registry.example.com/ci/helper:x86_64-v19.4.0"]


def test_bud_argv_builds_from_the_debian_base_for_the_arch():
    argv = helper_image.bud_argv(config.load(None), "arm64", Path("/ctx"), "localhost/h:t", "key",
                                 ["--build-arg", "RUNNER_STANDINS=gitlab.com/gitlab-org/moa"],
                                 {"BASE_KEY": "cef3e8bd", "BASE_ARCHIVE": "trixie 2026-11-21T09:15:44Z"})
    assert ["--arch", "arm64"] == argv[argv.index("--arch"):argv.index("--arch") + 2]
    assert "BASE_IMAGE=localhost/pipglr-base:trixie-arm64" in argv
    assert "RUNNER_STANDINS=gitlab.com/gitlab-org/moa" in argv
    # FROM scratch inherits no label: the base's are passed on (the base's package check finds the helper by them).
    assert "BASE_KEY=cef3e8bd" in argv and "BASE_ARCHIVE=trixie 2026-11-21T09:15:44Z" in argv
    assert argv[-1] == "/ctx"


def test_recipe_follows_upstream():
    text = (helper_image.CONTEXT / "Containerfile").read_text()
    for part in ("dumb-init", "git-lfs", "git lfs install --skip-repo", "/usr/bin/",
                 'ENTRYPOINT ["/usr/bin/dumb-init", "/entrypoint"]', 'CMD ["sh"]'):
        assert part in text
    assert "umask 0000" in (helper_image.CONTEXT / "gitlab-runner-build").read_text()


def test_recipe_is_one_layer_of_what_the_helper_runs():
    """The last stage starts FROM scratch with the trimmed tree (the base's layer would stay under any
    deletion), carries the base's labels, and the trim step fails the build if a library still linked went."""
    text = (helper_image.CONTEXT / "Containerfile").read_text()
    assert "FROM ${BASE_IMAGE} AS build" in text
    assert text.count("\nFROM scratch\n") == 1 and "COPY --from=build / /" in text
    last = text.split("\nFROM scratch\n", 1)[1]
    assert not [line for line in last.splitlines() if line.startswith("RUN ")]
    for label in ('io.pipglr.base-key="${BASE_KEY}"', 'io.pipglr.base-archive="${BASE_ARCHIVE}"'):
        assert label in last
    assert "dpkg --purge" in text and "| grep 'not found'" in text
    for kept in ("git ", "git-lfs", "bash", "ca-certificates", "dumb-init"):
        assert kept in text.split("dpkg --purge")[0]
