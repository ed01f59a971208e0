"""pipglr.toml: every setting declared once, validated before any work starts.

Each Setting gives the TOML key, its type, default and help text; the CLI
derives one flag per setting from this table (see cli.py), so the config
file, the flags and `--help` can never drift apart.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import processes
from .errors import ConfigError

ARCHES = ("amd64", "arm64")
RUNNER_SOURCES = ("auto", "release", "file", "gomodule")
# gitlab-runner's Go module is tagged without a /vN suffix, so the proxy
# serves its releases as pseudo-versions of the release commits.
DEFAULT_RUNNER_MODULE_VERSION = "v1.11.1-0.20260903214710-fc1f1862bd91"


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    kind: type  # str, int, float, bool or list (of str)
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # returns a problem or None


def _matches(pattern: str, problem: str, optional: bool = False) -> Callable[[str], str | None]:
    """A check: the value must match PATTERN in full (OPTIONAL: or be empty), else PROBLEM."""
    def check(value: str) -> str | None:
        if optional and not value:
            return None
        return None if re.fullmatch(pattern, value) else problem
    return check


def _each_matches(pattern: str, problem: str, empty: str | None = None) -> Callable[[list[str]], str | None]:
    """A check of a list: every item must match PATTERN in full, else "'ITEM' PROBLEM"
    (EMPTY: the problem of an empty list; without it an empty list passes)."""
    def check(value: list[str]) -> str | None:
        if empty is not None and not value:
            return empty
        bad = next((item for item in value if not re.fullmatch(pattern, item)), None)
        return None if bad is None else f"{bad!r} {problem}"
    return check


def _file_holding(holds: Callable[[bytes], bool], problem: str) -> Callable[[str], str | None]:
    """A check of a file setting: empty, or a readable file whose bytes HOLDS accepts, else PROBLEM."""
    def check(value: str) -> str | None:
        if not value:
            return None
        try:
            data = Path(value).expanduser().read_bytes()
        except OSError as e:
            return f"cannot read it ({e.strerror})"
        return None if holds(data) else problem
    return check


def _platforms(value: list[str]) -> str | None:
    if not value:
        return "at least one platform is needed"
    for p in value:
        arch = p.removeprefix("linux/")
        if arch not in ARCHES:
            return f"unknown platform {p!r}; supported: " + ", ".join(f"linux/{a}" for a in ARCHES)
    return None


_IMAGE_NAME = r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._/-][a-z0-9]+)*)*"
_image_name = _matches(_IMAGE_NAME, "not a valid image name (lower case, no tag; e.g. localhost/pipglr)")


_tags = _each_matches(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "is not a valid image tag",
                      empty="at least one tag is needed")


_version = _matches(r"\d+\.\d+\.\d+", "expected a release number like 17.5.0 (without a leading v)")


def _repository(value: str) -> str | None:
    if value and _image_name(value):
        return "expected a repository such as registry.example.com:5000/group/pipglr (no tag)"
    return None


_hostport = _matches(r"[A-Za-z0-9.-]+:([1-9][0-9]{0,4})", "expected HOST:PORT, e.g. 0.0.0.0:8093", optional=True)


_sign_key = _file_holding(lambda data: b"ENCRYPTED" in data and b"PRIVATE KEY" in data,
                          "is not an encrypted sigstore/cosign private key (pipglr-build keygen makes one)")


_ca_bundle = _file_holding(lambda data: b"-----BEGIN CERTIFICATE-----" in data,
                           "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")


_HOST = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9._/-]+)?"


_registries = _each_matches(_HOST, "is not a registry host[:port]")


# _HOST has no "=": the pattern splits at the first one, as REGISTRY=MIRROR does.
_mirrors = _each_matches(f"(?:{_HOST})=(?:{_HOST})", "is not REGISTRY=MIRROR (e.g. docker.io=mirror.example.com:5000)")


_helper_reference = _matches(rf"{_IMAGE_NAME}:[A-Za-z0-9_][A-Za-z0-9_.-]*",
                             "expected an image reference with a tag, e.g. registry.example.com/helper:{arch}-v{version}")


def _helper(value: str) -> str | None:
    """An image reference with a tag once {arch} and {version} are filled in."""
    return _helper_reference(value.replace("{arch}", "x86_64").replace("{version}", "1.2.3"))


def _directory(value: str) -> str | None:
    if value and not Path(value).expanduser().is_dir():
        return "no such directory"
    return None


PULL_POLICIES = ("always", "if-not-present", "never")


def _pull_policy(value: list[str]) -> str | None:
    if not value:
        return "at least one policy is needed"
    for p in value:
        if p not in PULL_POLICIES:
            # register says the same of PIPGLR_PULL_POLICY, which arrives at run time
            return f"{p!r} is not a pull policy ({', '.join(PULL_POLICIES)})"
    return None if len(set(value)) == len(value) else "a policy is listed twice"


_url = _matches(r"https?://[^\s/]+(/\S*)?", "expected an http:// or https:// URL")


_SHA256 = r"[0-9a-f]{64}"
_sha256 = _matches(rf"{_SHA256}|(amd64|arm64)={_SHA256}(,(amd64|arm64)={_SHA256})*",
                   "expected 64 lower-case hex digits, or amd64=HASH,arm64=HASH", optional=True)


def _openpgp_public_key(data: bytes) -> bool:
    """ASCII-armored, binary (gpg --export) or a keybox (.kbx)."""
    return b"-----BEGIN PGP PUBLIC KEY BLOCK-----" in data or data[8:12] == b"KBXf" or bool(data and data[0] & 0x80)


_keyring = _file_holding(_openpgp_public_key, "holds no OpenPGP public key (armored, binary or keybox), "
                         "e.g. GitLab's key from `gpg --export`")


def _uid(value: int) -> str | None:
    if not 1 <= value <= 65535:
        return "expected a UID between 1 and 65535"
    return None


def _stop_timeout(value: int) -> str | None:
    if not 10 <= value <= 86400:
        return "expected seconds between 10 and 86400"
    return None


def _pids_limit(value: int) -> str | None:
    if value != 0 and value < 512:
        return "expected 0 (no limit) or at least 512 tasks (systemd, podman and the runner need a few hundred)"
    return None


def _cpus(value: float) -> str | None:
    # NaN and infinities fail the comparison too.
    if value != 0 and not 0.1 <= value <= 1024:
        return "expected 0 (no limit) or a number of CPUs between 0.1 and 1024, e.g. 2 or 1.5"
    return None


_MEMORY = re.compile(r"([1-9][0-9]*)([kmg])", re.IGNORECASE)
_MEMORY_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MEMORY_MIN = "512m"


def memory_bytes(value: str) -> int:
    """A memory setting (e.g. 4g, as podman's --memory takes it) in bytes."""
    number, unit = _MEMORY.fullmatch(value).groups()
    return int(number) * _MEMORY_UNITS[unit.lower()]


def _memory(value: str) -> str | None:
    if value and (not _MEMORY.fullmatch(value) or memory_bytes(value) < memory_bytes(_MEMORY_MIN)):
        return (f"expected empty (no limit) or a size with the unit k, m or g of at least {_MEMORY_MIN}, e.g. 4g "
                "(systemd, podman, the runner and every job share it)")
def _job_pids_limit(value: int) -> str | None:
    if value != 0 and not 64 <= value <= 4194304:
        return "expected 0 (no limit) or between 64 and 4194304 tasks"
    return None


_packages = _each_matches(r"[a-z0-9][a-z0-9+.-]+", "is not a Debian package name")


_suite = _matches(r"[a-z]+", "expected a Debian suite name such as trixie")


def on_calendar_problem(value: str) -> str | None:
    """Ask systemd itself whether VALUE is an OnCalendar expression."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return "cannot check it: systemd-analyze is missing (install the Debian package systemd)"
    proc = processes.call([tool, "calendar", value])
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "rejected"
        return f"not a systemd OnCalendar value ({reason}); examples: daily, weekly, *-*-* 03:00:00"
    return None


# An age that reaches the image otherwise (the PRUNE_AGE build argument, a drop-in) is checked by pipglr-prune
# with the same rule and words (tests/test_prune_decisions.py holds the two alike).
prune_age_problem = _matches(r"[1-9][0-9]{0,5}[smhd]", "not a whole number with a unit s, m, h or d, e.g. 72h or 3d")


SETTINGS: tuple[Setting, ...] = (
    Setting("image_name", str, "localhost/pipglr", "Name of the built image (without tag).", _image_name),
    Setting("tags", list, ["latest"], "Tags given to the image (a manifest list when several platforms).", _tags),
    Setting("platforms", list, ["linux/amd64"], "Platforms to build: linux/amd64, linux/arm64.", _platforms),
    Setting("base_suite", str, "trixie", "Debian suite bootstrapped with mmdebstrap for the base.", _suite),
    Setting("base_mirror", str, "http://deb.debian.org/debian", "Debian mirror used by mmdebstrap and apt.", _url),
    Setting("base_updates", bool, True, "Also install from SUITE-updates (base_mirror) and SUITE-security "
            "(base_security_mirror), as a Debian stable system does; false for sid or testing."),
    Setting("base_keyring", str, "/usr/share/keyrings/debian-archive-keyring.gpg",
            "The archive's signing keys (debian-archive-keyring): mmdebstrap checks the packages with it, and the "
            "build checks each suite's InRelease with it before trusting what it says changed."),
    Setting("base_security_mirror", str, "http://deb.debian.org/debian-security",
            "Debian security mirror for SUITE-security (base_updates).", _url),
    Setting("base_image", str, "", "Use this Debian-family image reference as base instead of bootstrapping."),
    Setting("runner_version", str, "19.4.0", "gitlab-runner release to install.", _version),
    Setting("runner_source", str, "auto", "Where gitlab-runner comes from: auto, release, file, gomodule."),
    Setting("runner_release_url", str, "https://gitlab-runner-downloads.s3.amazonaws.com",
            "Where runner releases are downloaded from (v{version}/binaries/... below it); a mirror works.", _url),
    Setting("runner_signing_keyring", str, "", "OpenPGP key file with GitLab's release signing key: the release "
            "source then refuses a release.sha256 whose signature (release.sha256.asc) does not verify with it "
            "(empty: checksums only).", _keyring),
    Setting("runner_file", str, "", "Local gitlab-runner binary (runner_source = file); {arch} is replaced."),
    Setting("runner_sha256", str, "", "SHA256 the local gitlab-runner file must have (or amd64=HASH,arm64=HASH).", _sha256),
    Setting("helper_sha256", str, "", "SHA256 of the gitlab-runner-helper-{arch} file beside runner_file (or "
            "amd64=HASH,arm64=HASH): with runner_source = file, a helper there is built into the helper image only "
            "when it matches.", _sha256),
    Setting("runner_module_version", str, DEFAULT_RUNNER_MODULE_VERSION,
            "Go module version of gitlab.com/gitlab-org/gitlab-runner for runner_source = gomodule."),
    Setting("runner_nested_module_dir", str, "", "For runner_source = gomodule: a directory holding gitlab-runner's "
            "nested module helpers/runner_wrapper/api (its module download lacks it). Empty: ../shared/third_party "
            "beside the clone when there is one, else the published version.", _directory),
    Setting("helper_image", str, "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:{arch}-v{version}",
            "helper_image register writes into config.toml ({arch}: x86_64/arm64; {version}: written as "
            "${CI_RUNNER_VERSION}, which gitlab-runner expands to its own version at each job, so the helper follows "
            "the runner after an upgrade; the build tags its helper with runner_version); a helper that matches the "
            "runner avoids 'permission container ... exit code 127'.", _helper),
    Setting("pull_policy", list, ["always", "if-not-present"], "gitlab-runner's pull policies for job, service "
            "and helper images, tried in order (always, if-not-present, never); the default falls back to the local "
            "image when the registry cannot be reached.", _pull_policy),
    Setting("prune_interval", str, "daily", "systemd OnCalendar value: how often nested storage is pruned.",
            on_calendar_problem),
    Setting("prune_age", str, "72h", "The prune removes only images, cache volumes and stopped containers unused for "
            "this long (s, m, h or d, e.g. 72h or 3d); never the runner's helper image.", prune_age_problem),
    Setting("publish_repository", str, "", "Where `nightly` pushes, e.g. registry.example.com/group/pipglr "
            "(empty: build and verify only).", _repository),
    Setting("publish_tls_verify", bool, True, "Check the registry's TLS certificate (false only for a plain-HTTP "
            "test registry)."),
    Setting("publish_cert_dir", str, "", "Directory with the CA certificate (ca.crt) of a private registry."),
    Setting("publish_authfile", str, "", "containers-auth.json with the registry login (podman login --authfile)."),
    Setting("publish_sign_key", str, "", "Encrypted sigstore private key (PREFIX.private from `pipglr-build keygen`, "
            "or cosign.key) with its .pub beside it: `nightly` signs every tag it pushes, signatures stored in the "
            "registry (empty: unsigned). Its passphrase: publish_sign_passphrase_file or $PIPGLR_SIGN_PASSPHRASE.",
            _sign_key),
    Setting("publish_sign_passphrase_file", str, "", "File holding the signing key's passphrase (else "
            "$PIPGLR_SIGN_PASSPHRASE); never given on a command line."),
    Setting("ca_bundle", str, "", "PEM file of a private CA to trust at build time (a GitLab behind it); "
            "at run time use PIPGLR_CA_BUNDLE instead.", _ca_bundle),
    Setting("search_registries", list, ["docker.io"], "Registries the nested podman searches for short job image "
            "names (unqualified-search-registries).", _registries),
    Setting("registry_mirrors", list, [], "Mirrors for the nested podman, each REGISTRY=MIRROR "
            "(e.g. docker.io=mirror.example.com:5000).", _mirrors),
    Setting("proxy_jobs", bool, True, "Whether `register` writes the HTTP proxy given to it (HTTP_PROXY, HTTPS_PROXY, "
            "NO_PROXY) into the runner's config.toml `environment`, so jobs (and the helper's clone, cache and "
            "artifacts) use it too: they cannot reach a GitLab behind it otherwise. The jobs can read it, credentials "
            "included (PIPGLR_PROXY_JOBS at `runlabel register` overrides it)."),
    Setting("session_server_listen", str, "", "Interactive web terminal: gitlab-runner's session_server "
            "listen_address, e.g. 0.0.0.0:8093, published on the host by `runlabel run` (empty: off).", _hostport),
    Setting("session_server_advertise", str, "", "The host:port GitLab uses to reach the session server "
            "(default: the listen address).", _hostport),
    Setting("metrics_listen", str, "", "gitlab-runner's Prometheus metrics (its listen_address, /metrics), e.g. "
            "0.0.0.0:9252, published on the host by `runlabel run` and the quadlet (empty: off).", _hostport),
    Setting("stop_timeout", int, 600, "Seconds running jobs get to finish when pipglr stops (podman stop, host "
            "shutdown): gitlab-runner's graceful window; the outer container waits 30 s longer.", _stop_timeout),
    Setting("pids_limit", int, 0, "Task limit of the whole outer container (systemd, podman, the runner and every "
            "job), where the host delegates the pids controller: 0 = none, as upstream pipglr (podman's default "
            "is 2048; -1 is refused: podman then writes pids.max, which fails where pids is not delegated).",
            _pids_limit),
    Setting("cpus", float, 0.0, "CPU limit of the whole outer container (podman run --cpus; systemd, podman, the "
            "runner and every job share it), where the host delegates the cpu controller: 0 = none, e.g. 2 or 1.5.",
            _cpus),
    Setting("memory", str, "", "Memory limit of the whole outer container (podman run --memory; shared like cpus), "
            "where the host delegates the memory controller: empty = none, e.g. 4g (k, m or g; at least 512m).",
            _memory),
    Setting("job_pids_limit", int, 4096, "Task limit of each CI job container (the nested podman's pids_limit), "
            "where the outer container has the pids controller (the host delegates it); without it jobs run "
            "with none and the journal says so at boot. 0 = none.", _job_pids_limit),
    Setting("nested_privileged", bool, True, "Whether CI jobs may run privileged nested containers."),
    Setting("podman_uid", int, 1000, "UID (and GID) of the inner user podman.", _uid),
    Setting("runner_uid", int, 1001, "UID (and GID) of the inner user runner.", _uid),
    Setting("extra_packages", list, [], "Extra Debian packages installed into the image.", _packages),
)
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Config:
    image_name: str
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    base_suite: str
    base_mirror: str
    base_updates: bool
    base_keyring: str
    base_security_mirror: str
    base_image: str
    runner_version: str
    runner_source: str
    runner_release_url: str
    runner_signing_keyring: str
    runner_file: str
    runner_sha256: str
    helper_sha256: str
    runner_module_version: str
    runner_nested_module_dir: str
    helper_image: str
    pull_policy: tuple[str, ...]
    prune_interval: str
    prune_age: str
    publish_repository: str
    publish_tls_verify: bool
    publish_cert_dir: str
    publish_authfile: str
    publish_sign_key: str
    publish_sign_passphrase_file: str
    ca_bundle: str
    search_registries: tuple[str, ...]
    registry_mirrors: tuple[str, ...]
    proxy_jobs: bool
    session_server_listen: str
    session_server_advertise: str
    metrics_listen: str
    stop_timeout: int
    pids_limit: int
    cpus: float
    memory: str
    job_pids_limit: int
    nested_privileged: bool
    podman_uid: int
    runner_uid: int
    extra_packages: tuple[str, ...]

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(p.removeprefix("linux/") for p in self.platforms)

    @property
    def image_ref(self) -> str:
        return f"{self.image_name}:{self.tags[0]}"


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    """Turn a TOML or CLI value into the setting's type, or raise ConfigError."""
    kind = setting.kind
    if isinstance(value, str) and origin == "flag":
        if kind is list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif kind is bool:
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{setting.key}: expected true or false, got {value!r} ({origin})")
            value = lowered in ("true", "1", "yes")
        elif kind is int:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{setting.key}: expected a number, got {value!r} ({origin})") from None
        elif kind is float:
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{setting.key}: expected a number such as 2 or 1.5, got {value!r} ({origin})") \
                    from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # TOML: cpus = 2
    ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)) if kind is list else (
        isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
    if not ok:
        raise ConfigError(f"{setting.key}: expected {kind.__name__}, got {value!r} ({origin})")
    return value


def load(path: Path | None, overrides: dict[str, str] | None = None) -> Config:
    """Read PATH (if given), apply CLI overrides, validate everything."""
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    origins: dict[str, str] = {s.key: "default" for s in SETTINGS}
    if path is not None:
        try:
            # tomllib, not the toml package: toml accepts an unclosed array
            # ['a'\n and silently drops its last character.
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; create it or pass --config FILE") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        for key, value in data.items():
            setting = SETTINGS_BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(SETTINGS_BY_KEY)}")
            values[key] = _coerce(setting, value, str(path))
            origins[key] = str(path)
    for key, value in (overrides or {}).items():
        values[key] = _coerce(SETTINGS_BY_KEY[key], value, "flag")
        origins[key] = "flag"

    for setting in SETTINGS:
        if setting.check is not None:
            problem = setting.check(values[setting.key])
            if problem:
                raise ConfigError(f"{setting.key} = {values[setting.key]!r} ({origins[setting.key]}): {problem}")
    _check_together(values)

    values["platforms"] = sorted({"linux/" + p.removeprefix("linux/") for p in values["platforms"]})
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _check_together(v: dict[str, Any]) -> None:
    if v["runner_source"] not in RUNNER_SOURCES:
        raise ConfigError(f"runner_source = {v['runner_source']!r}: expected one of {', '.join(RUNNER_SOURCES)}")
    if v["runner_source"] == "file" and not (v["runner_file"] and v["runner_sha256"]):
        raise ConfigError("runner_source = 'file' needs both runner_file (the binary) and runner_sha256 "
                          "(its expected SHA256, from the release's checksum file)")
    if v["session_server_advertise"] and not v["session_server_listen"]:
        raise ConfigError("session_server_advertise needs session_server_listen (the address to listen on)")
    ports = [v[key].rpartition(":")[2] for key in ("session_server_listen", "metrics_listen") if v[key]]
    if len(ports) == 2 and ports[0] == ports[1]:
        raise ConfigError(f"session_server_listen and metrics_listen both use port {ports[0]}: the host can "
                          "publish a port for one of them only")
    if v["podman_uid"] == v["runner_uid"]:
        raise ConfigError("podman_uid and runner_uid must differ")
