"""gitlab-runner for the image: from the official release, a local file, or its Go module.

Each source returns one verified binary per architecture, cached under
cache_dir()/runner keyed by version and architecture. `auto` tries them in
order and says which it used and why the others could not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from . import processes, signatures
from .base_image import cache_dir
from .config import Config
from .errors import CommandFailed, RunnerSourceError

MODULE = "gitlab.com/gitlab-org/gitlab-runner"
# go.mod replaces this nested module with a local path that is not part of
# the module download; dropping the replace uses the published version.
NESTED_MODULE = "gitlab.com/gitlab-org/gitlab-runner/helpers/runner_wrapper/api"
NETWORK_TIMEOUT = 20
# How `go build` reports a module the proxy will not serve.
REFUSED = re.compile(r"reading https?://\S+?/([^@\s]+)/@v/(\S+?)\.(?:zip|mod|info): 403 Forbidden")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(config: Config, arch: str, setting: str = "runner_sha256") -> str:
    """SETTING (runner_sha256, helper_sha256) is one hash, or 'amd64=HASH,arm64=HASH' for several files."""
    value = getattr(config, setting)
    if "=" not in value:
        return value
    for part in value.split(","):
        name, _, digest = part.strip().partition("=")
        if name == arch:
            return digest
    raise RunnerSourceError(f"{setting} has no checksum for {arch}; write it as 'amd64=HASH,arm64=HASH'")


# --- source: file -----------------------------------------------------------

def from_file(config: Config, arch: str) -> Path:
    path = Path(config.runner_file.replace("{arch}", arch)).expanduser()
    if not path.is_file():
        raise RunnerSourceError(f"runner_file {path} does not exist (for {arch}); "
                                "use {arch} in the path when building several platforms")
    _check_sha256(config, arch, path, "runner_sha256", "the right gitlab-runner build")
    _check_helper_beside(config, path, arch)
    return path


def _check_sha256(config: Config, arch: str, path: Path, setting: str, what: str) -> None:
    """PATH must have the checksum SETTING gives for ARCH; WHAT it should be, for the error."""
    want, have = expected_sha256(config, arch, setting), sha256_of(path)
    if want != have:
        raise RunnerSourceError(f"checksum mismatch for {path}: expected {want}, the file has {have}. "
                                f"Check that it is {what} and {setting} is its checksum.")


def _check_helper_beside(config: Config, runner_path: Path, arch: str) -> None:
    """A gitlab-runner-helper file beside runner_file goes into every job's helper image: like the runner,
    it is used only with the checksum the user gave (helper_sha256), never because it lies there."""
    helper = helper_binary(runner_path, arch)
    if helper is None:
        if config.helper_sha256:
            raise RunnerSourceError(f"helper_sha256 is set but there is no {runner_path.parent}/"
                                    f"gitlab-runner-helper-{arch} beside runner_file: put the helper there or unset it")
        return
    if not config.helper_sha256:
        raise RunnerSourceError(f"{helper} lies beside runner_file and would be built into the jobs' helper image: "
                                f"give its checksum as helper_sha256 (sha256sum {helper}), or move it away to use "
                                "the helper image from the registry")
    _check_sha256(config, arch, helper, "helper_sha256", "the helper built with that gitlab-runner")


# --- source: release --------------------------------------------------------

def _fetch(url: str, missing: str = "") -> bytes:
    """URL's body; MISSING is the error for a 403/404 (default: no such release)."""
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code in (403, 404) and missing:
            raise RunnerSourceError(f"{missing} (HTTP {e.code} for {url})") from None
        if e.code in (403, 404):
            raise RunnerSourceError(f"gitlab-runner release not found at {url} (HTTP {e.code}): "
                                    "check runner_version against the runner's release list") from None
        raise RunnerSourceError(f"downloading {url} failed: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RunnerSourceError(f"cannot reach {url} ({reason}): no network to the release server. "
                                "Use runner_source = file (air-gapped) or gomodule.") from None


def release_url(config: Config) -> str:
    return f"{config.runner_release_url.rstrip('/')}/v{config.runner_version}"


