"""The buildah room as data: every argv it builds, the steps it shows, and removal that tolerates what is gone."""

from pathlib import Path

import pytest

from pipglr_builder import buildah, processes
from pipglr_builder.errors import CommandFailed


def test_bud_argv_takes_only_what_it_is_given():
    assert buildah.bud_argv(Path("/ctx"), "localhost/x:t") == [
        "buildah", "bud", "--layers", "--force-rm", "--isolation", "chroot", "--tag", "localhost/x:t", "/ctx"]
    argv = buildah.bud_argv(Path("/ctx"), "t", args=buildah.build_args({"A": "1", "B": "x=y"}), arch="arm64",
                            inputs="k", containerfile=Path("/ctx/Containerfile"), no_cache=True)
    assert argv == ["buildah", "bud", "--layers", "--no-cache", "--force-rm", "--isolation", "chroot",
                    "--arch", "arm64", "--os", "linux", "--label", "io.pipglr.inputs=k",
                    "--build-arg", "A=1", "--build-arg", "B=x=y",
                    "--file", "/ctx/Containerfile", "--tag", "t", "/ctx"]


def test_tag_manifest_and_push_argv():
    assert buildah.tag_argv("img", "a:1", "a:2") == ["buildah", "tag", "img", "a:1", "a:2"]
    assert buildah.manifest_create_argv("l:1") == ["buildah", "manifest", "create", "l:1"]
    assert buildah.manifest_add_argv("l:1", "arm64", "l:1-arm64") == [
        "buildah", "manifest", "add", "--arch", "arm64", "--os", "linux", "l:1", "containers-storage:l:1-arm64"]
    assert buildah.manifest_push_argv("l:1", "docker://r/n:t", ["--tls-verify=false"], "/d") == [
        "buildah", "manifest", "push", "--all", "--quiet", "--tls-verify=false", "--digestfile", "/d",
        "l:1", "docker://r/n:t"]
    assert buildah.push_argv("i:1", "docker://r/n:t", [], "/d") == [
        "buildah", "push", "--quiet", "--digestfile", "/d", "i:1", "docker://r/n:t"]


@pytest.mark.parametrize("present", ["manifest", "image", "nothing"])
def test_remove_quietly_tries_a_list_then_an_image_and_minds_neither_missing(monkeypatch, present):
    ran = []

    def run(argv, **kwargs):
        ran.append(argv)
        if (argv[1] == "manifest") != (present == "manifest") or present == "nothing":
            raise CommandFailed(f"{argv} failed")
        return ""

    monkeypatch.setattr(processes, "run", run)
    buildah.remove_quietly("a:1", "b:1")
    tried = {"manifest": 1, "image": 2, "nothing": 2}[present]
    assert ran == [*buildah.remove_argvs("a:1")[:tried], *buildah.remove_argvs("b:1")[:tried]]


def test_step_progress_says_one_line_per_step(monkeypatch):
    said = []
    monkeypatch.setattr(processes, "say", said.append)
    progress = buildah.StepProgress("arm64", verbose=False)
    for line in ("STEP 1/3: FROM base", "Getting image source signatures", "STEP 2/3: RUN apt-get install -y podman",
                 "Setting up podman ...", "Error: something broke"):
        progress(line)
    assert len(said) == 3
    assert said[0].startswith("[arm64 ") and said[0].endswith("step 1/3: FROM base")
    assert said[1].endswith("step 2/3: RUN apt-get install -y podman")
    assert said[2] == "    Error: something broke"  # errors always show
    said.clear()
    for line in ("[1/2] STEP 2/3: COPY dpkg-excludes /etc/dpkg/dpkg.cfg.d/x", "[2/2] STEP 1/40: FROM scratch"):
        progress(line)  # a multi-stage build's steps, with their stage
    assert said[0].endswith("] stage 1/2 step 2/3: COPY dpkg-excludes /etc/dpkg/dpkg.cfg.d/x")
    assert said[1].endswith("] stage 2/2 step 1/40: FROM scratch")


@pytest.mark.tools
def test_a_broken_layer_cache_says_how_to_get_out():
    """Measured 2026-12-04: an image whose layers went failed every build at its first cached COPY."""
    broken = ["sh", "-c", ("echo 'Error: checking if cached image exists from a previous build: "
                           "getting top layer info: layer not known' >&2; exit 125")]
    with pytest.raises(CommandFailed) as failed:
        buildah.bud(broken, "amd64")
    said = str(failed.value)
    assert "layer not known" in said and "`podman image prune`" in said and "--no-cache" in said
    with pytest.raises(CommandFailed) as other:
        buildah.bud(["sh", "-c", "echo 'Error: no space left on device' >&2; exit 1"], "amd64")
    assert "--no-cache" not in str(other.value)
