"""files/config-lib: what runner-config (at start) and doctor decide about a config.toml, run with the host's
sh and awk on fixture files (the image runs the same functions with its own)."""

import subprocess

import pytest

from pipglr_builder import config, render

pytestmark = pytest.mark.tools

OWN = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper"
LIVE = f"""concurrent = 2
[[runners]]
  name = "registered-by-an-older-image"
  [runners.docker]
    helper_image = "{OWN}:x86_64-v19.3.1"
[[runners]]
  name = "registered-by-this-image"
  [runners.docker]
    helper_image = "{OWN}:x86_64-v${{CI_RUNNER_VERSION}}"
[[runners]]
  name = "pinned-by-the-user-elsewhere"
  [runners.docker]
    helper_image = "registry.example.com:5000/ci/helper:arm64-v19.2.0"
[[runners]]
  name = "revision-form"
  [runners.docker]
    helper_image = "{OWN}:x86_64-abcdef12"
[[runners]]
  name = "same-version-literal"
  [runners.docker]
    helper_image = "{OWN}:x86_64-v19.4.0"
[[runners]]
  name = "no-tag"
  [runners.docker]
    helper_image = "registry.example.com:5000/ci/helper"
"""


@pytest.fixture
def lib(tmp_path):
    path = tmp_path / "config-lib"
    path.write_text(render.render_file(config.load(None), "files/config-lib"))
    return path


def call(lib, function, *args):
    proc = subprocess.run(["sh", "-c", f'. "{lib}"; "$@"', "sh", function, *args], check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pins_of_another_runner_are_found_and_told_apart(lib, tmp_path):
    live = tmp_path / "config.toml"
    live.write_text(LIVE)
    assert call(lib, "helper_pins", str(live), "19.4.0", "fc1f1862", OWN).splitlines() == [
        f"own {OWN}:x86_64-v19.3.1",
        "other registry.example.com:5000/ci/helper:arm64-v19.2.0",
        f"own {OWN}:x86_64-abcdef12"]


def test_a_config_that_follows_the_runner_has_no_pins(lib, tmp_path):
    live = tmp_path / "config.toml"
    live.write_text(f'[[runners]]\n  [runners.docker]\n    helper_image = "{OWN}:x86_64-v${{CI_RUNNER_VERSION}}"\n'
                    f'    helper_image = "{OWN}:arm64-${{CI_RUNNER_REVISION}}"\n')
    assert call(lib, "helper_pins", str(live), "19.5.0", "0123abcd", OWN) == ""


def test_follow_runner_rewrites_only_our_own_pins(lib, tmp_path):
    live = tmp_path / "config.toml"
    live.write_text(LIVE)
    rewritten = call(lib, "follow_runner", str(live), "19.4.0", "fc1f1862", OWN)
    expected = (LIVE.replace(f"{OWN}:x86_64-v19.3.1", f"{OWN}:x86_64-v${{CI_RUNNER_VERSION}}")
                .replace(f"{OWN}:x86_64-abcdef12", f"{OWN}:x86_64-${{CI_RUNNER_REVISION}}"))
    assert rewritten == expected  # the user's own pin elsewhere and every other line stay byte for byte
    live.write_text(rewritten)
    assert call(lib, "helper_pins", str(live), "19.4.0", "fc1f1862", OWN) == \
        "other registry.example.com:5000/ci/helper:arm64-v19.2.0\n"
