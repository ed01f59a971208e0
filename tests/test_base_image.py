"""The base's cache key follows the Debian archive (signed InRelease files from a mirror on loopback)."""

import pytest

from pipglr_builder import base_image, config, nightly
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
    return base_image.base_key(cfg, arch, base_image.archive_state(cfg, arch))


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
    assert base_image.archive_label(base_image.archive_state(cfg, "amd64")) == (
        "trixie 2026-11-21T09:15:44Z, trixie-updates 2026-11-21T09:15:44Z, trixie-security 2026-11-21T00:53:03Z")


def test_mmdebstrap_installs_from_updates_and_security(mirror):
    cfg, _, _ = mirror
    argv = base_image.mmdebstrap_argv(cfg, "amd64", "out.tar")
    assert argv[-3:] == [f"deb {cfg.base_mirror} trixie main", f"deb {cfg.base_mirror} trixie-updates main",
                         f"deb {cfg.base_security_mirror} trixie-security main"]


def test_without_updates_only_the_suite_is_read(mirror):
    cfg, _, asked = mirror
    cfg = config.load(None, {"base_mirror": cfg.base_mirror, "base_updates": "false", "base_keyring": cfg.base_keyring})
    base_image.archive_state(cfg, "amd64")
    assert asked == ["/debian/dists/trixie/InRelease"]
    assert base_image.mmdebstrap_argv(cfg, "amd64", "out.tar")[-1] == f"deb {cfg.base_mirror} trixie main"


def test_a_suite_the_mirror_lacks_is_named(mirror):
    cfg, _, _ = mirror
    cfg = config.load(None, {"base_mirror": cfg.base_mirror, "base_suite": "sid", "base_keyring": cfg.base_keyring})
    with pytest.raises(MirrorError, match=r"dists/sid/InRelease \(Not Found\).*base_updates = false"):
        base_image.archive_state(cfg, "amd64")


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
        base_image.archive_state(cfg, "amd64")


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
        base_image.archive_state(cfg, "amd64")


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
