"""The base's cache key follows the Debian archive (signed InRelease files from a mirror on loopback)."""

import collections
import dataclasses
import hashlib
import json
import lzma
from pathlib import Path

import pytest

from pipglr_builder import base_image, config, debian_archive, nightly
from pipglr_builder.errors import MirrorError

from .conftest import file_server, keyring, sign

pytestmark = pytest.mark.tools  # gpgv checks the InRelease files


def in_release(date: str, amd64: str, arm64: str, valid_until: str = "Thu, 01 Jan 2099 00:00:00 UTC") -> bytes:
    # The shape of a real InRelease: MD5Sum (32 hex) and SHA256 (64 hex) sections list every index.
    return (f"Origin: Debian\nSuite: stable\nDate: {date}\nValid-Until: {valid_until}\n"
            f"Architectures: all amd64 arm64\nMD5Sum:\n"
            f" {'0' * 32}   123 main/binary-amd64/Packages.xz\nSHA256:\n"
            f" {amd64 * 64}   123 main/binary-amd64/Packages.xz\n {arm64 * 64}   456 main/binary-arm64/Packages.xz\n"
            f" {'e' * 64}   789 main/binary-all/Packages.xz\n").encode()


class Signed(dict):
    """Path -> InRelease text, served clearsigned by the tests' 'trusted' key."""

    def __init__(self, keys):
        super().__init__()
        self.keys = keys

    def body(self, path):
        return sign(self.keys, "trusted", self[path], clear=True) if path in self else None


SECURITY = "/debian-security/dists/trixie-security/InRelease"


@pytest.fixture
def mirror(signing_keys, tmp_path):
    """Serves dists/*/InRelease from a dict the test changes; records the paths asked for."""
    files = Signed(signing_keys)
    for suite in ("trixie", "trixie-updates"):
        files[f"/debian/dists/{suite}/InRelease"] = in_release("Sat, 21 Nov 2026 09:15:44 UTC", "a", "b")
    files[SECURITY] = in_release("Sat, 21 Nov 2026 00:53:03 UTC", "c", "d")
    with file_server(lambda path: files.get("raw:" + path) or files.body(path)) as (url, asked):
        cfg = config.load(None, {"base_mirror": f"{url}/debian", "base_security_mirror": f"{url}/debian-security",
                                 "base_keyring": str(keyring(signing_keys, tmp_path / "archive.gpg", armored=False))})
        yield cfg, files, asked


def key(cfg, arch="amd64"):
    return base_image.base_key(cfg, arch, debian_archive.archive_state(cfg, arch))


def test_key_follows_the_packages_of_its_arch_only(mirror):
    cfg, files, _ = mirror
    first = key(cfg)
    assert key(cfg, "arm64") != first
    security = SECURITY
    files[security] = in_release("Sun, 22 Nov 2026 00:53:03 UTC", "c", "d")  # re-signed, same packages
    assert key(cfg) == first
    files[security] = in_release("Sun, 22 Nov 2026 00:53:03 UTC", "c", "f")  # an arm64 update only
    assert key(cfg) == first and key(cfg, "arm64") != first
    files[security] = in_release("Sun, 22 Nov 2026 00:53:03 UTC", "f", "f")  # an amd64 security update
    assert key(cfg) != first


def test_label_has_each_suite_and_its_release_date(mirror):
    cfg, _, _ = mirror
    assert debian_archive.archive_label(debian_archive.archive_state(cfg, "amd64")) == (
        "trixie 2026-11-21T09:15:44Z, trixie-updates 2026-11-21T09:15:44Z, trixie-security 2026-11-21T00:53:03Z")


def test_mmdebstrap_installs_from_updates_and_security(mirror):
    cfg, _, _ = mirror
    argv = base_image.mmdebstrap_argv(cfg, "amd64", "out.tar")
    assert argv[-3:] == [f"deb {cfg.base_mirror} trixie main", f"deb {cfg.base_mirror} trixie-updates main",
                         f"deb {cfg.base_security_mirror} trixie-security main"]


def test_without_updates_only_the_suite_is_read(mirror):
    cfg, _, asked = mirror
    cfg = config.load(None, {"base_mirror": cfg.base_mirror, "base_updates": "false", "base_keyring": cfg.base_keyring})
    debian_archive.archive_state(cfg, "amd64")
    assert asked == ["/debian/dists/trixie/InRelease"]
    assert base_image.mmdebstrap_argv(cfg, "amd64", "out.tar")[-1] == f"deb {cfg.base_mirror} trixie main"


