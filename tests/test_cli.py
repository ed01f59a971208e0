"""The command line: clear one-paragraph errors, non-zero exit, never a traceback."""

import types

import pytest
from click.testing import CliRunner

from pipglr_builder.cli import main


def invoke(*args, config_text=None, tmp_path=None):
    runner = CliRunner()
    if config_text is not None:
        path = tmp_path / "pipglr.toml"
        path.write_text(config_text)
        args = ("--config", str(path), *args)
    return runner.invoke(main, list(args))


@pytest.mark.parametrize("args, config_text, message", [
    (["render", "-o", "OUT", "--platform", "linux/ppc64le"], None, "unknown platform 'linux/ppc64le'"),
    (["render", "-o", "OUT", "--prune-interval", "sometimes"], None, "not a systemd OnCalendar value"),
    (["render", "-o", "OUT"], "image_name = [", "is not valid TOML"),
    (["render", "-o", "OUT"], "colour = 'blue'", "unknown key 'colour'"),
    (["build", "--runner-source", "file"], None, "needs both runner_file"),
    (["runner", "--runner-signing-keyring", "OUT"], None, "runner_signing_keyring"),
    (["bench", "--bump-runner-version", "19.4.1"], None, "go together"),
    (["bench", "--bump-runner-file", "OUT", "--bump-runner-version", "v19"], None, "like 17.5.0"),
    (["bench", "--bump-runner-file", "OUT", "--bump-runner-version", "19.4.1"], None, "no such file"),
    (["bench", "--bump-runner-file", "OUT", "--bump-runner-version", "19.4.0"], None, "needs another version"),
])
def test_bad_input_exits_1_with_message(tmp_path, args, config_text, message):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = invoke(*args, config_text=config_text, tmp_path=tmp_path)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ")
    assert not (tmp_path / "out").exists(), "nothing is written when the input is bad"


def test_missing_tool_names_the_package(monkeypatch, tmp_path):
    import shutil
    (tmp_path / "systemd-analyze").symlink_to(shutil.which("systemd-analyze"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no buildah, podman or mmdebstrap here
    result = invoke("build")
    assert result.exit_code == 1
    assert "buildah, podman not found" in result.output
    assert "apt-get install buildah podman" in result.output


def test_help_lists_commands_and_flags():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("render", "bootstrap-base", "build"):
        assert command in result.output
    result = invoke("build", "--help")
    for flag in ("--platform", "--prune-interval", "--nested-privileged", "--runner-source", "--extra-packages",
                 "--no-cache"):
        assert flag in result.output


def test_build_no_cache_reaches_the_build(monkeypatch):
    from pipglr_builder import build
    asked = {}

    def fake_build(config, verbose=False, no_cache=False):
        asked.update(verbose=verbose, no_cache=no_cache)
        return types.SimpleNamespace(refs=["localhost/pipglr:latest"])
    monkeypatch.setattr(build, "build", fake_build)
    result = invoke("build", "--no-cache")
    assert result.exit_code == 0 and result.output == "localhost/pipglr:latest\n", result.output
    assert asked == {"verbose": False, "no_cache": True}


def test_render_writes_context(tmp_path):
    result = invoke("render", "--output", str(tmp_path / "ctx"), "--platform", "linux/arm64")
    assert result.exit_code == 0, result.output
    assert "localhost/pipglr-base:trixie-arm64" in (tmp_path / "ctx" / "Containerfile").read_text()


def test_render_refuses_a_work_tree(tmp_path, monkeypatch):
    """`render --output .` in someone's project: refused, nothing deleted."""
    (tmp_path / "main.c").write_text("int main;")
    monkeypatch.chdir(tmp_path)
    result = invoke("render", "--output", ".")
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert "nothing was changed" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main.c"]


@pytest.mark.parametrize("url, clean", [
    ("https://gitlab-ci-token:glcbt-64_secret@gitlab.example.com/group/pipglr-builder.git",
     "https://gitlab.example.com/group/pipglr-builder.git"),
    ("https://oauth2:glpat-secret@gitlab.example.com:8443/g/p.git", "https://gitlab.example.com:8443/g/p.git"),
    ("https://gitlab.example.com/g/p.git", "https://gitlab.example.com/g/p.git"),
    ("git@gitlab.example.com:g/p.git", "git@gitlab.example.com:g/p.git"),  # scp form: a user name, no secret
    ("unknown", "unknown"),
])
def test_source_label_never_carries_credentials(url, clean):
    from pipglr_builder import render
    assert render.without_credentials(url) == clean


@pytest.mark.tools
def test_unreachable_mirror_stops_bootstrap_with_the_reason():
    # No base image of this suite exists, so there is none to fall back on; port 9 on loopback refuses at once.
    result = invoke("bootstrap-base", "--base-suite", "nosuchsuite", "--base-mirror", "http://127.0.0.1:9/debian")
    assert result.exit_code == 1, result.output
    assert "cannot read http://127.0.0.1:9/debian/dists/nosuchsuite/InRelease" in result.output
    assert "Traceback" not in result.output
