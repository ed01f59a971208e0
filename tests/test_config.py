"""Config validation: every bad input is refused with a message naming the key."""

from pathlib import Path

import pytest

from pipglr_builder import config
from pipglr_builder.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipglr.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid():
    cfg = config.load(None)
    assert cfg.image_ref == "localhost/pipglr:latest"
    assert cfg.platforms == ("linux/amd64",)
    assert cfg.arches == ("amd64",)
    assert cfg.prune_interval == "daily"
    assert cfg.prune_age == "72h"


def test_file_and_flags_override_defaults(tmp_path):
    path = write(tmp_path, 'prune_interval = "weekly"\nplatforms = ["linux/arm64", "amd64"]\npodman_uid = 2000\n')
    cfg = config.load(path, {"runner_uid": "2001", "nested_privileged": "false"})
    assert cfg.prune_interval == "weekly"
    assert cfg.platforms == ("linux/amd64", "linux/arm64")
    assert (cfg.podman_uid, cfg.runner_uid, cfg.nested_privileged) == (2000, 2001, False)


def test_every_setting_has_a_config_field():
    fields = {f.name for f in config.dataclasses.fields(config.Config)}
    assert fields == set(config.SETTINGS_BY_KEY)


@pytest.mark.parametrize("text, words", [
    ('platforms = ["linux/s390x"]', ["platforms", "linux/s390x", "linux/amd64, linux/arm64"]),
    ('platforms = []', ["platforms", "at least one"]),
    ('image_name = "Bad Name"', ["image_name", "not a valid image name"]),
    ('tags = ["no spaces"]', ["tags", "not a valid image tag"]),
    ('frobnicate = 1', ["unknown key 'frobnicate'", "known keys"]),
    ('prune_interval = "every tuesday-ish"', ["prune_interval", "OnCalendar"]),
    ('prune_age = "3 days"', ["prune_age", "72h or 3d"]),
    ('prune_age = "0h"', ["prune_age", "s, m, h or d"]),
    ('prune_age = "72"', ["prune_age", "unit"]),
    ('prune_age = "1w"', ["prune_age", "unit"]),
    ('prune_age = 72', ["prune_age", "expected str"]),
    ('pull_policy = ["sometimes"]', ["pull_policy", "'sometimes' is not a pull policy (always, if-not-present, never)"]),
    ('pull_policy = ["never", "never"]', ["pull_policy", "listed twice"]),
    ('pull_policy = []', ["pull_policy", "at least one"]),
    ('runner_version = "latest"', ["runner_version", "17.5.0"]),
    ('runner_source = "ftp"', ["runner_source", "auto, release, file, gomodule"]),
    ('runner_source = "file"', ["runner_file", "runner_sha256"]),
    ('runner_sha256 = "abc"', ["runner_sha256", "64"]),
    ('podman_uid = 0', ["podman_uid", "between 1 and 65535"]),
    ('podman_uid = 1001', ["must differ"]),
    ('podman_uid = "1000"', ["podman_uid", "expected int"]),
    ('nested_privileged = "yes"', ["nested_privileged", "expected bool"]),
    ('extra_packages = ["vim; rm -rf /"]', ["extra_packages", "not a Debian package name"]),
    ('base_suite = "Trixie 13"', ["base_suite", "suite"]),
    ('runner_signing_keyring = "/nonexistent/gitlab.asc"', ["runner_signing_keyring", "cannot read it"]),
    ('runner_signing_keyring = "/etc/passwd"', ["runner_signing_keyring", "holds no OpenPGP public key"]),
    ('pids_limit = 100', ["pids_limit = 100", "0 (no limit) or at least 512 tasks"]),
    ('pids_limit = -1', ["pids_limit = -1", "0 (no limit) or at least 512 tasks"]),
    ('cpus = 0.05', ["cpus = 0.05", "0 (no limit) or a number of CPUs between 0.1 and 1024"]),
    ('cpus = -2', ["cpus = -2.0", "between 0.1 and 1024"]),
    ('cpus = 5000', ["cpus = 5000.0", "between 0.1 and 1024"]),
    ('cpus = nan', ["cpus = nan", "between 0.1 and 1024"]),
    ('cpus = "2"', ["cpus", "'2'", "expected float"]),
    ('memory = "4096"', ["memory = '4096'", "unit k, m or g", "at least 512m, e.g. 4g"]),
    ('memory = "4 GB"', ["memory = '4 GB'", "unit k, m or g"]),
    ('memory = "256m"', ["memory = '256m'", "at least 512m"]),
    ('memory = "0g"', ["memory = '0g'", "at least 512m"]),
    ('memory = 4', ["memory", "expected str"]),
])
def test_bad_values_are_refused(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    for word in words:
        assert word in str(err.value)


def test_malformed_toml_names_the_file(tmp_path):
    path = write(tmp_path, 'platforms = ["linux/amd64"\n')
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("flag, value, words", [
    ("podman_uid", "many", ["podman_uid", "expected a number"]),
    ("nested_privileged", "perhaps", ["nested_privileged", "true or false"]),
    ("platforms", "linux/amd64,windows/amd64", ["windows/amd64"]),
    ("cpus", "two", ["cpus", "'two'", "a number such as 2 or 1.5"]),
    ("cpus", "inf", ["cpus = inf (flag)", "between 0.1 and 1024"]),
    ("memory", "1t", ["memory = '1t' (flag)", "unit k, m or g"]),
    ("job_pids_limit", "10", ["job_pids_limit", "0 (no limit) or between 64"]),
    ("job_pids_limit", "-1", ["job_pids_limit", "0 (no limit) or between 64"]),
])
def test_bad_flags_are_refused(flag, value, words):
    with pytest.raises(ConfigError) as err:
        config.load(None, {flag: value})
    for word in words:
        assert word in str(err.value)


def test_resource_limits_default_to_none_and_take_podmans_forms(tmp_path):
    cfg = config.load(None)
    assert (cfg.cpus, cfg.memory, cfg.pids_limit) == (0.0, "", 0)
    cfg = config.load(write(tmp_path, 'cpus = 2\nmemory = "4g"\npids_limit = 4096\n'))
    assert (cfg.cpus, cfg.memory, cfg.pids_limit) == (2.0, "4g", 4096)
    cfg = config.load(None, {"cpus": "1.5", "memory": "524288k"})
    assert (cfg.cpus, cfg.memory) == (1.5, "524288k")
    assert config.load(None, {"memory": "512M"}).memory == "512M"
    assert config.memory_bytes("4g") == 4 << 30 and config.memory_bytes("512M") == 512 << 20
def test_job_pids_limit_default_and_none():
    assert config.load(None).job_pids_limit == 4096
    assert config.load(None, {"job_pids_limit": "0"}).job_pids_limit == 0


def test_sha256_per_arch_form_is_accepted():
    digest = "a" * 64
    cfg = config.load(None, {"runner_sha256": f"amd64={digest},arm64={'b' * 64}"})
    assert cfg.runner_sha256.startswith("amd64=")


def test_helper_image_needs_a_tag():
    with pytest.raises(ConfigError, match="helper_image"):
        config.load(None, {"helper_image": "registry.example.com/helper"})
    assert config.load(None, {"helper_image": "localhost/helper:{arch}-v{version}"}).helper_image.endswith("{version}")


def test_registry_settings_are_checked():
    with pytest.raises(ConfigError, match="registry_mirrors"):
        config.load(None, {"registry_mirrors": "docker.io"})
    with pytest.raises(ConfigError, match="search_registries"):
        config.load(None, {"search_registries": "not a host"})


def test_ca_bundle_must_be_a_pem_file(tmp_path):
    with pytest.raises(ConfigError, match="ca_bundle.*cannot read"):
        config.load(None, {"ca_bundle": str(tmp_path / "missing.pem")})
    (tmp_path / "x.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        config.load(None, {"ca_bundle": str(tmp_path / "x.pem")})


def test_rules_met_again_at_run_time_say_the_same_words():
    """A value that reaches the image at run time is checked there (register: PIPGLR_PULL_POLICY; the CA
    bundle: PIPGLR_CA_BUNDLE; the prune age: tests/test_prune_decisions.py) in the words the setting uses."""
    from pipglr_builder import render
    files = render.TEMPLATES / "files"
    policy = config.SETTINGS_BY_KEY["pull_policy"].check(["sometimes"])
    assert f"PIPGLR_PULL_POLICY: '$policy' {policy.split(' ', 1)[1]}" in (files / "register").read_text()
    bundle = config.SETTINGS_BY_KEY["ca_bundle"].check(__file__)
    assert f"PIPGLR_CA_BUNDLE {bundle}; ignored" in (files / "install-ca").read_text()