def check_signature(config: Config, sums: bytes) -> None:
    """Trust SUMS (release.sha256) only with a good signature by a key in runner_signing_keyring, and no other."""
    url = release_url(config) + "/release.sha256.asc"
    keyring = Path(config.runner_signing_keyring).expanduser()
    signature = _fetch(url, missing=f"gitlab-runner {config.runner_version} has no signature release.sha256.asc, "
                                    "and runner_signing_keyring asks for one: not trusting its checksums")
    try:
        signatures.verify(keyring, signature, sums)
    except signatures.BadSignature as e:
        raise RunnerSourceError(f"the signature {url} does not verify with runner_signing_keyring {keyring}: {e}. "
                                "Its checksums are not trusted; no binary was downloaded or used.") from None
    processes.say(f"runner: release.sha256 of {config.runner_version} is signed by a key in {keyring}")


def published_sha256(config: Config, arch: str) -> str:
    raw = _fetch(release_url(config) + "/release.sha256")
    if config.runner_signing_keyring:
        check_signature(config, raw)
    sums = raw.decode()
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*./").endswith(f"binaries/gitlab-runner-linux-{arch}"):
            return parts[0]
    raise RunnerSourceError(f"release.sha256 of gitlab-runner {config.runner_version} lists no linux-{arch} binary")


def from_release(config: Config, arch: str) -> Path:
    dest = cache_dir() / "runner" / "release" / config.runner_version / f"gitlab-runner-{arch}"
    want = published_sha256(config, arch)
    if dest.exists() and sha256_of(dest) == want:
        return dest
    url = release_url(config) + f"/binaries/gitlab-runner-linux-{arch}"
    processes.say(f"runner: downloading {url}")
    data = _fetch(url)
    have = hashlib.sha256(data).hexdigest()
    if have != want:
        raise RunnerSourceError(f"checksum mismatch for {url}: published {want}, downloaded {have}. Nothing was installed.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.rename(dest)
    return dest


# --- source: gomodule -------------------------------------------------------
# gitlab-runner and its helper built from the module the Go proxy serves. Where
# the proxy refuses a dependency, that one module is replaced (a go.mod `replace`)
# by this project's module of that path (runner_go_replacements/, each README line
# says what it turns off).

GO_REPLACEMENTS = Path(__file__).resolve().parent / "runner_go_replacements"
# The list of replaced modules beside a built runner (file name kept: runner caches made earlier hold it).
REPLACED_LIST = "STANDINS"
THIRD_PARTY = Path(__file__).resolve().parent.parent.parent / "shared" / "third_party"  # beside a clone
HELPER_PACKAGE = "./apps/gitlab-runner-helper"


def gomodule_ldflags(version: str, module_version: str) -> str:
    """Stripped, with the version fields gitlab-runner's own release build sets (`--version` shows them).
    Revision and build time come from the module's pseudo-version (vX.Y.Z-0.YYYYMMDDhhmmss-REVISION)."""
    pkg = f"{MODULE}/common"
    _, stamp, revision = module_version.rsplit("-", 2) if module_version.count("-") >= 2 else ("", "", "unknown")
    stamp = stamp.rpartition(".")[2]
    built = (f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}+00:00"
             if len(stamp) == 14 and stamp.isdigit() else "unknown")
    return (f"-s -w -X {pkg}.NAME=gitlab-runner -X {pkg}.VERSION={version} -X {pkg}.REVISION={revision[:8]} "
            f"-X {pkg}.BRANCH=v{version} -X {pkg}.BUILT={built}")


def replacement_modules() -> dict[str, Path]:
    """{module path: directory} of every Go replacement module this project has."""
    found = {}
    for gomod in sorted(GO_REPLACEMENTS.glob("*/go.mod")):
        for line in gomod.read_text().splitlines():
            if line.startswith("module "):
                found[line.split()[1]] = gomod.parent
    return found


def nested_module_dir(config: Config) -> Path | None:
    if config.runner_nested_module_dir:
        return Path(config.runner_nested_module_dir).expanduser()
    beside_clone = THIRD_PARTY / "gitlab-runner" / "helpers" / "runner_wrapper" / "api"
    return beside_clone if beside_clone.is_dir() else None


