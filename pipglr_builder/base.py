"""bootstrap-base: a Debian base image per platform, made with mmdebstrap.

No container registry is needed: the root filesystem is bootstrapped from
Debian packages into a tarball (cached, keyed by its inputs) and imported
into local container storage as localhost/pipglr-base:SUITE-ARCH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from . import tools
from .config import Config
from .errors import ToolMissing

KEY_LABEL = "io.pipglr.base-key"
VARIANT = "minbase"


def cache_dir() -> Path:
    """Where slow-to-make inputs are kept between runs (outside the clone)."""
    root = os.environ.get("PIPGLR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pipglr-builder")
    return Path(root)


def base_tag(config: Config, arch: str) -> str:
    return f"localhost/pipglr-base:{config.base_suite}-{arch}"


def base_key(config: Config, arch: str) -> str:
    """Everything the tarball depends on, hashed."""
    inputs = {"suite": config.base_suite, "arch": arch, "mirror": config.base_mirror, "variant": VARIANT}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_argv(config: Config, arch: str, tarball: Path) -> list[str]:
    return [
        "mmdebstrap", f"--variant={VARIANT}", f"--arch={arch}", "--format=tar", "--verbose",
        "--include=ca-certificates", "--aptopt=Acquire::Retries \"3\"",
        config.base_suite, str(tarball), config.base_mirror,
    ]


def import_argv(config: Config, arch: str, tarball: Path) -> list[str]:
    return [
        "podman", "import", "--arch", arch, "--os", "linux",
        "--change", f"LABEL {KEY_LABEL}={base_key(config, arch)}",
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
    """Make sure the base image for ARCH exists; return its tag. Cheap when cached."""
    tools.require("mmdebstrap", "podman")
    require_foreign_arches([arch])
    tag = base_tag(config, arch)
    key = base_key(config, arch)
    tarball = cache_dir() / "base" / f"{config.base_suite}-{arch}-{key}.tar"

    if not refresh and tarball.exists() and tools.image_label(tag, KEY_LABEL) == key:
        tools.say(f"base {tag}: up to date (cached {tarball})")
        return tag
    if refresh or not tarball.exists():
        tools.say(f"base {tag}: bootstrapping Debian {config.base_suite} for {arch} with mmdebstrap...")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        try:
            tools.run(mmdebstrap_argv(config, arch, partial), on_line=mmdebstrap_progress)
            partial.rename(tarball)
        finally:
            partial.unlink(missing_ok=True)
    tools.say(f"base {tag}: importing {tarball.name}")
    tools.run(import_argv(config, arch, tarball), quiet=True)
    return tag


def mmdebstrap_progress(line: str) -> None:
    # mmdebstrap prints one "I: ..." line per phase; show those as progress.
    if line.startswith(("I: ", "E: ", "W: ")):
        tools.say(f"  {line}")


def native_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