def test_a_suite_the_mirror_lacks_is_named(mirror):
    cfg, _, _ = mirror
    cfg = config.load(None, {"base_mirror": cfg.base_mirror, "base_suite": "sid", "base_keyring": cfg.base_keyring})
    with pytest.raises(MirrorError, match=r"dists/sid/InRelease \(Not Found\).*base_updates = false"):
        debian_archive.archive_state(cfg, "amd64")


@pytest.mark.parametrize("change, why", [
    ("other key", "signed by a key that is not in the keyring"),
    ("unsigned", "no signature in it"),
    ("stale", "expired at 2026-11-20 00:53 UTC .*the mirror is stale"),
])
def test_a_forged_or_stale_archive_is_refused(mirror, signing_keys, change, why):
    """A mirror that serves an old or forged InRelease would otherwise keep the old base (and its bugs) for good."""
    cfg, files, _ = mirror
    if change == "other key":
        files["raw:" + SECURITY] = sign(signing_keys, "other", files[SECURITY], clear=True)
    elif change == "unsigned":
        files["raw:" + SECURITY] = files[SECURITY]
    else:
        files[SECURITY] = in_release("Sat, 13 Nov 2026 00:53:03 UTC", "c", "d", "Fri, 20 Nov 2026 00:53:03 UTC")
    with pytest.raises(MirrorError, match=f"trixie-security/InRelease .*{why}"):
        debian_archive.archive_state(cfg, "amd64")


def test_only_the_signed_text_counts(mirror, signing_keys):
    """Lines added around the signed part of an InRelease change nothing."""
    cfg, files, _ = mirror
    first = key(cfg)
    forged = f" {'9' * 64}   123 main/binary-amd64/Packages.xz\n".encode()
    files["raw:" + SECURITY] = forged + sign(signing_keys, "trusted", files[SECURITY], clear=True) + forged
    assert key(cfg) == first


def test_unreachable_mirror_says_so():
    cfg = config.load(None, {"base_mirror": "http://127.0.0.1:9/debian"})  # port 9: connection refused
    with pytest.raises(MirrorError, match="cannot read http://127.0.0.1:9/debian/dists/trixie/InRelease"):
        debian_archive.archive_state(cfg, "amd64")


def test_nightly_lists_changed_packages():
    old = {"podman": "5.4.2+ds1-2", "libc6": "2.41-12", "gone": "1.0"}
    new = {"podman": "5.4.2+ds1-2", "libc6": "2.41-12+deb13u1", "added": "2.0"}
    changes = nightly.package_changes(old, new)
    assert changes == [["added", None, "2.0"], ["gone", "1.0", None], ["libc6", "2.41-12", "2.41-12+deb13u1"]]
    assert nightly.package_changes(None, new) is None
    report = {"image": "localhost/pipglr", "tags": ["latest"], "result": "ok", "seconds": 1, "platforms": {
        "linux/amd64": {"build_seconds": 1, "rebuilt": True, "size_bytes": 1e6, "verified": True,
                        "versions": {}, "packages": new, "package_changes": changes}}}
    summary = nightly.summarize(report)
    assert "packages: 3 changed since the previous report" in summary
    assert "libc6 2.41-12 -> 2.41-12+deb13u1" in summary and "gone 1.0 -> (removed)" in summary
    assert "added (new) -> 2.0" in summary


# --- An archive change that touches no package of the image keeps the base -------------------------------

def packages_index(versions: dict[str, str]) -> bytes:
    """A Packages.xz as Debian's: one stanza per package, Version after Package and other fields."""
    return lzma.compress("".join(f"Package: {name}\nSource: {name}\nVersion: {version}\nArchitecture: amd64\n"
                                 f"Description: {name}\n\n" for name, version in versions.items()).encode())


