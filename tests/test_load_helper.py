"""The helper the image carries: what the build puts in the context (helper_image.carry) and what
files/load-helper (pipglr-helper.service) decides at boot, run here with a fake podman on PATH that
keeps its images as a list of names. The real load at boot is tested in tests/test_image.py
(fresh storage: loaded) and tests/test_e2e.py (an upgrade whose storage lacks the helper: loaded, and
the next job runs with no registry reachable; an existing helper: nothing loaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipglr_builder import buildah, config, helper_image, processes, render

PINNED = {"helper_image": "registry.example.com/ci/helper:{arch}-v{version}"}
# Images: one name (or ID) a line in $FAKE/images; `load` adds the archive's ID (its content: saved by ID, no
# name), `tag ID NAME...` adds the names of an ID it has.
FAKE_PODMAN = """#!/bin/sh
echo "$*" >> "$FAKE/calls"
case "$1 $2" in
  "image exists") grep -qxF "$3" "$FAKE/images" ;;
  "load --quiet") [ -s "$4" ] || { echo "Error: no archive" >&2; exit 125; }; cat "$4" >> "$FAKE/images"
                  echo "Loaded image: $(cat "$4")" ;;
  "tag "*) grep -qxF "$2" "$FAKE/images" || { echo "Error: $2: image not known" >&2; exit 125; }
           shift 2; for n in "$@"; do echo "$n" >> "$FAKE/images"; done ;;