def _tree_digest(digest, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


def gomodule_key(config: Config, stamp: str = "") -> str:
    """Everything the build depends on: module version, Go, the replacement modules (their content, not
    their folder's name), the nested module, and the version stamped in (STAMP, or runner_version)."""
    recipe = gomodule_ldflags(stamp or config.runner_version, config.runner_module_version)
    digest = hashlib.sha256(f"{recipe}\0{processes.capture(['go', 'env', 'GOVERSION'])}".encode())
    _tree_digest(digest, GO_REPLACEMENTS)
    nested = nested_module_dir(config)
    if nested:
        _tree_digest(digest, nested)
    return digest.hexdigest()[:16]


def _refused(module: str, version: str) -> bool:
    """Whether the Go proxy refuses MODULE@VERSION (it then answers 403 'not available')."""
    try:
        processes.capture(["go", "mod", "download", "-json", f"{module}@{version}"])
        return False
    except CommandFailed as e:
        if "403" in str(e) or "not available" in str(e):
            return True
        raise RunnerSourceError(f"the Go module proxy did not answer for {module}@{version}: {e}") from None


def _use_replacements(work: Path, nested: Path | None) -> list[str]:
    """Point go.mod at this project's replacement for each refused requirement; return their module paths."""
    required = {r["Path"]: r["Version"] for r in json.loads(processes.capture(["go", "mod", "edit", "-json"], cwd=work))
                .get("Require") or []}
    if nested:
        processes.run(["go", "mod", "edit", f"-replace={NESTED_MODULE}={nested}"], cwd=str(work), quiet=True)
    else:  # use the published version (where the proxy serves it)
        processes.run(["go", "mod", "edit", f"-dropreplace={NESTED_MODULE}"], cwd=str(work), quiet=True)
    used = []
    for module, directory in replacement_modules().items():
        if module in required and _refused(module, required[module]):
            processes.run(["go", "mod", "edit", f"-replace={module}={directory}"], cwd=str(work), quiet=True)
            used.append(module)
    return used


def from_gomodule(config: Config, arch: str, stamp: str = "") -> Path:
    """gitlab-runner and its helper for ARCH from the module at runner_module_version (its source must be
    runner_version). STAMP, for testing upgrades only: the same source stamped as version STAMP (`--version`,
    and so the helper name the runner expands, say STAMP). The Go proxy serves one gitlab-runner module and the
    release server is out of reach here, so this is the only runner of another version the tests can have; Go's
    build cache makes it a relink of the normal build. Cached beside it, keyed by the stamp too."""
    processes.require("go")
    module_version = config.runner_module_version
    dest = (cache_dir() / "runner" / "gomodule"
            / f"{module_version}-{gomodule_key(config, stamp)}{f'-stamped-{stamp}' if stamp else ''}")
    runner_bin = dest / f"gitlab-runner-{arch}"
    if runner_bin.exists():
        return runner_bin
    try:
        info = json.loads(processes.capture(["go", "mod", "download", "-json", f"{MODULE}@{module_version}"]))
    except (CommandFailed, json.JSONDecodeError) as e:
        raise RunnerSourceError(f"the Go module proxy did not give {MODULE}@{module_version}: {e}") from None
    src_version = (Path(info["Dir"]) / "VERSION").read_text().strip()
    if src_version != config.runner_version:
        raise RunnerSourceError(f"{MODULE}@{module_version} is gitlab-runner {src_version}, not {config.runner_version}: "
                                "set runner_module_version to the module version of that release")
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOOS="linux", GOARCH=arch)
    with tempfile.TemporaryDirectory(prefix="pipglr-runner-") as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(info["Dir"], work)
        for p in work.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        replaced = _use_replacements(work, nested_module_dir(config))
        stamped = f", stamped as version {stamp} (for testing upgrades)" if stamp else ""
        processes.say(f"runner: building gitlab-runner {src_version} ({module_version}){stamped} and its helper for "
                      f"{arch} from its Go module (takes minutes)"
                      + (f"; replacements for {len(replaced)} modules the proxy refuses: " + ", ".join(replaced)
                         if replaced else ""))
        out = Path(tmp) / "out"
        try:
            for package, name in ((".", "gitlab-runner"), (HELPER_PACKAGE, "gitlab-runner-helper")):
                processes.run(["go", "build", "-trimpath", "-ldflags", gomodule_ldflags(stamp or src_version,
                                                                                        module_version),
                               "-o", str(out / f"{name}-{arch}"), package], cwd=str(work), env=env, tail=400)
        except CommandFailed as e:
            refused = sorted(set(REFUSED.findall(str(e))))
            if any(module == NESTED_MODULE for module, _ in refused):
                raise RunnerSourceError(
                    f"gitlab-runner's nested module {NESTED_MODULE} is not in its module download and the Go proxy "
                    "refuses its published version: set runner_nested_module_dir to a copy of it (gitlab-runner's "
                    "helpers/runner_wrapper/api at the same release; ../shared/third_party beside a clone is used "
                    "when present).") from None
            if refused:
                raise RunnerSourceError(
                    f"the Go module proxy refuses {', '.join(m + '@' + v for m, v in refused)} "
                    "(\"403 Forbidden, This module version is not available\") and this project has no replacement "
                    f"for it (replacements: {GO_REPLACEMENTS}). Use runner_source = file or release.") from None
            last = "\n".join(str(e).splitlines()[-12:])
            raise RunnerSourceError(f"building gitlab-runner from its Go module failed:\n{last}") from None
        (out / REPLACED_LIST).write_text("".join(m + "\n" for m in replaced))
        dest.mkdir(parents=True, exist_ok=True)
        for f in out.iterdir():  # helper first, runner last: the runner's presence means the whole set is there
            if f.name != runner_bin.name:
                shutil.copy2(f, dest / f.name)
        shutil.copy2(out / runner_bin.name, runner_bin.with_suffix(".partial"))
        runner_bin.with_suffix(".partial").rename(runner_bin)
    return runner_bin


