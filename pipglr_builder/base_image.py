"""bootstrap-base: a Debian base image per platform, made with mmdebstrap.

No container registry is needed: the root filesystem is bootstrapped from
Debian packages into a tarball (cached, keyed by its inputs) and imported
into local container storage as localhost/pipglr-base:SUITE-ARCH.

The key includes the state of the archive (each suite's Packages index for
the architecture, from its InRelease), so a build after Debian published an
update bootstraps a fresh base, and every layer above it is rebuilt.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from . import processes, signatures
from .config import Config
from .errors import MirrorError, ToolMissing

KEY_LABEL = "io.pipglr.base-key"
# "SUITE DATE, ...": the Release dates of the archive the base was bootstrapped from (images inherit it).
ARCHIVE_LABEL = "io.pipglr.base-archive"
VARIANT = "minbase"
NETWORK_TIMEOUT = 20


def cache_dir() -> Path:
    """Where slow-to-make inputs are kept between runs (outside the clone)."""
    root = os.environ.get("PIPGLR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pipglr-builder")
    return Path(root)


def base_tag(config: Config, arch: str) -> str:
    return suite_tag(config.base_suite, arch)


def suite_tag(suite: str, arch: str) -> str:
    """Where the Debian base of SUITE for ARCH is kept in local container storage."""
    return f"localhost/pipglr-base:{suite}-{arch}"


def sources(config: Config) -> list[tuple[str, str]]:
    """(mirror, suite) pairs the base, and apt in the image, install from."""
    suite = config.base_suite
    if not config.base_updates:
        return [(config.base_mirror, suite)]
    return [(config.base_mirror, suite), (config.base_mirror, f"{suite}-updates"),
            (config.base_security_mirror, f"{suite}-security")]


def archive_state(config: Config, arch: str) -> dict[str, dict[str, str]]:
    """{suite: {date, packages}}: each suite's Release date and the SHA256 of main's Packages index for ARCH,
    from its InRelease. The index hash changes exactly when a package for ARCH (or all) does; the date also
    when Debian merely re-signs. InRelease must be signed by base_keyring and not past its Valid-Until: a
    stale or forged one would otherwise keep an old base forever."""
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
        index = re.findall(rf"^ ([0-9a-f]{{64}}) +\d+ main/binary-{arch}/Packages(?:\.\w+)?$", text,
                           re.MULTILINE)
        if not ("Date" in fields and index):
            raise MirrorError(f"{url} lists no main/binary-{arch}/Packages index: is {arch} in {suite}?")
        valid_until = _when(fields.get("Valid-Until", ""))
        if valid_until and valid_until < datetime.datetime.now(datetime.UTC):
            raise MirrorError(f"{url} expired at {valid_until:%Y-%m-%d %H:%M} UTC (Valid-Until): the mirror is stale "
                              "and would hide Debian's updates. Use another base_mirror or base_security_mirror.")
        when = _when(fields["Date"])
        state[suite] = {"date": f"{when:%Y-%m-%dT%H:%M:%SZ}" if when else fields["Date"],
                        "packages": ",".join(sorted(index))}
    return state


def _when(value: str) -> datetime.datetime | None:
    """A Release file's date (RFC 2822, UTC), or None."""
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(datetime.UTC)
    except (TypeError, ValueError):
        return None


