"""gitlab-runner sources, against a release server on loopback (no real network)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pipglr_builder import config, runner
from pipglr_builder.errors import RunnerSourceError

from .conftest import file_server, keyring, sign

BINARY = b"#!/bin/sh\necho gitlab-runner\n"


@pytest.fixture
def release_server():
    """Serves v19.4.0 like the official download server; records the paths asked for."""
    files = {
        "/v19.4.0/binaries/gitlab-runner-linux-amd64": BINARY,
        "/v19.4.0/release.sha256": f"{hashlib.sha256(BINARY).hexdigest()}  ./binaries/gitlab-runner-linux-amd64\n"
                                   f"{'0' * 64}  ./binaries/gitlab-runner-linux-arm64\n".encode(),
    }
    with file_server(files.get) as (url, asked):
        yield url, files, asked


def test_release_download_is_verified_and_cached(release_server, cache):
    url, _, asked = release_server
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": url})
    source, binaries = runner.obtain(cfg)
    assert source == "release"
    assert binaries["amd64"].read_bytes() == BINARY
    assert str(binaries["amd64"]).startswith(str(cache))
    runner.obtain(cfg)  # second time: only the checksum list is fetched again
    assert asked.count("/v19.4.0/binaries/gitlab-runner-linux-amd64") == 1


def test_release_version_that_does_not_exist(release_server, cache):
    url, _, _ = release_server
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": url, "runner_version": "1.2.3"})
    with pytest.raises(RunnerSourceError, match=r"release not found .*HTTP 404.*check runner_version"):
        runner.obtain(cfg)


def test_release_checksum_mismatch_installs_nothing(release_server, cache):
    url, files, _ = release_server
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": url, "platforms": "linux/arm64"})
    files["/v19.4.0/binaries/gitlab-runner-linux-arm64"] = b"tampered"
    with pytest.raises(RunnerSourceError, match="checksum mismatch"):
        runner.obtain(cfg)
    assert not list(cache.rglob("gitlab-runner-arm64*"))


def test_release_unreachable_says_so(cache):
    # Port 9 on loopback (discard) is closed here: connection refused at once.
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": "http://127.0.0.1:9"})
    with pytest.raises(RunnerSourceError, match="cannot reach .*no network.*runner_source = file"):
        runner.obtain(cfg)


def test_file_source_checks_sha256(tmp_path, cache):
    binary = tmp_path / "gitlab-runner-amd64"
    binary.write_bytes(BINARY)
    good = hashlib.sha256(BINARY).hexdigest()
    cfg = config.load(None, {"runner_source": "file", "runner_file": str(tmp_path / "gitlab-runner-{arch}"),
                             "runner_sha256": good})
    assert runner.obtain(cfg) == ("file", {"amd64": binary})
    bad = config.load(None, {"runner_source": "file", "runner_file": str(binary), "runner_sha256": "f" * 64})
    with pytest.raises(RunnerSourceError, match="checksum mismatch .*expected f{64}"):
        runner.obtain(bad)


def test_file_source_missing_file(tmp_path, cache):
    cfg = config.load(None, {"runner_source": "file", "runner_file": str(tmp_path / "nope"),
                             "runner_sha256": "a" * 64})
    with pytest.raises(RunnerSourceError, match="does not exist"):
        runner.obtain(cfg)


def test_auto_prefers_a_given_file_then_says_why_others_failed(tmp_path, cache):
    cfg = config.load(None, {"runner_release_url": "http://127.0.0.1:9", "runner_file": str(tmp_path / "x"),
                             "runner_sha256": "a" * 64, "runner_module_version": "v0.0.0-bad"})

    def no_go(config, arch):
        raise RunnerSourceError("the Go module proxy did not give it")

    runner.SOURCES["gomodule"], saved = no_go, runner.SOURCES["gomodule"]
    try:
        with pytest.raises(RunnerSourceError) as err:
            runner.obtain(cfg)
    finally:
        runner.SOURCES["gomodule"] = saved
    text = str(err.value)
    assert "file:" in text and "release:" in text and "gomodule:" in text
    assert text.index("file:") < text.index("release:") < text.index("gomodule:")


@pytest.fixture
def gomodule_recorded(monkeypatch):
    """The gomodule source replaced by one that records each call (and builds nothing)."""
    called = []
    monkeypatch.setitem(runner.SOURCES, "gomodule", lambda config, arch: called.append(arch) or Path("/gomodule"))
    return called


def test_auto_falls_back_to_gomodule_when_allowed(release_server, cache, gomodule_recorded):
    url, _, _ = release_server
    cfg = config.load(None, {"runner_release_url": url, "runner_version": "1.2.3"})  # the server has no 1.2.3
    assert runner.obtain(cfg) == ("gomodule", {"amd64": Path("/gomodule")})


def test_auto_without_fallback_stops_at_the_release_and_names_the_fix(release_server, cache, gomodule_recorded):
    url, _, _ = release_server
    cfg = config.load(None, {"runner_release_url": url, "runner_version": "1.2.3"})
    with pytest.raises(RunnerSourceError) as err:
        runner.obtain(cfg, fallback=False)
    assert gomodule_recorded == []
    assert "release: gitlab-runner release not found" in str(err.value) and "gomodule:" not in str(err.value)
    assert "pass --runner-source gomodule on purpose" in str(err.value)


def test_gomodule_ldflags_set_version_and_revision():
    flags = runner.gomodule_ldflags("19.4.0", "v1.11.1-0.20260903214710-fc1f1862bd91")
    assert "common.VERSION=19.4.0" in flags and "common.REVISION=fc1f1862 " in flags
    assert "common.BUILT=2026-09-03T21:47:10+00:00" in flags and flags.startswith("-s -w ")


class FakeGo:
    """`go` as from_gomodule drives it: the proxy refuses the modules in REFUSED; `go build` prints BUILD_ERROR."""

    def __init__(self, module_dir, refused: set[str], requires: dict[str, str], build_error: str = ""):
        self.module_dir, self.refused, self.requires, self.build_error = module_dir, refused, requires, build_error
        self.edits: list[str] = []
        self.built: list[str] = []
        self.ldflags: list[str] = []

    def capture(self, argv, cwd=None):
        from pipglr_builder.errors import CommandFailed
        if argv[:3] == ["go", "env", "GOVERSION"]:
            return "go1.26.8"
        if argv[:3] == ["go", "mod", "edit"]:
            return json.dumps({"Require": [{"Path": p, "Version": v} for p, v in self.requires.items()]})
        module = argv[-1].split("@")[0]
        if module in self.refused:
            raise CommandFailed(f"reading https://proxy.golang.org/{module}/@v/x.info: 403 Forbidden\n"
                                "server response: This module version is not available.")
        return json.dumps({"Dir": str(self.module_dir)})

    def run(self, argv, **kwargs):
        from pipglr_builder.errors import CommandFailed
        if argv[:3] == ["go", "mod", "edit"]:
            self.edits.append(argv[3])
        elif argv[:2] == ["go", "build"]:
            if self.build_error:
                raise CommandFailed(self.build_error)
            out = Path(argv[argv.index("-o") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("binary")
            self.built.append(argv[-1])
            self.ldflags.append(argv[argv.index("-ldflags") + 1])
        return ""


@pytest.fixture
def fake_go(monkeypatch, tmp_path, cache):
    from pipglr_builder import processes
    module_dir = tmp_path / "mod"
    module_dir.mkdir()
    (module_dir / "VERSION").write_text("19.4.0\n")
    (module_dir / "go.mod").write_text("module gitlab.com/gitlab-org/gitlab-runner\n")

    def make(refused, requires, build_error=""):
        go = FakeGo(module_dir, set(refused), requires, build_error)
        monkeypatch.setattr(processes, "capture", go.capture)
        monkeypatch.setattr(processes, "run", go.run)
        monkeypatch.setattr(processes, "require", lambda *a: None)
        return go
    return make


def test_gomodule_replaces_only_refused_modules(fake_go):
    labkit, moa, step = "gitlab.com/gitlab-org/labkit/v2", "gitlab.com/gitlab-org/moa", "gitlab.com/gitlab-org/step-runner"
    go = fake_go(refused={labkit, step}, requires={labkit: "v2.29.2", moa: "v0.0.0-1", step: "v0.44.0"})
    binary = runner.from_gomodule(config.load(None), "amd64")
    replaced = sorted(e.removeprefix("-replace=").split("=")[0] for e in go.edits if e.startswith("-replace="))
    assert [r for r in replaced if r != runner.NESTED_MODULE] == [labkit, step]  # moa is served: never replaced
    for edit in go.edits:
        if edit.startswith(f"-replace={labkit}="):
            assert edit.endswith("runner_go_replacements/labkit")
    assert go.built == [".", "./apps/gitlab-runner-helper"]
    assert runner.replaced_in(binary) == [labkit, step]
    assert runner.label_args(binary, "gomodule") == ["--build-arg", "RUNNER_SOURCE=gomodule",
                                                      "--build-arg", f"RUNNER_STANDINS={labkit},{step}"]
    assert f"({labkit}, {step})" in runner.replacements_note(binary)
    assert runner.helper_binary(binary, "amd64").name == "gitlab-runner-helper-amd64"
    assert runner.from_gomodule(config.load(None), "amd64") == binary  # cached: no second build
    assert go.built == [".", "./apps/gitlab-runner-helper"]


def test_gomodule_stamped_as_another_version_is_cached_beside_the_plain_build(fake_go):
    """For testing upgrades: the same source stamped as 19.4.1 (runner and helper), kept apart from the 19.4.0 build."""
    go = fake_go(refused=set(), requires={})
    plain = runner.from_gomodule(config.load(None), "amd64")
    stamped = runner.from_gomodule(config.load(None), "amd64", stamp="19.4.1")
    assert stamped.parent != plain.parent and stamped.parent.name.endswith("-stamped-19.4.1")
    assert ["common.VERSION=19.4.0 " in f for f in go.ldflags] == [True, True, False, False]
    assert all("common.VERSION=19.4.1 " in f and "common.BRANCH=v19.4.1 " in f for f in go.ldflags[2:])
    assert runner.helper_binary(stamped, "amd64").parent == stamped.parent
    assert runner.from_gomodule(config.load(None), "amd64", stamp="19.4.1") == stamped  # cached: no third build
    assert runner.from_gomodule(config.load(None), "amd64") == plain
    assert len(go.built) == 4


def test_gomodule_refused_module_without_replacement_is_named(fake_go):
    """A refused dependency this project has no replacement for: one readable sentence naming it."""
    fake_go(refused=set(), requires={}, build_error=(
        "x.go:1:2: gitlab.com/example/newdep@v1.2.3: reading "
        "https://proxy.golang.org/gitlab.com/example/newdep/@v/v1.2.3.zip: 403 Forbidden\n"))
    with pytest.raises(RunnerSourceError) as err:
        runner.from_gomodule(config.load(None), "amd64")
    text = str(err.value)
    assert "refuses gitlab.com/example/newdep@v1.2.3" in text and "no replacement" in text
    assert "runner_source = file" in text


def test_gomodule_missing_nested_module_says_which_setting(fake_go):
    fake_go(refused=set(), requires={}, build_error=(
        "x.go:1:2: gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api@v0.1.1: reading "
        "https://proxy.golang.org/gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api/@v/v0.1.1.zip: "
        "403 Forbidden\n"))
    with pytest.raises(RunnerSourceError, match="set runner_nested_module_dir"):
        runner.from_gomodule(config.load(None), "amd64")


# --- signed checksums (runner_signing_keyring) --------------------------------

@pytest.fixture
def signed_release(release_server, signing_keys, tmp_path):
    """The release server with release.sha256.asc signed by 'trusted'; a keyring file holding only that key."""
    url, files, _ = release_server
    files["/v19.4.0/release.sha256.asc"] = sign(signing_keys, "trusted", files["/v19.4.0/release.sha256"])
    return url, files, keyring(signing_keys, tmp_path / "gitlab.asc")


@pytest.mark.tools
@pytest.mark.parametrize("armored", [True, False])
def test_signed_release_is_accepted(signed_release, signing_keys, cache, armored):
    url, _, keys = signed_release
    if not armored:  # a binary keyring (gpg --export) works the same
        keyring(signing_keys, keys, armored=False)
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": url,
                             "runner_signing_keyring": str(keys)})
    assert runner.obtain(cfg)[1]["amd64"].read_bytes() == BINARY


@pytest.mark.tools
@pytest.mark.parametrize("change, why", [
    ("tampered", "BAD signature: the file was changed after it was signed"),
    ("other key", "signed by a key that is not in the keyring"),
    ("no signature", "has no signature release.sha256.asc"),
    ("garbage", "no signature in it"),
])
def test_bad_signature_is_refused_and_nothing_cached(signed_release, signing_keys, cache, change, why):
    url, files, keys = signed_release
    sums = "/v19.4.0/release.sha256"
    evil = b"#!/bin/sh\necho evil\n"
    files["/v19.4.0/binaries/gitlab-runner-linux-amd64"] = evil
    if change == "tampered":  # the server's checksums now match the evil binary; the signature is the old one
        files[sums] = files[sums].replace(hashlib.sha256(BINARY).hexdigest().encode(),
                                          hashlib.sha256(evil).hexdigest().encode())
    elif change == "other key":
        files[sums] = f"{hashlib.sha256(evil).hexdigest()}  ./binaries/gitlab-runner-linux-amd64\n".encode()
        files[sums + ".asc"] = sign(signing_keys, "other", files[sums])
    elif change == "no signature":
        del files[sums + ".asc"]
    else:
        files[sums + ".asc"] = b"-----BEGIN PGP SIGNATURE-----\n\nbm90IGEgc2lnbmF0dXJl\n-----END PGP SIGNATURE-----\n"
    cfg = config.load(None, {"runner_source": "release", "runner_release_url": url,
                             "runner_signing_keyring": str(keys)})
    with pytest.raises(RunnerSourceError, match=why) as err:
        runner.obtain(cfg)
    assert "not trust" in str(err.value)
    assert not list(cache.rglob("gitlab-runner-amd64*"))


def test_gomodule_key_follows_the_replacements_content_not_their_folder(monkeypatch, tmp_path):
    """Renaming or moving the replacements' folder keeps the cached runner build; an edit in it does not."""
    from pipglr_builder import processes
    monkeypatch.setattr(processes, "capture", lambda argv, cwd=None: "go1.24.4")
    cfg = config.load(None)
    key = runner.gomodule_key(cfg)
    moved = tmp_path / "elsewhere"
    shutil.copytree(runner.GO_REPLACEMENTS, moved)
    monkeypatch.setattr(runner, "GO_REPLACEMENTS", moved)
    assert runner.gomodule_key(cfg) == key
    (moved / "moa" / "moa.go").write_text((moved / "moa" / "moa.go").read_text() + "\n// changed\n")
    assert runner.gomodule_key(cfg) != key