def helper_binary(runner_binary: Path, arch: str) -> Path | None:
    """The gitlab-runner-helper built with RUNNER_BINARY (gomodule source), if there is one."""
    helper = runner_binary.parent / f"gitlab-runner-helper-{arch}"
    return helper if helper.is_file() else None


def replaced_in(runner_binary: Path) -> list[str]:
    """The modules replaced in RUNNER_BINARY (gomodule source); empty for a real release."""
    listing = runner_binary.parent / REPLACED_LIST
    return listing.read_text().split() if listing.is_file() else []


def label_args(runner_binary: Path, source: str) -> list[str]:
    """Build arguments for the image labels that say where RUNNER_BINARY came from (io.pipglr.runner-source)
    and which modules are replaced in it (io.pipglr.runner-standins)."""
    return ["--build-arg", f"RUNNER_SOURCE={source}",
            "--build-arg", f"RUNNER_STANDINS={','.join(replaced_in(runner_binary)) or 'none'}"]


def replacements_note(runner_binary: Path) -> str | None:
    """What a build with RUNNER_BINARY should tell its user about replaced modules; None for a binary without any."""
    replaced = replaced_in(runner_binary)
    if not replaced:
        return None
    return ("NOTE this gitlab-runner is built from its Go module with replacements for modules the Go proxy refuses "
            f"({', '.join(replaced)}): native steps, the autoscaler executors and usage events are off. Where the "
            "release server is reachable, runner_source = release gives the official binary.")


SOURCES = {"file": from_file, "release": from_release, "gomodule": from_gomodule}


NO_FALLBACK = ("a nightly does not fall back to gomodule by itself (runner_source = auto): its tags would name a "
               "release build. Fix the release download, or pass --runner-source gomodule on purpose (the tags then "
               "end in -gomodule and the label io.pipglr.runner-source says gomodule).")


def obtain(config: Config, fallback: bool = True) -> tuple[str, dict[str, Path]]:
    """Return (source used, {arch: binary}) for every configured architecture.
    Without FALLBACK, `auto` stops after the official sources (file, release) instead of building from the Go
    module: what a nightly publishes under release tags must be what it says."""
    if config.runner_source != "auto":
        order = [config.runner_source]
    else:
        order = (["file"] if config.runner_file else []) + ["release"] + (["gomodule"] if fallback else [])
    problems = []
    for source in order:
        try:
            binaries = {arch: SOURCES[source](config, arch) for arch in config.arches}
        except RunnerSourceError as e:
            if config.runner_source != "auto":
                raise
            problems.append(f"{source}: {e}")
            processes.say(f"runner: source {source} cannot be used: {e}")
            continue
        processes.say(f"runner: using gitlab-runner {config.runner_version} from source '{source}'")
        return source, binaries
    raise RunnerSourceError("no gitlab-runner source worked (runner_source = auto):\n  " + "\n  ".join(problems)
                            + ("" if fallback else "\n" + NO_FALLBACK))
