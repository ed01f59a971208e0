"""`pipglr-build trust` and the signing decisions: the user's containers policy merged against fixtures
(tests/fixtures/trust/), keys and passphrases checked before a nightly builds.

What it writes is what podman reads in the slow test (tests/test_nightly.py::test_only_signed_images_are_pulled).
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipglr_builder import signing, trust
from pipglr_builder.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "trust"
SCOPE = "registry.example.com/group/pipglr"
KEY = (FIXTURES / "signing-key.pub").read_bytes()
NOW = datetime.datetime(2026, 12, 4, 8, 0, 0)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def home(tmp_path):
    shutil.copytree(FIXTURES / "user", tmp_path / "home")
    return tmp_path / "home"


@pytest.fixture
def system(tmp_path):
    shutil.copytree(FIXTURES / "system", tmp_path / "system")
    return tmp_path / "system"


def test_merge_keeps_every_other_entry_and_backs_up(home, system):
    before = json.loads((home / ".config/containers/policy.json").read_text())
    done = trust.apply(trust.plan(home, SCOPE, KEY, system=system), now=NOW)
    user = home / ".config/containers"
    after = json.loads((user / "policy.json").read_text())
    key_path = user / "pipglr-keys" / "registry.example.com_group_pipglr.pub"
    assert after["transports"]["docker"][SCOPE] == [
        {"type": "sigstoreSigned", "keyPath": str(key_path), "signedIdentity": {"type": "matchRepoDigestOrExact"}}]
    assert key_path.read_bytes() == KEY
    # Everything else exactly as the user had it: the default, other scopes, other transports.
    del after["transports"]["docker"][SCOPE], before["transports"]["docker"][SCOPE]
    assert after == before
    backup = user / "policy.json.pipglr-backup-20261204T080000"
    assert backup.read_bytes() == (FIXTURES / "user/.config/containers/policy.json").read_bytes()
    assert f"backed up {user / 'policy.json'} to {backup}" in done
    assert (user / "registries.d/pipglr-registry.example.com_group_pipglr.yaml").read_text() == \
        signing.registries_d(SCOPE)
    assert (user / "registries.d/team.yaml").read_bytes() == \
        (FIXTURES / "user/.config/containers/registries.d/team.yaml").read_bytes()
    assert not (user / "registries.d/default.yaml").exists(), "the user had a registries.d: nothing copied in"


def test_second_run_changes_nothing(home, system):
    trust.apply(trust.plan(home, SCOPE, KEY, system=system), now=NOW)
    written = tree(home)
    assert trust.plan(home, SCOPE, KEY, system=system) == []
    assert tree(home) == written


def test_no_user_policy_starts_from_the_system_one_and_keeps_its_registries_d(tmp_path, system):
    home = tmp_path / "empty-home"
    home.mkdir()
    trust.apply(trust.plan(home, SCOPE, KEY, system=system), now=NOW)
    user = home / ".config/containers"
    policy = json.loads((user / "policy.json").read_text())
    assert policy["default"] == [{"type": "insecureAcceptAnything"}]
    assert policy["transports"]["docker-daemon"] == {"": [{"type": "insecureAcceptAnything"}]}
    assert policy["transports"]["docker"][SCOPE][0]["type"] == "sigstoreSigned"
    # podman reads the user's registries.d instead of the system's: the system's files come along.
    assert (user / "registries.d/default.yaml").read_bytes() == (system / "registries.d/default.yaml").read_bytes()
    assert not list(user.rglob("*pipglr-backup*")), "nothing of the user's was replaced"


@pytest.mark.parametrize("fixture, message", [
    ("broken-policy.json", r"is not valid JSON \(Expecting property name enclosed in double quotes: line 3"),
    ("not-a-policy.json", "is not a containers policy"),
])
def test_a_policy_podman_cannot_read_is_refused_and_nothing_written(home, system, fixture, message):
    shutil.copyfile(FIXTURES / fixture, home / ".config/containers/policy.json")
    before = tree(home)
    with pytest.raises(trust.TrustError, match=message) as caught:
        trust.plan(home, SCOPE, KEY, system=system)
    assert str(home / ".config/containers/policy.json") in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert tree(home) == before


def test_a_broken_system_policy_is_refused_too(tmp_path, system):
    shutil.copyfile(FIXTURES / "broken-policy.json", system / "policy.json")
    with pytest.raises(trust.TrustError, match="system/policy.json is not valid JSON"):
        trust.plan(tmp_path, SCOPE, KEY, system=system)


def test_scope_configured_in_another_registries_d_file_is_refused(home, system):
    (home / ".config/containers/registries.d/mine.yaml").write_text(
        f"docker:\n  \"{SCOPE}\":\n    lookaside: https://example.com/sigs\n")
    with pytest.raises(trust.TrustError, match="mine.yaml already configures"):
        trust.plan(home, SCOPE, KEY, system=system)


def test_a_new_key_replaces_the_old_one_with_a_backup(home, system):
    trust.apply(trust.plan(home, SCOPE, KEY, system=system), now=NOW)
    other = KEY.replace(b"MFkw", b"MFkX")
    later = NOW + datetime.timedelta(minutes=1)
    done = trust.apply(trust.plan(home, SCOPE, other, system=system), now=later)
    key_path = home / ".config/containers/pipglr-keys/registry.example.com_group_pipglr.pub"
    assert key_path.read_bytes() == other
    assert key_path.with_name(key_path.name + ".pipglr-backup-20261204T080100").read_bytes() == KEY
    assert done == [f"backed up {key_path} to {key_path}.pipglr-backup-20261204T080100", f"wrote {key_path}"]


@pytest.mark.parametrize("scope", ["https://registry.example.com/pipglr", "registry.example.com/pipglr:latest",
                                   "registry.example.com", "registry.example.com/Pipglr", ""])
def test_bad_repository_is_refused(scope):
    with pytest.raises(trust.TrustError, match="is not a repository"):
        trust.check_scope(scope)


def test_a_private_key_or_garbage_is_not_a_public_key(home, system):
    with pytest.raises(trust.TrustError, match="not a PEM public key"):
        trust.plan(home, SCOPE, b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n", system=system)


def test_cli_trust_writes_and_refuses_clearly(home, monkeypatch):
    monkeypatch.setenv("HOME", str(home))
    key = FIXTURES / "signing-key.pub"
    result = CliRunner().invoke(main, ["trust", SCOPE, "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert f"wrote {home / '.config/containers/policy.json'}" in result.output
    again = CliRunner().invoke(main, ["trust", SCOPE, "--key", str(key)])
    assert again.exit_code == 0 and "nothing to change" in again.output
    shutil.copyfile(FIXTURES / "broken-policy.json", home / ".config/containers/policy.json")
    broken = CliRunner().invoke(main, ["trust", SCOPE, "--key", str(key)])
    assert broken.exit_code == 1 and broken.output.startswith("error: ") and "Traceback" not in broken.output
    assert "is not valid JSON" in broken.output


def test_sign_command_keeps_secrets_off_the_command_line(tmp_path):
    argv = signing.sign_argv("localhost/pipglr-signer:x", "reg.example:5000/pipglr:latest",
                             ["/tmp/k:/signing/key:ro"], tls_verify=True, cert_dir=True, authfile=True)
    assert argv[argv.index("--sign-passphrase-file") + 1] == "/dev/stdin"
    assert argv[argv.index("--sign-by-sigstore-private-key") + 1] == "/signing/key"
    assert "--preserve-digests" in argv and "--all" in argv
    assert argv[-2:] == ["docker://reg.example:5000/pipglr:latest"] * 2
    assert signing.signature_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64 + ".sig"


def test_signing_settings_are_checked_before_any_build(tmp_path, monkeypatch):
    key = tmp_path / "k.private"
    key.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nxx\n")
    with pytest.raises(signing.SigningError, match="no public key"):
        signing.check_key(str(key))
    (tmp_path / "k.pub").write_bytes(KEY)
    assert signing.check_key(str(key)) == (key, tmp_path / "k.pub")
    monkeypatch.delenv(signing.PASSPHRASE_ENV, raising=False)
    with pytest.raises(signing.SigningError, match="PIPGLR_SIGN_PASSPHRASE"):
        signing.passphrase("")
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "from-env")
    assert signing.passphrase("") == "from-env"
    (tmp_path / "pass").write_text("from-file\n")
    assert signing.passphrase(str(tmp_path / "pass")) == "from-file"


def test_nightly_checks_the_signing_key_before_it_builds(tmp_path, monkeypatch):
    """A key without its passphrase fails the nightly at once: nothing built, nothing pushed, the report says why."""
    from pipglr_builder import build, config, nightly
    built = []
    monkeypatch.setattr(build, "build", lambda *args, **kwargs: built.append(args))
    monkeypatch.delenv(signing.PASSPHRASE_ENV, raising=False)
    key = tmp_path / "pipglr.private"
    key.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nxx\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    (tmp_path / "pipglr.pub").write_bytes(KEY)
    cfg = config.load(None, {"base_image": "localhost/any-base", "publish_repository": "127.0.0.1:9/pipglr",
                             "publish_sign_key": str(key)})
    assert nightly.run(cfg, tmp_path / "report", datetime.date(2026, 12, 4)) == 1
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert built == [] and report["pushed"] == {} and "PIPGLR_SIGN_PASSPHRASE" in report["error"]
    with pytest.raises(config.ConfigError, match="publish_sign_key"):
        config.load(None, {"publish_sign_key": str(tmp_path / "pipglr.pub")})


def test_keygen_never_overwrites_a_key_and_wants_a_real_passphrase(tmp_path):
    (tmp_path / "pipglr.pub").write_bytes(KEY)
    with pytest.raises(signing.SigningError, match="already exists"):
        signing.keygen("localhost/pipglr-signer:x", tmp_path / "pipglr", "long enough passphrase")
    with pytest.raises(signing.SigningError, match="shorter than 8"):
        signing.keygen("localhost/pipglr-signer:x", tmp_path / "other", "short")
    with pytest.raises(signing.SigningError, match="does not exist"):
        signing.keygen("localhost/pipglr-signer:x", tmp_path / "no-such-dir" / "k", "long enough passphrase")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipglr.pub"]