def test_a_helper_beside_a_runner_file_needs_its_own_checksum(tmp_path, cache):
    """The helper beside runner_file goes into every job's helper image: never used because it lies there."""
    binary, helper = tmp_path / "gitlab-runner-amd64", tmp_path / "gitlab-runner-helper-amd64"
    binary.write_bytes(BINARY)
    settings = {"runner_source": "file", "runner_file": str(tmp_path / "gitlab-runner-{arch}"),
                "runner_sha256": hashlib.sha256(BINARY).hexdigest()}
    with pytest.raises(RunnerSourceError, match="helper_sha256 is set but there is no .*gitlab-runner-helper-amd64"):
        runner.obtain(config.load(None, {**settings, "helper_sha256": "a" * 64}))
    helper.write_bytes(b"a helper")
    with pytest.raises(RunnerSourceError, match="lies beside runner_file .*give its checksum as helper_sha256"):
        runner.obtain(config.load(None, settings))
    with pytest.raises(RunnerSourceError, match="checksum mismatch for .*helper-amd64: expected a{64}"):
        runner.obtain(config.load(None, {**settings, "helper_sha256": "a" * 64}))
    good = {**settings, "helper_sha256": f"amd64={hashlib.sha256(b'a helper').hexdigest()},arm64={'b' * 64}"}
    assert runner.obtain(config.load(None, good)) == ("file", {"amd64": binary})
