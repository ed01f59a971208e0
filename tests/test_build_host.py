"""The build host check: a foreign platform without qemu, binfmt or arch-test stops at once, naming the package."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from pipglr_builder import base_image
from pipglr_builder.cli import main
from pipglr_builder.errors import ToolMissing


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A build host made of an empty PATH and an empty binfmt_misc; tests add what it has."""
    bin_dir, binfmt = tmp_path / "bin", tmp_path / "binfmt_misc"
    bin_dir.mkdir()
    binfmt.mkdir()
    (bin_dir / "systemd-analyze").symlink_to(shutil.which("systemd-analyze"))  # settings validation uses it
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(base_image, "BINFMT_DIR", binfmt)
    monkeypatch.setattr(base_image, "native_arch", lambda: "amd64")

    def add(*programs: str, handler: str | None = None):
        for p in programs:
            (bin_dir / p).write_text("#!/bin/sh\n")
            (bin_dir / p).chmod(0o755)
        if handler:
            (binfmt / "qemu-aarch64").write_text(f"{handler}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    return add


def test_native_platform_needs_nothing(host):
    assert base_image.foreign_arch_problems("amd64") == []


def test_bare_host_is_told_every_package(host):
    problems = base_image.foreign_arch_problems("arm64")
    assert len(problems) == 3
    assert "apt-get install qemu-user-static" in problems[0]
    assert "apt-get install arch-test" in problems[1]
    assert "update-binfmts --enable qemu-aarch64" in problems[2]
    with pytest.raises(ToolMissing, match="linux/arm64: arch-test is missing"):
        base_image.require_foreign_arches(["amd64", "arm64"])


def test_only_arch_test_missing(host):
    """The fresh-machine failure of mmdebstrap (`E: install arch-test ...`), caught before any work."""
    host("qemu-aarch64-static", handler="enabled")
    assert base_image.foreign_arch_problems("arm64") == [
        "arch-test is missing (mmdebstrap needs it for a foreign architecture): apt-get install arch-test"]
    assert base_image.foreign_arch_problems("arm64", bootstrapping=False) == []  # a given base_image needs no bootstrap


def test_disabled_handler(host):
    host("qemu-aarch64-static", "arch-test", handler="disabled")
    assert ["binfmt_misc" in p for p in base_image.foreign_arch_problems("arm64")] == [True]


def test_build_stops_before_any_work(host):
    host("buildah", "podman", "mmdebstrap")  # never run: the check comes first
    result = CliRunner().invoke(main, ["build", "--platform", "linux/amd64,linux/arm64"])
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert "apt-get install" in result.output and "Traceback" not in result.output


def test_doctor_reports_the_build_side(host, tmp_path):
    host("qemu-aarch64-static", "sh", handler="enabled")
    (tmp_path / "bin" / "sh").write_text("#!/bin/bash\nexit 0\n")  # the runtime part is another test's
    result = CliRunner().invoke(main, ["doctor", "--platform", "linux/amd64,linux/arm64"])
    assert "ok   build linux/amd64: this host can build it natively" in result.output
    assert "FAIL build linux/arm64: arch-test is missing" in result.output
    assert result.exit_code == 1
