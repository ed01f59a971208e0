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


LIVE_TOKENS = """concurrent = 2

[[runners]]
  name = "rotated"
  url = "https://gitlab.example.com"
  id = 7
  token = "glrt-rotated-by-gitlab"
  token_obtained_at = 2026-12-03T10:00:00.123456789Z
  token_expires_at = 2027-01-03T10:00:00Z
  executor = "docker"
  [runners.docker]
    image = "debian:trixie"

[[runners]]
  name = "registered-again"
  url = "https://gitlab.example.com"
  id = 8
  token = "glrt-eight-live"
  token_obtained_at = 2026-11-01T00:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "docker"

[[runners]]
  name = "other-gitlab"
  url = "https://other.example.com"
  id = 9
  token = "glrt-nine-live"
  token_obtained_at = 2026-12-01T00:00:00Z
  executor = "docker"
"""

# The user's edit of an old ./config.toml: concurrent and an image changed, tokens from before the rotation;
# runner 8 registered again since (a newer token in the secret); runner 9 is another runner (same id, other URL).
SECRET_TOKENS = """concurrent = 4

[[runners]]
  name = "rotated"
  url = "https://gitlab.example.com"
  id = 7
  token = "glrt-as-registered"
  token_obtained_at = 2026-11-01T10:00:00Z
  token_expires_at = 2026-12-01T10:00:00Z
  executor = "docker"
  [runners.docker]
    image = "debian:bookworm"

[[runners]]
  name = "registered-again"
  url = "https://gitlab.example.com"
  id = 8
  token = "glrt-eight-new"
  token_obtained_at = 2026-12-04T00:00:00Z
  executor = "docker"

[[runners]]
  name = "other-gitlab"
  url = "https://elsewhere.example.com"
  id = 9
  token = "glrt-nine-secret"
  token_obtained_at = 2026-01-01T00:00:00Z
  executor = "docker"
"""


def test_a_new_secret_keeps_a_token_gitlab_rotated_since(lib, tmp_path):
    (tmp_path / "live.toml").write_text(LIVE_TOKENS)
    (tmp_path / "secret.toml").write_text(SECRET_TOKENS)
    merged = call(lib, "merge_tokens", str(tmp_path / "live.toml"), str(tmp_path / "secret.toml"),
                  str(tmp_path / "kept"))
    rotated = """  token = "glrt-rotated-by-gitlab"
  token_obtained_at = 2026-12-03T10:00:00.123456789Z
  token_expires_at = 2027-01-03T10:00:00Z
"""
    expected = SECRET_TOKENS.replace("""  token = "glrt-as-registered"
  token_obtained_at = 2026-11-01T10:00:00Z
  token_expires_at = 2026-12-01T10:00:00Z
""", rotated)
    assert merged == expected  # the user's edits (concurrent, image) and the other runners as in the secret
    assert (tmp_path / "kept").read_text() == '"rotated"\t7\t2026-12-03T10:00:00.123456789Z\t2026-11-01T10:00:00Z\n'


def test_a_secret_without_token_dates_keeps_the_live_token(lib, tmp_path):
    """A token written by hand (no token_obtained_at) is older than any the runner obtained itself."""
    (tmp_path / "live.toml").write_text(LIVE_TOKENS)
    hand = "[[runners]]\n  id = 7\n  url = \"https://gitlab.example.com\"\n  token = \"glrt-by-hand\"\n"
    (tmp_path / "secret.toml").write_text(hand)
    merged = call(lib, "merge_tokens", str(tmp_path / "live.toml"), str(tmp_path / "secret.toml"),
                  str(tmp_path / "kept"))
    assert 'token = "glrt-rotated-by-gitlab"' in merged and "glrt-by-hand" not in merged
    assert "token_obtained_at = 2026-12-03T10:00:00.123456789Z" in merged
    assert (tmp_path / "kept").read_text().endswith("\t(none)\n")


def test_an_unchanged_or_newer_secret_is_taken_as_it_is(lib, tmp_path):
    (tmp_path / "live.toml").write_text(LIVE_TOKENS)
    (tmp_path / "secret.toml").write_text(LIVE_TOKENS.replace("concurrent = 2", "concurrent = 3"))
    merged = call(lib, "merge_tokens", str(tmp_path / "live.toml"), str(tmp_path / "secret.toml"),
                  str(tmp_path / "kept"))
    assert merged == LIVE_TOKENS.replace("concurrent = 2", "concurrent = 3")
    assert not (tmp_path / "kept").exists()


@pytest.mark.slow  # the real gitlab-runner: built from its Go module once (make test), then cached
@pytest.mark.parametrize("text, problem", [
    ("garbage [[[\n", "decoding configuration file: toml: line 1"),
    ('concurrent = "four"\n', 'decoding configuration file: toml: line 1 (last key "concurrent"): incompatible types'),
    (LIVE_TOKENS, ""),
])
def test_config_problem_is_what_the_real_runner_says(lib, tmp_path, text, problem):
    from pipglr_builder import runner
    binary = runner.from_gomodule(config.load(None), "amd64")
    (tmp_path / "config.toml").write_text(text)
    proc = subprocess.run(["sh", "-c", f'gitlab_runner="{binary}"; . "{lib}"; config_problem "$1"', "sh",
                           str(tmp_path / "config.toml")], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith(problem) and bool(proc.stdout) == bool(problem), proc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config-lib", "config.toml"]  # no .runner_system_id here
