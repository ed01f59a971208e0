"""What the Debian archive says: its sources, each suite's signed state, its package versions.

The base's cache key is the archive's state (base_image.py): each suite's
InRelease, which must verify with base_keyring and be within Valid-Until,
lists the SHA256 of main's Packages index per architecture. When that state
changed, the changed indexes are read (only by that signed hash) to tell
whether a package the images hold has a newer version, in Debian's order.
"""

from __future__ import annotations

import datetime
import email.utils
import gzip
import hashlib
import lzma
import re
import urllib.error
import urllib.request
from pathlib import Path

from . import signatures
from .config import Config
from .errors import MirrorError

NETWORK_TIMEOUT = 20


def sources(config: Config) -> list[tuple[str, str]]:
    """(mirror, suite) pairs the base, and apt in the image, install from."""
    suite = config.base_suite
    if not config.base_updates:
        return [(config.base_mirror, suite)]
    return [(config.base_mirror, suite), (config.base_mirror, f"{suite}-updates"),
            (config.base_security_mirror, f"{suite}-security")]


def archive_state(config: Config, arch: str) -> dict[str, dict]:
    """{suite: {date, packages, files, by_hash}}: each suite's Release date and the SHA256 of main's Packages
    index for ARCH, from its InRelease; files: {"Packages.xz": [sha256, size], ...} (each form of that index)
    and whether the mirror serves them by hash. The index hash changes exactly when a package for ARCH (or all)
    does; the date also when Debian merely re-signs. InRelease must be signed by base_keyring and not past its
    Valid-Until: a stale or forged one would otherwise keep an old base forever."""
    state = {}
    for mirror, suite in sources(config):
        url = f"{mirror.rstrip('/')}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as response:
                raw = response.read()
        except (urllib.error.URLError, OSError) as e:
            raise MirrorError(f"cannot read {url} ({getattr(e, 'reason', e)}): the base is keyed by the "
                              "archive's state. Check base_mirror, base_security_mirror and base_suite "
                              "(base_updates = false for sid or testing, which have no -updates or -security)."
                              ) from None
        try:
            text = signatures.verify(Path(config.base_keyring), raw).decode("utf-8", "replace")
        except signatures.BadSignature as e:
            raise MirrorError(f"{url} does not verify with base_keyring {config.base_keyring}: {e}") from None
        fields = dict(re.findall(r"^([\w-]+): *(.*)$", text, re.MULTILINE))
        # SHA256 lines (64 hex digits; the MD5Sum section has 32) of Packages, Packages.gz, Packages.xz.
        listed = re.findall(rf"^ ([0-9a-f]{{64}}) +(\d+) main/binary-{arch}/(Packages(?:\.\w+)?)$", text,
                            re.MULTILINE)
        index = [sha for sha, _, _ in listed]
        if not ("Date" in fields and index):
            raise MirrorError(f"{url} lists no main/binary-{arch}/Packages index: is {arch} in {suite}?")
        valid_until = _when(fields.get("Valid-Until", ""))
        if valid_until and valid_until < datetime.datetime.now(datetime.UTC):
            raise MirrorError(f"{url} expired at {valid_until:%Y-%m-%d %H:%M} UTC (Valid-Until): the mirror is stale "
                              "and would hide Debian's updates. Use another base_mirror or base_security_mirror.")
        when = _when(fields["Date"])
        state[suite] = {"date": f"{when:%Y-%m-%dT%H:%M:%SZ}" if when else fields["Date"],
                        "packages": ",".join(sorted(index)),
                        "files": {name: [sha, int(size)] for sha, size, name in listed},
                        "by_hash": fields.get("Acquire-By-Hash", "").strip().lower() == "yes"}
    return state


def _when(value: str) -> datetime.datetime | None:
    """A Release file's date (RFC 2822, UTC), or None."""
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(datetime.UTC)
    except (TypeError, ValueError):
        return None


def archive_label(state: dict[str, dict]) -> str:
    return ", ".join(f"{suite} {s['date']}" for suite, s in state.items())


def index_versions(mirror: str, suite: str, arch: str, entry: dict) -> dict[str, str]:
    """{package: highest version} in SUITE's main Packages index for ARCH (entry: its archive_state), read in
    the smallest form the InRelease lists and used only when its SHA256 and size match that (signed) listing."""
    files = entry["files"]
    name = next((n for n in ("Packages.xz", "Packages.gz", "Packages") if n in files), None)
    if name is None:
        raise MirrorError(f"{suite} lists no Packages index for {arch}")
    sha, size = files[name]
    directory = f"{mirror.rstrip('/')}/dists/{suite}/main/binary-{arch}"
    # By hash (when the mirror offers it) the file cannot change between reading InRelease and reading it.
    urls = ([f"{directory}/by-hash/SHA256/{sha}"] if entry.get("by_hash") else []) + [f"{directory}/{name}"]
    problems = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as response:
                raw = response.read(size + 1)
        except (urllib.error.URLError, OSError) as e:
            problems.append(f"cannot read {url} ({getattr(e, 'reason', e)})")
            continue
        if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
            problems.append(f"{url} does not match the SHA256 and size its InRelease lists: not used")
            continue
        try:
            text = {"Packages.xz": lzma.decompress, "Packages.gz": gzip.decompress}.get(name, bytes)(raw)
        except (lzma.LZMAError, OSError, EOFError) as e:
            raise MirrorError(f"{url} does not decompress: {e}") from None
        versions: dict[str, str] = {}
        for package, version in re.findall(rb"^Package: *(\S+)\n(?:[^\n]+\n)*?Version: *(\S+)$", text,
                                           re.MULTILINE):
            package, version = package.decode(), version.decode()
            if package not in versions or compare_versions(version, versions[package]) > 0:
                versions[package] = version
        return versions
    raise MirrorError("; ".join(problems))


def _order(c: str) -> int:
    """dpkg's order of a character in a version's non-digit part (end of string: 0)."""
    if not c or c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return -1 if c == "~" else ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: non-digit runs by _order, digit runs as numbers, alternately."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac, bc = _order(a[i:i + 1]), _order(b[j:j + 1])
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        m, n = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        x, y = int(a[m:i] or 0), int(b[n:j] or 0)
        if x != y:
            return x - y
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version order (as `dpkg --compare-versions`): negative, 0 or positive."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision
    (ea, ua, ra), (eb, ub, rb) = split(a), split(b)
    return (ea - eb) or _compare_part(ua, ub) or _compare_part(ra, rb)