def base_key(config: Config, arch: str, state: dict[str, dict[str, str]]) -> str:
    """Everything the tarball depends on, hashed: suite, arch, mirrors, variant, the archive's package indexes."""
    inputs = {"suite": config.base_suite, "arch": arch, "sources": sources(config), "variant": VARIANT,
              "indexes": {suite: s["packages"] for suite, s in state.items()}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def archive_label(state: dict[str, dict[str, str]]) -> str:
    return ", ".join(f"{suite} {s['date']}" for suite, s in state.items())


def mmdebstrap_argv(config: Config, arch: str, tarball: Path) -> list[str]:
    return [
        "mmdebstrap", f"--variant={VARIANT}", f"--arch={arch}", "--format=tar", "--verbose",
        "--include=ca-certificates", "--aptopt=Acquire::Retries \"3\"", f"--keyring={config.base_keyring}",
        config.base_suite, str(tarball), *(f"deb {mirror} {suite} main" for mirror, suite in sources(config)),
    ]


def import_argv(config: Config, arch: str, tarball: Path, key: str, archive: str) -> list[str]:
    return [
        "podman", "import", "--arch", arch, "--os", "linux",
        "--change", f"LABEL {KEY_LABEL}={key}",
        "--change", f"LABEL {ARCHIVE_LABEL}=\"{archive}\"",
        "--change", "CMD [\"/bin/bash\"]",
        str(tarball), base_tag(config, arch),
    ]


QEMU_NAME = {"amd64": "x86_64", "arm64": "aarch64"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def foreign_arch_problems(arch: str, bootstrapping: bool = True) -> list[str]:
    """What this build host lacks to build ARCH under emulation, and to bootstrap its base (empty: nothing)."""
    if arch == native_arch():
        return []
    qemu = QEMU_NAME[arch]
    problems = []
    if shutil.which(f"qemu-{qemu}-static") is None:
        problems.append(f"qemu-{qemu}-static is missing: apt-get install qemu-user-static")
    if bootstrapping and shutil.which("arch-test") is None:
        problems.append("arch-test is missing (mmdebstrap needs it for a foreign architecture): "
                        "apt-get install arch-test")
    handler = BINFMT_DIR / f"qemu-{qemu}"
    try:
        enabled = handler.read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        enabled = False
    if not enabled:
        problems.append(f"no binfmt_misc handler {handler} is enabled: apt-get install binfmt-support "
                        f"qemu-user-static, then `update-binfmts --enable qemu-{qemu}` (as root)")
    return problems


def require_foreign_arches(arches, bootstrapping: bool = True) -> None:
    """Stop before long work when a foreign platform cannot be built here, naming what to install."""
    problems = [f"linux/{arch}: {p}" for arch in arches for p in foreign_arch_problems(arch, bootstrapping)]
    if problems:
        raise ToolMissing("this host cannot build every configured platform:\n  " + "\n  ".join(problems)
                          + "\n(scripts/setup-host.sh sets all of this up.)")


def bootstrap(config: Config, arch: str, refresh: bool = False) -> str:
    """Make sure the base image for ARCH exists and matches the archive now; return its tag. Cheap when cached."""
    processes.require("mmdebstrap", "podman")
    require_foreign_arches([arch])
    tag = base_tag(config, arch)
    try:
        state = archive_state(config, arch)
    except MirrorError as e:
        # Offline: the build's own apt-get needs the mirror too, but a build whose layers are cached does not.
        if processes.image_label(tag, KEY_LABEL) and not refresh:
            processes.say(f"base {tag}: keeping the base image as it is; {e}")
            return tag
        raise
    key = base_key(config, arch, state)
    tarball = cache_dir() / "base" / f"{config.base_suite}-{arch}-{key}.tar"
    archive = tarball.with_suffix(".archive")  # the archive's dates when this tarball was made

    if not refresh and tarball.exists() and processes.image_label(tag, KEY_LABEL) == key:
        processes.say(f"base {tag}: up to date (cached {tarball}; archive {archive_label(state)})")
        return tag
    if refresh or not tarball.exists():
        processes.say(f"base {tag}: bootstrapping Debian {config.base_suite} for {arch} with mmdebstrap "
                  f"(archive {archive_label(state)})...")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        try:
            processes.run(mmdebstrap_argv(config, arch, partial), on_line=mmdebstrap_progress)
            archive.write_text(archive_label(state) + "\n")
            partial.rename(tarball)
        finally:
            partial.unlink(missing_ok=True)
        # Tarballs of an older archive state are never up to date again: keep one per suite and arch
        # (only those with an archive file: others were made under an older cache key and may still be in use).
        for old in tarball.parent.glob(f"{config.base_suite}-{arch}-*.tar"):
            if old != tarball and old.with_suffix(".archive").exists():
                processes.say(f"base {tag}: removing {old.name} (an older archive state)")
                old.unlink(missing_ok=True)
                old.with_suffix(".archive").unlink(missing_ok=True)
    processes.say(f"base {tag}: importing {tarball.name}")
    label = archive.read_text().strip() if archive.exists() else archive_label(state)
    processes.run(import_argv(config, arch, tarball, key, label), quiet=True)
    return tag


def mmdebstrap_progress(line: str) -> None:
    # mmdebstrap prints one "I: ..." line per phase; show those as progress.
    if line.startswith(("I: ", "E: ", "W: ")):
        processes.say(f"  {line}")


def native_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
