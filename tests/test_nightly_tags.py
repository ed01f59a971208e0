"""What a nightly publishes says where its gitlab-runner came from (fast: no build, a release server on loopback)."""

import datetime
import json

import pytest

from pipglr_builder import build, config, nightly
from pipglr_builder.errors import PipglrError

from .conftest import file_server

DAY = datetime.date(2026, 12, 4)


@pytest.mark.parametrize("source, tags", [
    ("auto", ["latest", "19.4.0", "20261204"]),
    ("release", ["latest", "19.4.0", "20261204"]),
    ("file", ["latest", "19.4.0", "20261204"]),
    ("gomodule", ["latest-gomodule", "19.4.0-gomodule", "20261204-gomodule"]),
])
def test_tags_say_gomodule_when_chosen(source, tags):
    settings = {"runner_source": source}
    if source == "file":
        settings.update(runner_file="/x", runner_sha256="a" * 64)
    assert nightly.nightly_tags(config.load(None, settings), DAY) == tags


def test_nightly_with_auto_refuses_the_gomodule_fallback(tmp_path, cache, monkeypatch):
    """The release server answers 404 for a moment: the nightly fails, names the fix, builds and pushes nothing."""
    built_from_go = []
    monkeypatch.setattr(build.processes, "require", lambda *programs: None)  # no buildah needed: it stops before
    monkeypatch.setitem(build.runner.SOURCES, "gomodule", lambda cfg, arch: built_from_go.append(arch))
    with file_server(lambda path: None) as (url, asked):
        cfg = config.load(None, {"runner_release_url": url, "base_image": "localhost/any-base",
                                 "publish_repository": "127.0.0.1:9/pipglr"})
        assert nightly.run(cfg, tmp_path / "report", DAY) == 1
    assert asked and built_from_go == []
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["result"] == "failed" and report["pushed"] == {} and report["tags"] == ["latest", "19.4.0", "20261204"]
    assert "pass --runner-source gomodule on purpose" in report["error"]
    assert "--runner-source gomodule" in (tmp_path / "report" / "summary.txt").read_text()


def test_nightly_labels_each_platform_with_the_checks_it_must_pass(tmp_path, monkeypatch):
    """An arm64 host of the fleet can read in its image that its platform was proven without nested jobs."""
    from pipglr_builder import verify
    asked = {}

    def build_stops_here(cfg, **kwargs):
        asked.update(kwargs)
        raise PipglrError("stopped by the test")
    monkeypatch.setattr(build, "build", build_stops_here)
    monkeypatch.setattr(verify, "native_arch", lambda: "amd64")
    cfg = config.load(None, {"platforms": "linux/amd64,linux/arm64", "base_image": "localhost/any-base",
                             "runner_source": "gomodule"})
    assert nightly.run(cfg, tmp_path / "report", DAY) == 1
    assert asked["verified"] == {"amd64": verify.PROFILE_CHECKS["full"], "arm64": verify.PROFILE_CHECKS["emulated"]}
    assert "no nested job" in asked["verified"]["arm64"] and "nested jobs" in asked["verified"]["amd64"]
