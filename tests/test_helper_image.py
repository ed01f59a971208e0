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
                                 ["--build-arg", "RUNNER_STANDINS=gitlab.com/gitlab-org/moa"])
    assert ["--arch", "arm64"] == argv[argv.index("--arch"):argv.index("--arch") + 2]
    assert "BASE_IMAGE=localhost/pipglr-base:trixie-arm64" in argv
    assert "RUNNER_STANDINS=gitlab.com/gitlab-org/moa" in argv
    assert argv[-1] == "/ctx"


def test_recipe_follows_upstream():
    text = (helper_image.CONTEXT / "Containerfile").read_text()
    for part in ("dumb-init", "git-lfs", "git lfs install --skip-repo", "/usr/bin/",
                 'ENTRYPOINT ["/usr/bin/dumb-init", "/entrypoint"]', 'CMD ["sh"]'):
        assert part in text
    assert "umask 0000" in (helper_image.CONTEXT / "gitlab-runner-build").read_text()