class Archive:
    """A mirror on loopback with real indexes: suites[suite] = {package: version} (amd64), served as
    main/binary-amd64/Packages.xz and listed (SHA256, size) in each suite's clearsigned InRelease."""

    def __init__(self, keys):
        self.keys = keys
        self.suites = {"trixie": {"libc6": "2.41-12", "podman": "5.4.2+ds1-2", "openjdk-21-jre": "21.0.8+9-1"},
                       "trixie-updates": {"tzdata": "2025b-4+deb13u1"},
                       "trixie-security": {"openssl": "3.5.1-1+deb13u1"}}
        self.raw: dict[str, bytes] = {}  # path -> bytes served instead (a tampered file)
        self.by_hash = False

    def path(self, suite):
        return f"/{'debian-security' if suite.endswith('-security') else 'debian'}/dists/{suite}"

    def body(self, path):
        if path in self.raw:
            return self.raw[path]
        for suite, versions in self.suites.items():
            index = packages_index(versions)
            if path == f"{self.path(suite)}/InRelease":
                return sign(self.keys, "trusted", (
                    f"Origin: Debian\nSuite: {suite}\nDate: Sat, 21 Nov 2026 09:15:44 UTC\n"
                    f"Valid-Until: Thu, 01 Jan 2099 00:00:00 UTC\nArchitectures: amd64\n"
                    + ("Acquire-By-Hash: yes\n" if self.by_hash else "") + "SHA256:\n"
                    f" {hashlib.sha256(index).hexdigest()} {len(index):8} main/binary-amd64/Packages.xz\n").encode(),
                    clear=True)
            plain = f"{self.path(suite)}/main/binary-amd64/Packages.xz"
            hashed = f"{self.path(suite)}/main/binary-amd64/by-hash/SHA256/{hashlib.sha256(index).hexdigest()}"
            if path == (hashed if self.by_hash else plain):
                return index
        return None


IMAGE = "localhost/pipglr:latest"
Image = collections.namedtuple("Image", "base id packages")
# What the image holds: the base's packages and those its own build step installed on top (podman).
INSTALLED = {"libc6": "2.41-12", "podman": "5.4.2+ds1-2", "tzdata": "2025b-4+deb13u1", "openssl": "3.5.1-1+deb13u1"}


@pytest.fixture
def archive(signing_keys, tmp_path, cache, monkeypatch):
    """The archive, a config reading it, and a base bootstrapped from its state now (its key and record);
    the image built on that base holds INSTALLED."""
    served = Archive(signing_keys)
    with file_server(served.body) as (url, asked):
        cfg = config.load(None, {"base_mirror": f"{url}/debian", "base_security_mirror": f"{url}/debian-security",
                                 "base_keyring": str(keyring(signing_keys, tmp_path / "archive.gpg", armored=False))})
        state = debian_archive.archive_state(cfg, "amd64")
        made = base_image.base_key(cfg, "amd64", state)
        tarball = base_image.tarball_path(cfg, "amd64", made)
        tarball.parent.mkdir(parents=True)
        base_image._write_record(tarball, {"sources": debian_archive.sources(cfg), "made": state, "checked": {}})
        images = {IMAGE: Image(made, "sha256:1", dict(INSTALLED)),
                  base_image.base_tag(cfg, "amd64"): Image(made, "sha256:base", {"libc6": "2.41-12"})}
        monkeypatch.setattr(base_image, "image_on_base",
                            lambda image, key: images[image].id if image in images and images[image].base == key
                            else None)
        monkeypatch.setattr(base_image, "image_packages", lambda image, arch: images[image].packages)
        yield cfg, served, asked, made, images


def same(cfg, made, *images):
    return base_image.same_packages(cfg, "amd64", made, debian_archive.archive_state(cfg, "amd64"),
                                    [base_image.base_tag(cfg, "amd64"), *(images or [IMAGE])])


def indexes_read(asked):
    return [path.split("/dists/")[1].split("/")[0] for path in asked if "/main/binary-" in path]


def test_a_security_update_of_a_package_the_image_lacks_keeps_the_base(archive):
    cfg, served, asked, made, _ = archive
    served.suites["trixie-security"]["openjdk-21-jre"] = "21.0.9+10-1~deb13u1"
    state = debian_archive.archive_state(cfg, "amd64")
    assert base_image.base_key(cfg, "amd64", state) != made  # the archive did change
    assert same(cfg, made) == (True, "archive changed (trixie-security), no package of the image changed")
    assert indexes_read(asked) == ["trixie-security"]  # only the index that changed is read
    asked.clear()
    assert same(cfg, made) == (True, ("archive changed (trixie-security), no package of the image changed "
                                      "(checked before)"))
    assert indexes_read(asked) == []
    # Later, trixie-updates changes too: only it is read now (trixie-security was checked at its new state).
    served.suites["trixie-updates"]["openjdk-21-jre"] = "21.0.9+10-1~deb13u1"
    assert same(cfg, made)[0] is True and indexes_read(asked) == ["trixie-updates"]