esac
"""
ID = "sha256:0123456789abcdef"


class Box:
    def __init__(self, tmp: Path, cfg: config.Config):
        self.tmp, self.fake, self.bin = tmp, tmp / "fake", tmp / "bin"
        self.fake.mkdir()
        self.bin.mkdir()
        (self.fake / "images").write_text("")
        (self.bin / "podman").write_text(FAKE_PODMAN)
        (self.bin / "podman").chmod(0o755)
        self.dir = helper_image.carry(tmp, cfg, "amd64", ID)
        self.archive = self.dir / helper_image.ARCHIVE
        self.archive.write_text(ID + "\n")  # the fake's archive: the image ID it holds
        values = render.template_values(cfg)
        values.update(helper_dir=str(self.dir), helper_archive=str(self.archive))
        self.script = tmp / "load-helper"
        self.script.write_text(render._environment().get_template("files/load-helper").render(values))

    def has(self, *names: str) -> None:
        (self.fake / "images").write_text("".join(f"{n}\n" for n in names))

    def run(self) -> processes.subprocess.CompletedProcess:
        return processes.call(["sh", str(self.script)], env={"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE": str(self.fake)},
                              timeout=60)

    def images(self) -> list[str]:
        return (self.fake / "images").read_text().split()

    def calls(self) -> list[str]:
        path = self.fake / "calls"
        return path.read_text().splitlines() if path.exists() else []


def test_carry_writes_the_names_and_the_id_and_nothing_of_another_platform(tmp_path):
    cfg = config.load(None, PINNED)
    folder = helper_image.carry(tmp_path, cfg, "arm64", "sha256:one")
    (folder / helper_image.ARCHIVE).write_bytes(b"arm64 archive")
    folder = helper_image.carry(tmp_path, cfg, "amd64")  # no helper for this one
    assert sorted(p.name for p in folder.iterdir()) == ["names"]
    folder = helper_image.carry(tmp_path, cfg, "amd64", "sha256:two")
    assert sorted(p.name for p in folder.iterdir()) == ["format", "image-id", "names"]
    assert (folder / "names").read_text().split() == helper_image.names(cfg, "amd64")


def test_the_inputs_key_follows_the_carried_helper(tmp_path):
    cfg = config.load(None)
    context = render.render(cfg, tmp_path / "ctx")
    assert (context / helper_image.CARRIED).is_dir()  # COPY helper/ needs it, empty or not
    keys = []
    for image_id in ("", "sha256:one", "sha256:two"):
        helper_image.carry(context, cfg, "amd64", image_id)
        keys.append(buildah.inputs_key(context, "sha256:base", "amd64"))
    assert len(set(keys)) == 3


def test_the_image_copies_it_and_the_unit_runs_as_podman_before_the_runner():
    cfg = config.load(None)
    containerfile = render.render_file(cfg, "Containerfile.j2")
    assert f"COPY {helper_image.CARRIED}/ {render.HELPER_DIR}/" in containerfile
    assert "systemctl enable pipglr-env.service pipglr-helper.service" in containerfile
    unit = render.render_file(cfg, "systemd/pipglr-helper.service")
    assert f"ConditionPathExists={render.HELPER_ARCHIVE}\n" in unit  # no helper built: nothing to do
    assert "User=podman\n" in unit and "Before=runner.service\n" in unit
    assert not [line for line in unit.splitlines() if line.startswith(("Requires=", "BindsTo="))]  # never holds the runner


@pytest.mark.tools  # runs sh
def test_a_storage_without_the_helper_gets_it_under_every_name(tmp_path):
    cfg = config.load(None, PINNED)
    box = Box(tmp_path, cfg)
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert sorted(box.images()) == sorted([ID, *helper_image.names(cfg, "amd64")])
    assert "lacks registry.gitlab.com" in done.stdout and "loaded sha256:01234 as" in done.stdout


@pytest.mark.tools  # runs sh
def test_a_storage_with_every_name_is_left_alone(tmp_path):
    cfg = config.load(None, PINNED)
    box = Box(tmp_path, cfg)
    box.has(*helper_image.names(cfg, "amd64"))
    done = box.run()
    assert done.returncode == 0 and "nothing loaded" in done.stdout, done
    assert not [c for c in box.calls() if not c.startswith("image exists")]


@pytest.mark.tools  # runs sh
def test_one_missing_name_loads_it_again(tmp_path):
    cfg = config.load(None, PINNED)
    box = Box(tmp_path, cfg)
    box.has(helper_image.names(cfg, "amd64")[0])  # an upgrade that pins a name the old storage lacks
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert set(box.images()) == {ID, *helper_image.names(cfg, "amd64")}


@pytest.mark.tools  # runs sh
def test_a_failed_load_fails_the_unit_and_says_so(tmp_path):
    box = Box(tmp_path, config.load(None))
    box.archive.write_text("")
    done = box.run()
    assert done.returncode != 0
    assert "FAILED" in done.stderr and not box.images()


@pytest.mark.tools  # runs sh
def test_an_archive_without_that_image_fails_the_unit(tmp_path):
    box = Box(tmp_path, config.load(None))
    box.archive.write_text("sha256:another\n")
    done = box.run()
    assert done.returncode != 0 and "FAILED" in done.stderr


def test_the_archive_is_made_once_per_helper_and_old_ones_are_forgotten(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPGLR_CACHE", str(tmp_path / "cache"))
    made = []

    def run(argv, **_):  # podman save writes the tar, zstd the archive
        made.append(argv[0])
        out = Path(argv[argv.index("--output" if argv[0] == "podman" else "-o") + 1])
        out.write_text(f"{argv[0]} of {argv[-1]}")
        return ""
    monkeypatch.setattr(helper_image.processes, "run", run)
    old = helper_image.cache_dir() / f"old.{helper_image.ARCHIVE}"
    old.parent.mkdir(parents=True)
    old.write_text("a helper no build used for weeks")
    os.utime(old, (0, 0))
    context = render.render(config.load(None), tmp_path / "ctx")
    for _ in range(2):
        helper_image.carry(context, config.load(None), "amd64", "abc123")
        archive = helper_image.save_archive(context, "abc123")
    assert made == ["podman", "zstd"]  # the second build copied the cached archive
    assert archive.read_text() == (helper_image.cache_dir() / f"abc123-19.{helper_image.ARCHIVE}").read_text()
    assert not old.exists()
