"""convert-pipglr-config, fast: a config.toml written by pipglr (gitlab.com/qontainers/pipglr) becomes one
this image runs, the rest of it byte for byte. runner-config runs it on the live config at every start;
the doctor's note on such a secret is tested on the stand-in host (tests/test_doctor.py, slow)."""

from __future__ import annotations

import os

import pytest

from pipglr_builder import config, processes, render

pytestmark = pytest.mark.tools

# As pipglr's register runlabel writes it (DOCKER_HOST at its runner's home, DOCKER_CACHE_DIR=/cache on
# its pipglr-cache volume, host network), plus a second runner with a shared named-volume bind.
PIPGLR = '''concurrent = 2
check_interval = 0

[session_server]
  session_timeout = 1800

[[runners]]
  name = "pipglr"
  url = "https://gitlab.com/"
  id = 4242
  token = "glrt-pIpGlRtOkEn"
  token_obtained_at = 2025-06-01T10:00:00Z
  executor = "docker"
  cache_dir = "/cache"
  [runners.cache]
    MaxUploadedArchiveSize = 0
  [runners.docker]
    host = "unix:///home/runner/podman.sock"
    tls_verify = false
    image = "registry.fedoraproject.org/fedora-minimal:latest"
    privileged = true
    disable_cache = false
    volumes = ["/cache"]
    cache_dir = "/cache"
    network_mode = "host"
    shm_size = 0

[[runners]]
  name = "second"
  url = "https://gitlab.com/"
  token = "glrt-sEcOnDtOkEn"
  executor = "docker"
  [runners.docker]
    host = "unix:///home/runner/podman.sock"
    image = "debian:trixie"
    volumes = ["pipglr-cache:/cache:Z", "/srv/data:/data:ro"]
'''
# What this image needs: its socket, no cache_dir (caches are nested volumes on pipglr-cache), one
# cache volume per project. [runners] cache_dir is the path in the job (gitlab-runner's default): kept.
CONVERTED = (PIPGLR
             .replace('    host = "unix:///home/runner/podman.sock"', f'    host = "unix://{render.NESTED_SOCKET}"')
             .replace('    volumes = ["/cache"]\n    cache_dir = "/cache"\n', '    volumes = ["/cache"]\n')
             .replace('"pipglr-cache:/cache:Z"', '"/cache"'))


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("convert") / "convert-pipglr-config"
    path.write_text(render.render_file(config.load(None, {}), "files/convert-pipglr-config"))
    return path


def test_pipglr_config_is_converted_and_the_rest_kept(script):
    proc = processes.call(["sh", str(script)], input=PIPGLR)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == CONVERTED
    assert "/home/runner" not in proc.stdout and 'cache_dir = "/cache"' in proc.stdout  # the [runners] one
    # Each change named with its runner in the journal.
    said = proc.stderr.splitlines()
    assert said == [
        f'pipglr: runner "pipglr": converted pipglr\'s podman socket to host = "unix://{render.NESTED_SOCKET}"',
        ('pipglr: runner "pipglr": dropped pipglr\'s cache_dir = "/cache" in [runners.docker]: a cache volume per '
         "project, on pipglr-cache"),
        f'pipglr: runner "second": converted pipglr\'s podman socket to host = "unix://{render.NESTED_SOCKET}"',
        'pipglr: runner "second": converted a shared /cache bind to "/cache" (a cache volume per project)'], said


def test_a_config_of_this_image_is_left_alone(script):
    ours = processes.call(["sh", str(script)], input=CONVERTED)
    assert ours.returncode == 0 and ours.stdout == CONVERTED and ours.stderr == ""
    bad = "concurrent = [\n"  # not TOML: gitlab-runner's problem to report, not the converter's
    assert processes.call(["sh", str(script)], input=bad).stdout == bad


def test_in_place_keeps_owner_and_mode_and_leaves_an_unchanged_file(script, tmp_path):
    live = tmp_path / "config.toml"
    live.write_text(PIPGLR)
    live.chmod(0o600)
    proc = processes.call(["sh", str(script), str(live)])
    assert proc.returncode == 0, proc.stderr
    assert live.read_text() == CONVERTED
    assert oct(live.stat().st_mode & 0o777) == "0o600" and live.stat().st_uid == os.getuid()
    before = live.stat()
    again = processes.call(["sh", str(script), str(live)])
    assert again.returncode == 0 and again.stderr == ""
    assert (live.stat().st_ino, live.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_in_place_never_follows_a_link(script, tmp_path):
    """runner owns the live config's directory; root converts there: a link is left alone, its target untouched."""
    target = tmp_path / "elsewhere.toml"
    target.write_text(PIPGLR)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    proc = processes.call(["sh", str(script), str(link)])
    assert proc.returncode == 0 and "is not a regular file: not converted" in proc.stderr
    assert link.is_symlink() and target.read_text() == PIPGLR


def test_the_image_runs_it_on_the_live_config_at_start():
    cfg = config.load(None, {})
    runner_config = render.render_file(cfg, "files/runner-config")
    seeded = runner_config.index('seeded from the config.toml secret')
    call = runner_config.index('/usr/local/libexec/pipglr/convert-pipglr-config < "$work/config.toml"')
    written = runner_config.index('put "$live" < "$work/config.toml"')
    assert seeded < call < written, "the conversion runs on the seeded config, before the live config is written"
    copy = next(line for line in render.render_file(cfg, "Containerfile.j2").splitlines() if "resetcache" in line)
    assert "convert-pipglr-config" in copy