def test_an_update_of_an_installed_package_bootstraps_a_new_base(archive):
    cfg, served, _, made, _ = archive
    served.suites["trixie-security"]["podman"] = "5.4.2+ds1-1"  # older than installed: apt keeps it, so does this
    assert same(cfg, made)[0] is True
    served.suites["trixie-security"]["libc6"] = "2.41-12+deb13u1"
    assert same(cfg, made) == (False, ("archive changed (trixie-security): 1 package(s) of the image changed: "
                                       "libc6 2.41-12 -> 2.41-12+deb13u1"))


def test_a_tampered_index_is_never_trusted(archive):
    """A mirror serving an index other than the signed InRelease lists (here: one hiding a libc6 update)."""
    cfg, served, _, made, _ = archive
    served.suites["trixie-security"]["libc6"] = "2.41-12+deb13u1"
    path = f"{served.path('trixie-security')}/main/binary-amd64/Packages.xz"
    served.raw[path] = packages_index({"openssl": "3.5.1-1+deb13u1", "openjdk-21-jre": "21.0.9+10-1~deb13u1"})
    kept, why = same(cfg, made)
    assert not kept and why.endswith("trixie-security/main/binary-amd64/Packages.xz does not match the SHA256 "
                                     "and size its InRelease lists: not used")
    assert same(cfg, made)[0] is False  # nothing was recorded as checked
    served.raw.clear()
    assert same(cfg, made)[1].endswith("libc6 2.41-12 -> 2.41-12+deb13u1")


def test_by_hash_the_index_cannot_change_after_the_inrelease(archive):
    cfg, served, asked, made, _ = archive
    served.by_hash = True
    served.suites["trixie-security"]["openjdk-21-jre"] = "21.0.9+10-1~deb13u1"
    assert same(cfg, made)[0] is True
    assert [p for p in asked if "/by-hash/SHA256/" in p] and not [p for p in asked if p.endswith("Packages.xz")]


def test_without_the_image_or_the_record_the_base_is_bootstrapped(archive):
    cfg, served, asked, made, images = archive
    served.suites["trixie-security"]["openjdk-21-jre"] = "21.0.9+10-1~deb13u1"
    images[IMAGE] = Image("another-base", "sha256:1", INSTALLED)  # its packages say nothing about this base
    assert same(cfg, made) == (False, (f"archive changed (trixie-security); no {IMAGE} built on this base to "
                                       "compare with"))
    del images[IMAGE]
    assert same(cfg, made)[0] is False and indexes_read(asked) == []
    images[IMAGE] = Image(made, "sha256:1", None)  # dpkg-query failed in it
    assert same(cfg, made) == (False, f"archive changed (trixie-security); cannot list the packages in {IMAGE}")
    base_image.tarball_path(cfg, "amd64", made).with_suffix(base_image.RECORD).unlink()
    images[IMAGE] = Image(made, "sha256:1", INSTALLED)
    assert same(cfg, made) == (False, "the archive changed; no record of what the base was made from")


def test_a_check_holds_for_that_image_only(archive):
    """Another image on the same base (other packages), or this one rebuilt, is compared since the base was made."""
    cfg, served, asked, made, images = archive
    served.suites["trixie-security"]["curl"] = "8.14.1-2+deb13u1"
    assert same(cfg, made)[0] is True  # the image has no curl
    asked.clear()
    images[IMAGE] = Image(made, "sha256:2", {**INSTALLED, "curl": "8.14.1-2"})  # rebuilt with curl
    assert same(cfg, made) == (False, ("archive changed (trixie-security): 1 package(s) of the image changed: "
                                       "curl 8.14.1-2 -> 8.14.1-2+deb13u1"))
    assert indexes_read(asked) == ["trixie-security"]


def test_the_helper_image_and_the_base_count_too(archive):
    """The helper (built on the same base) holds git, the pipglr image does not: a git update bootstraps."""
    cfg, served, _, made, images = archive
    helper = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v19.4.0"
    images[helper] = Image(made, "sha256:helper", {"libc6": "2.41-12", "git": "1:2.47.3-0+deb13u1"})
    served.suites["trixie-security"]["git"] = "1:2.47.3-0+deb13u2"
    assert same(cfg, made)[0] is True  # without the helper
    assert same(cfg, made, IMAGE, helper) == (False, (
        "archive changed (trixie-security): 1 package(s) of the image changed: git 1:2.47.3-0+deb13u1 -> "
        "1:2.47.3-0+deb13u2"))
    # The base's own packages: an image whose apt step upgraded libc6 does not hide the base's older one.
    images[IMAGE] = Image(made, "sha256:1", {**INSTALLED, "libc6": "2.41-12+deb13u1"})
    served.suites["trixie-security"]["libc6"] = "2.41-12+deb13u1"
    assert same(cfg, made)[1].endswith("1 package(s) of the image changed: libc6 2.41-12 -> 2.41-12+deb13u1")


