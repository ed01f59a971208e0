"""bootstrap-base: a Debian base image per platform, made with mmdebstrap.

No container registry is needed: the root filesystem is bootstrapped from
Debian packages into a tarball (cached, keyed by its inputs) and imported
into local container storage as localhost/pipglr-base:SUITE-ARCH.

The key includes the state of the archive (each suite's Packages index for
the architecture, from its InRelease). When it changed, the indexes that did
are read (checked against the signed InRelease): if none has a newer version
of a package the image holds, the base is kept (and so the image); otherwise a
fresh base is bootstrapped, and every layer above it is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from . import processes
from .config import Config
from .debian_archive import archive_label, archive_state, compare_versions, index_versions, sources
from .errors import CommandFailed, MirrorError, ToolMissing

KEY_LABEL = "io.pipglr.base-key"
# "SUITE DATE, ...": the Release dates of the archive the base was bootstrapped from (images inherit it).
ARCHIVE_LABEL = "io.pipglr.base-archive"
VARIANT = "minbase"


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


def base_key(config: Config, arch: str, state: dict[str, dict]) -> str:
    """Everything the tarball depends on, hashed: suite, arch, mirrors, variant, the archive's package indexes."""
    inputs = {"suite": config.base_suite, "arch": arch, "sources": sources(config), "variant": VARIANT,
              "indexes": {suite: s["packages"] for suite, s in state.items()}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


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


@dataclasses.dataclass
class Base:
    """The base image of one platform and what bootstrap did about it (a sentence for the build's report)."""

    tag: str
    note: str


def bootstrap(config: Config, arch: str, refresh: bool = False, images: list[str] | tuple[str, ...] = ()) -> Base:
    """Make sure the base image for ARCH exists and matches the archive now. Cheap when cached.

    IMAGES: those built on this base before (the pipglr image, its helper): when the archive changed, the base
    is kept if no package they or the base hold has a newer version (without IMAGES any change bootstraps)."""
    processes.require("mmdebstrap", "podman")
    require_foreign_arches([arch])
    tag = base_tag(config, arch)
    try:
        state = archive_state(config, arch)
    except MirrorError as e:
        # Offline: the build's own apt-get needs the mirror too, but a build whose layers are cached does not.
        if processes.image_label(tag, KEY_LABEL) and not refresh:
            processes.say(f"base {tag}: keeping the base image as it is; {e}")
            return Base(tag, "kept: the mirror could not be read")
        raise
    key = base_key(config, arch, state)
    tarball = tarball_path(config, arch, key)
    archive = tarball.with_suffix(".archive")  # the archive's dates when this tarball was made

    current = processes.image_label(tag, KEY_LABEL)
    if not refresh and tarball.exists() and current == key:
        processes.say(f"base {tag}: up to date (cached {tarball}; archive {archive_label(state)})")
        return Base(tag, "up to date")
    why = "refresh asked for" if refresh else "no base image yet"
    if not refresh and current:
        kept, why = same_packages(config, arch, current, state, [tag, *images])
        if kept:
            processes.say(f"base {tag}: {why}: base kept")
            return Base(tag, f"{why}: base kept")
        processes.say(f"base {tag}: {why}")
    made = refresh or not tarball.exists()
    if made:
        processes.say(f"base {tag}: bootstrapping Debian {config.base_suite} for {arch} with mmdebstrap "
                      f"(archive {archive_label(state)})...")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        try:
            processes.run(mmdebstrap_argv(config, arch, partial), on_line=mmdebstrap_progress)
            archive.write_text(archive_label(state) + "\n")
            _write_record(tarball, {"sources": sources(config), "made": state, "checked": {}})
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
                old.with_suffix(RECORD).unlink(missing_ok=True)
    processes.say(f"base {tag}: importing {tarball.name}")
    label = archive.read_text().strip() if archive.exists() else archive_label(state)
    processes.run(import_argv(config, arch, tarball, key, label), quiet=True)
    return Base(tag, f"{why}: {'bootstrapped' if made else 'imported ' + tarball.name}")


def tarball_path(config: Config, arch: str, key: str) -> Path:
    return cache_dir() / "base" / f"{config.base_suite}-{arch}-{key}.tar"


# Beside each tarball, JSON: {sources, made: the archive state it was bootstrapped from, checked: {image IDs: the
# latest state found to have no newer version of any package those images (the base, built on it) hold}}.
RECORD = ".state"
CHECKED_IMAGES = 8  # images whose check is remembered per base (the newest ones)


def _write_record(tarball: Path, record: dict) -> None:
    partial = tarball.with_suffix(RECORD + ".partial")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    partial.rename(tarball.with_suffix(RECORD))


def same_packages(config: Config, arch: str, key: str, state: dict[str, dict], images: list[str]) -> tuple[bool, str]:
    """Whether the base KEY can stay although the archive is now STATE: no suite whose index changed since
    IMAGES (the base, and those built on it) were last checked, or else since the base was made, has a newer
    version of a package one of them holds. (False, why) when one has, or when that cannot be told: no record,
    an image missing or not built on this base, an index that cannot be read or does not match InRelease.

    Suites unchanged since then need no look: their packages were the newest when the base was made, and an
    image's own step installed the newest of its time (after that); a check holds for those image IDs only."""
    tarball = tarball_path(config, arch, key)
    try:
        record = json.loads(tarball.with_suffix(RECORD).read_text())
        made, checked = record["made"], dict(record["checked"])
    except (OSError, ValueError, KeyError, TypeError):
        return False, "the archive changed; no record of what the base was made from"
    if record.get("sources") != [list(s) for s in sources(config)] or set(made) != set(state):
        return False, "the sources changed since the base was made"
    since_made = [suite for suite in state if state[suite]["packages"] != made[suite]["packages"]]
    what = f"archive changed ({', '.join(since_made)})"
    ids = []
    for image in images:
        ids.append(image_on_base(image, key))
        if ids[-1] is None:
            return False, f"{what}; no {image} built on this base to compare with"
    image_ids = ",".join(ids)
    last = checked.get(image_ids, made)
    changed = [suite for suite in state if state[suite]["packages"] != last.get(suite, {}).get("packages")]
    if not changed:
        return True, f"{what}, no package of the image changed (checked before)"
    installed: dict[tuple[str, str], str] = {}  # (package, version) -> an image holding it
    for image in images:
        listed = image_packages(image, arch)
        if listed is None:
            return False, f"{what}; cannot list the packages in {image}"
        for name, version in listed.items():
            installed.setdefault((name, version), image)
    newer = []
    for mirror, suite in sources(config):
        if suite in changed:
            try:
                versions = index_versions(mirror, suite, arch, state[suite])
            except MirrorError as e:
                return False, f"{what}; {e}"
            newer += [(name, old, versions[name]) for name, old in sorted(installed)
                      if name in versions and compare_versions(versions[name], old) > 0]
    newer = sorted(set(newer))
    if newer:
        listed = ", ".join(f"{name} {old} -> {new}" for name, old, new in newer[:5])
        more = f" and {len(newer) - 5} more" if len(newer) > 5 else ""
        return False, f"{what}: {len(newer)} package(s) of the image changed: {listed}{more}"
    checked.pop(image_ids, None)
    checked[image_ids] = state
    _write_record(tarball, {**record, "checked": dict(list(checked.items())[-CHECKED_IMAGES:])})
    return True, f"{what}, no package of the image changed"


def image_on_base(image: str, key: str) -> str | None:
    """IMAGE's ID when it exists and was built on the base KEY (images inherit its label), else None."""
    if processes.image_label(image, KEY_LABEL) != key:
        return None
    return processes.image_field(image, "{{.Id}}")


def image_packages(image: str, arch: str) -> dict[str, str] | None:
    """{name: version} of the packages installed in IMAGE (dpkg's own list: the helper has no
    render.PACKAGE_LIST, and the base neither), or None when it cannot be read."""
    try:
        listed = processes.execute(["podman", "run", "--rm", "--network", "none", "--arch", arch, "--entrypoint",
                                    "dpkg-query", image, "-W", "-f", "${db:Status-Abbrev} ${Package} ${Version}\n"],
                                   timeout=300).stdout
    except CommandFailed:
        return None
    rows = [line.split() for line in listed.splitlines()]
    packages = {row[1]: row[2] for row in rows if len(row) == 3 and row[0] == "ii"}
    return packages or None


def mmdebstrap_progress(line: str) -> None:
    # mmdebstrap prints one "I: ..." line per phase; show those as progress.
    if line.startswith(("I: ", "E: ", "W: ")):
        processes.say(f"  {line}")


def native_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