def test_another_mirror_bootstraps_a_new_base(archive):
    cfg, _, _, made, _ = archive
    other = dataclasses.replace(cfg, base_security_mirror=cfg.base_security_mirror + "/")
    assert base_image.same_packages(other, "amd64", made, debian_archive.archive_state(other, "amd64"), [IMAGE]) == (
        False, "the sources changed since the base was made")


@pytest.fixture
def fake_podman(monkeypatch, archive):
    """bootstrap with mmdebstrap and podman replaced: the base image's key label, the commands run."""
    cfg, _, _, made, _ = archive
    labels = {base_image.base_tag(cfg, "amd64"): made}
    ran = []
    real_run = base_image.processes.run

    def run(argv, **kwargs):
        if argv[0] == "mmdebstrap":
            Path(argv[-4]).write_bytes(b"a tarball")
        elif argv[:2] == ["podman", "import"]:
            labels[argv[-1]] = argv[argv.index("--change") + 1].split("=", 1)[1]
        else:
            return real_run(argv, **kwargs)  # gpgv
        ran.append(argv[0])
        return ""

    monkeypatch.setattr(base_image.processes, "require", lambda *programs: None)
    monkeypatch.setattr(base_image.processes, "image_label", lambda ref, label: labels.get(ref))
    monkeypatch.setattr(base_image.processes, "run", run)
    base_image.tarball_path(cfg, "amd64", made).write_bytes(b"the base's tarball")
    base_image.tarball_path(cfg, "amd64", made).with_suffix(".archive").write_text("trixie ...\n")
    return ran


def test_bootstrap_keeps_or_replaces_the_base(archive, fake_podman, capsys):
    cfg, served, _, _, _ = archive
    assert base_image.bootstrap(cfg, "amd64", images=[IMAGE]).note == "up to date"
    served.suites["trixie-security"]["openjdk-21-jre"] = "21.0.9+10-1~deb13u1"
    base = base_image.bootstrap(cfg, "amd64", images=[IMAGE])
    assert base.note == "archive changed (trixie-security), no package of the image changed: base kept"
    assert fake_podman == [] and "no package of the image changed: base kept" in capsys.readouterr().err
    served.suites["trixie-security"]["libc6"] = "2.41-12+deb13u1"
    base = base_image.bootstrap(cfg, "amd64", images=[IMAGE])
    assert base.note == ("archive changed (trixie-security): 1 package(s) of the image changed: "
                         "libc6 2.41-12 -> 2.41-12+deb13u1: bootstrapped")
    assert fake_podman == ["mmdebstrap", "podman"]
    state = debian_archive.archive_state(cfg, "amd64")
    new = base_image.tarball_path(cfg, "amd64", base_image.base_key(cfg, "amd64", state))
    record = json.loads(new.with_suffix(base_image.RECORD).read_text())
    assert record["made"] == state and record["checked"] == {}
    assert sorted(p.name for p in new.parent.iterdir()) == sorted([new.name, new.with_suffix(".archive").name,
                                                                   new.with_suffix(base_image.RECORD).name])


def test_debian_version_order():
    ordered = ["1.0~rc1", "1.0", "1.0-1", "1.0-1+deb13u1", "1.0a", "1.0+b1", "1.1", "1.10", "2:0.1"]
    for i, a in enumerate(ordered):
        for j, b in enumerate(ordered):
            assert (debian_archive.compare_versions(a, b) > 0) == (i > j), (a, b)
    assert debian_archive.compare_versions("1.01", "1.1") == 0 and debian_archive.compare_versions("1.0", "1.0-0") == 0


def test_nightly_says_what_became_of_the_base():
    report = {"image": "localhost/pipglr", "tags": ["latest"], "result": "ok", "seconds": 1, "platforms": {
        "linux/amd64": {"build_seconds": 1, "rebuilt": False, "size_bytes": 1e6, "verified": True, "versions": {},
                        "packages": {}, "package_changes": [],
                        "base": "archive changed (trixie-security), no package of the image changed: base kept"}}}
    assert ("    base: archive changed (trixie-security), no package of the image changed: base kept"
            in nightly.summarize(report))
