"""render: pipglr.toml -> a complete build context (Containerfile + files).

Every template is a file under pipglr_builder/templates/ (Containerfile.j2,
systemd/, files/, labels/, quadlet/; the clone's top level links to them),
rendered with StrictUndefined; this module only prepares the values they
need. Same inputs give byte-identical output.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from pathlib import Path, PurePosixPath

import jinja2

from . import processes
from .config import SETTINGS_BY_KEY, Config
from .errors import ConfigError, PipglrError, ToolMissing

TEMPLATES = Path(__file__).resolve().parent / "templates"
PROJECT = Path(__file__).resolve().parent.parent  # the clone, when running from one
# The nested podman's storage (volume pipglr-storage) and, inside it, the directory of its named
# volumes, where volume pipglr-cache is mounted: the jobs' per-project cache volumes live there,
# apart from images, and need no volume_path setting (podman ignores a changed one on old storage).
PODMAN_HOME = "/home/podman"
NESTED_STORAGE = f"{PODMAN_HOME}/.local/share/containers"
NESTED_VOLUMES = f"{NESTED_STORAGE}/storage/volumes"
# pipglr's runtime folders in the outer container (tmpfiles-pipglr.conf makes them). RUN_DIR belongs to
# podman: the nested podman's API socket (user podman's podman.socket, moved by a drop-in: runner's
# DOCKER_HOST). RUN_ROOT_DIR is written by root only (podman cannot plant a symbolic link there): the
# environment file pipglr-env writes at boot (the log levels given at `runlabel run`), which the services
# read, and the helper names the prune keeps.
RUN_DIR = "/run/pipglr"
NESTED_SOCKET = f"{RUN_DIR}/podman.sock"
RUN_ROOT_DIR = "/run/pipglr-root"
# The helper image this image carries (the context's helper/: names, image-id, the archive) and loads
# into the nested storage at boot (pipglr-helper.service, files/load-helper).
HELPER_DIR = "/usr/share/pipglr/helper"
HELPER_ARCHIVE = f"{HELPER_DIR}/helper.tar.zst"
# The image's own scripts (files/), where they find each other.
LIBEXEC_DIR = "/usr/local/libexec/pipglr"
RUN_ENV = f"{RUN_ROOT_DIR}/env"
# The HTTP proxy given at run time, for gitlab-runner and the nested podman (files/proxy-env): root's,
# readable by group podman too (podman's user manager reads it for podman.service), by no job.
PROXY_ENV = f"{RUN_ROOT_DIR}/proxy.env"
# The nested podman's networks: its default one and the pool of the jobs' own networks (containers.conf
# pins it): never through the proxy (NO_PROXY), so a job reaches its services by address directly.
JOB_SUBNETS = ("10.88.0.0/16", "10.89.0.0/16")
# The outer container's own cgroup (cgroupns): its cgroup.controllers say what the host delegated.
CGROUP_ROOT = "/sys/fs/cgroup"
# The pipglr-state volume: runner's live config.toml and .runner_system_id.
STATE_DIR = "/var/lib/pipglr"
CONFIG_SECRET = "/run/secrets/config.toml"  # where podman mounts the config.toml secret
# gitlab-runner's live config on the pipglr-state volume (seeded from the config.toml secret by runner-config).
LIVE_CONFIG = f"{STATE_DIR}/config.toml"
# podman's health check of the outer container ("can this host run jobs?": files/healthcheck), set where
# the container is made (labels/run, the quadlet): buildah drops a HEALTHCHECK from an OCI image, the
# format this tool builds. Failures count after START_PERIOD (boot); RETRIES in a row make it unhealthy.
HEALTH = {"cmd": f"{LIBEXEC_DIR}/healthcheck", "interval": "30s", "timeout": "30s", "retries": 3,
          "start_period": "120s"}
# User podman's uid and runtime directory in an image built with the default podman_uid (as the tests
# build it); for an image built otherwise read its io.pipglr.podman-uid label.
DEFAULT_PODMAN_UID = SETTINGS_BY_KEY["podman_uid"].default
PODMAN_RUNTIME_DIR = f"/run/user/{DEFAULT_PODMAN_UID}"
# After the runner's graceful window: systemd stops the other units of the outer container.
OUTER_STOP_MARGIN = 30
# render writes this file into every build context, and replaces only a directory holding it.
MARKER = ".pipglr-build-context"
# Instances (several pipglr containers for one user, e.g. one per GitLab): `podman container runlabel --name
# NAME` gives the container, its volumes, its secret and register's file names of their own; the default
# instance keeps the names every label used before (a secret named config.toml, not pipglr-config.toml).
DEFAULT_INSTANCE = "pipglr"
INSTANCE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # podman's rule for container and volume names
# The rule in words, said alike by the tool, the runlabels and the doctor (each refuses a bad name itself).
INSTANCE_NAME_RULE = "starts with a letter or digit, then letters, digits, _ . or - only"
RUNLABELS = ("register", "setupstorage", "setupcache", "dumpconfig", "run", "doctor", "unregister", "logs", "preload",
             "resetcache")

# Installed into the image on top of the Debian base. catatonit: the init podman puts in a job container
# asked for one (gitlab-runner's FF_USE_INIT_WITH_DOCKER_EXECUTOR, Docker's HostConfig.Init); Debian's
# package links it as /usr/libexec/podman/catatonit, where podman looks (podman only recommends it).
PACKAGES = (
    "aardvark-dns", "ca-certificates", "catatonit", "curl", "dbus", "dbus-user-session", "iproute2", "jq",
    "libpam-systemd", "nftables", "passt", "podman", "crun", "procps", "systemd", "systemd-sysv", "uidmap",
)

# The image's package list for scanners ("NAME VERSION" lines, installed packages only), and the query making it.
PACKAGE_LIST = "/usr/share/pipglr/packages.txt"
PACKAGE_QUERY = ("dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' "
                 "| awk '$1 == \"ii\" {print $2, $3}' | LC_ALL=C sort")

# Units that fail or make no sense inside a container.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "dev-hugepages.mount", "fstrim.timer", "getty.target", "console-getty.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "sys-fs-fuse-connections.mount", "sys-kernel-config.mount",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "systemd-binfmt.service",
    "systemd-firstboot.service", "systemd-modules-load.service", "systemd-remount-fs.service",
    "systemd-sysctl.service", "systemd-udevd.service", "systemd-udev-trigger.service",
)

# What a privileged job may do: one text, said by register (files/register) and by the doctor on the host.
PRIVILEGED_WARNING = ("a privileged job gets every capability and no syscall filter between it and the host's kernel "
                      "(inside your user namespace). Fine for your own trusted projects, wrong for a shared runner: "
                      "build with --nested-privileged false.")
# Inside the outer container IDs 0..65538 exist (host subuid count 65539).
OUTER_ID_COUNT = 65539
JOB_ID_COUNT = 65536
# Group podman-api (the API socket's group) takes the outer namespace's last ID, which /etc/subgid then
# leaves out: no job process can hold it. Jobs still get GIDs 0..65535: their 0 is podman's own GID.
PODMAN_API_GID = OUTER_ID_COUNT - 1


def subid_ranges(excluded: set[int]) -> list[tuple[int, int]]:
    """(start, count) ranges covering 1..65538 minus EXCLUDED (65536 IDs without root, podman and runner)."""
    ranges: list[tuple[int, int]] = []
    start = 1
    for uid in sorted(excluded | {OUTER_ID_COUNT}):
        if uid > start:
            ranges.append((start, uid - start))
        start = max(start, uid + 1)
    return ranges


def subid_file(user: str, excluded: set[int]) -> str:
    ranges = subid_ranges(excluded)
    # A job's IDs 1..65535 come from these ranges (its 0 is the user's own ID).
    assert sum(count for _, count in ranges) >= JOB_ID_COUNT - 1, ranges
    return "".join(f"{user}:{start}:{count}\n" for start, count in ranges)


def containerfile_label(text: str) -> str:
    """Quote a runlabel for a LABEL line so buildah keeps `$IMAGE` etc. for run time."""
    return text.strip().replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def _git(*args: str) -> str:
    if not (PROJECT / ".git").exists():  # installed (pip/pipx): no clone to ask
        return "unknown"
    try:
        out = processes.call(["git", "-C", str(PROJECT), *args])
    except (OSError, ToolMissing):  # no git on this host: the label says unknown, as without a clone
        return "unknown"
    return (out.returncode == 0 and out.stdout.strip()) or "unknown"


def instance_names(name: str) -> dict[str, str]:
    """The host's names for instance NAME: container (and hostname), volumes, the config secret as podman's
    --secret takes it (mounted as /run/secrets/config.toml whatever its name), and register's file in the
    current directory. NAME may be podman's placeholder $NAME (a runlabel's instance branch)."""
    default = name == DEFAULT_INSTANCE
    secret = "config.toml" if default else f"{name}-config.toml"
    return {"container": name, "storage": f"{name}-storage", "cache": f"{name}-cache", "state": f"{name}-state",
            "secret": secret if default else f"{secret},target=config.toml", "secret_name": secret,
            "config_file": secret}


def check_instance_name(name: str) -> str:
    if not INSTANCE_NAME.fullmatch(name):
        raise ConfigError(f"instance name {name!r}: it {INSTANCE_NAME_RULE} (podman's rule for container and volume "
                          "names)")
    return name


# What a command may hold to run in instance-label.sh.j2 (eval, in double quotes): words of these
# characters, and podman's $IMAGE, $NAME and $PWD.
_PLAIN_COMMAND = re.compile(r"[A-Za-z0-9 _./:=,@+-]*")


def _shlex_quoted(text: str) -> str:
    """TEXT as one double-quoted word for podman's splitter (github.com/google/shlex: \\ escapes any character)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def instance_label(default: str, instance: str) -> str:
    """The runlabel running DEFAULT (the default instance's command) or INSTANCE (its $NAME form), chosen at
    run time by templates/instance-label.sh.j2; DEFAULT alone when the two are the same (no name in it).

    podman splits a label into words, replaces $NAME and $IMAGE in each, joins them with spaces, expands
    $PWD and $HOME (any other $VAR or $@ becomes empty) and splits again (generateRunlabelCommand, podman
    5.4): so the script goes in as one word quoted twice, and holds no $ but those and $( and $". The
    trailing `pipglr` is sh's $0 (its name in messages); the words after `--` follow it."""
    if default == instance:
        return default
    for command in (default, instance):
        plain = command.replace("$IMAGE", "").replace("$NAME", "").replace("$PWD", "")
        assert _PLAIN_COMMAND.fullmatch(plain), f"{command!r} cannot go through eval in double quotes"
    template = _environment().get_template("instance-label.sh.j2")
    lines = template.render(default=default, instance=instance, name_rule=INSTANCE_NAME_RULE)
    script = " ".join(line.strip() for line in lines.splitlines() if line.strip())
    assert not re.search(r"\$(?![(\"]|IMAGE|NAME|PWD)", script), script
    return f"sh -c {_shlex_quoted(_shlex_quoted(script))} {DEFAULT_INSTANCE}"


def git_revision() -> str:
    """This project's commit, for the image's revision label (passed at build time)."""
    return _git("rev-parse", "--short=12", "HEAD")


def without_credentials(url: str) -> str:
    """URL without user:password@ (a CI job token or a personal token must never reach a label)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def git_source() -> str:
    """Where this project's source lives, for the image's source label."""
    return without_credentials(_git("remote", "get-url", "origin"))


def base_image_for(config: Config, arch: str) -> str:
    from .base_image import base_tag  # late import: base pulls in build tooling
    return config.base_image or base_tag(config, arch)


def cpus_flag(cpus: float) -> str:
    """The cpus setting as podman's --cpus value: 2, 1.5 ("" when unset)."""
    return format(cpus, ".15g") if cpus else ""


def outer_limits(config: Config) -> list[tuple[str, str, str]]:
    """The limits set on the outer container: (setting, value, the cgroup controller the host must delegate)."""
    limits = [("cpus", cpus_flag(config.cpus), "cpu"), ("memory", config.memory, "memory"),
              ("pids_limit", str(config.pids_limit) if config.pids_limit else "", "pids")]
    return [limit for limit in limits if limit[1]]


def template_values(config: Config) -> dict:
    env = _environment()
    values = {
        "podman_uid": config.podman_uid,
        "runner_uid": config.runner_uid,
        "prune_interval": config.prune_interval,
        "prune_age": config.prune_age,
        "nested_privileged": "true" if config.nested_privileged else "false",
        "stop_timeout": config.stop_timeout,
        "outer_stop_timeout": config.stop_timeout + OUTER_STOP_MARGIN,
        "pids_limit": config.pids_limit,
        "cpus": cpus_flag(config.cpus),
        "memory": config.memory,
        "outer_limits": outer_limits(config),
        "job_pids_limit": config.job_pids_limit,
        "cgroup_root": CGROUP_ROOT,
        "runner_version": config.runner_version,
        "runner_release_url": config.runner_release_url,
        "base_suite": config.base_suite,
        "helper_image": config.helper_image,
        "pull_policy": config.pull_policy,
        "search_registries": config.search_registries,
        "session_server_listen": config.session_server_listen,
        "session_server_advertise": config.session_server_advertise or config.session_server_listen,
        "session_server_port": config.session_server_listen.rpartition(":")[2],
        "metrics_listen": config.metrics_listen,
        "metrics_port": config.metrics_listen.rpartition(":")[2],
        "registry_mirrors": [tuple(m.split("=", 1)) for m in config.registry_mirrors],
        "base_image": base_image_for(config, config.arches[0]),
        "packages": sorted(set(PACKAGES) | set(config.extra_packages)),
        "package_list": PACKAGE_LIST,
        "package_list_dir": str(PurePosixPath(PACKAGE_LIST).parent),
        "package_query": PACKAGE_QUERY,
        "masked_units": MASKED_UNITS,
        "outer_id_count": OUTER_ID_COUNT,
        "podman_api_gid": PODMAN_API_GID,
        "nested_storage": NESTED_STORAGE,
        "nested_volumes": NESTED_VOLUMES,
        "nested_socket": NESTED_SOCKET,
        "run_dir": RUN_DIR,
        "run_env": RUN_ENV,
        "proxy_env": PROXY_ENV,
        "job_subnets": JOB_SUBNETS,
        "proxy_jobs": "true" if config.proxy_jobs else "false",
        "run_root_dir": RUN_ROOT_DIR,
        "privileged_warning": PRIVILEGED_WARNING,
        "instance_name_rule": INSTANCE_NAME_RULE,
        "libexec_dir": LIBEXEC_DIR,
        "state_dir": STATE_DIR,
        "config_secret": CONFIG_SECRET,
        "podman_home": PODMAN_HOME,
        "live_config": LIVE_CONFIG,
        "health": HEALTH,
        "helper_dir": HELPER_DIR,
        "helper_archive": HELPER_ARCHIVE,
    }
    # runlabels: each label's command for the default instance; instance_runlabels: its form for
    # `runlabel --name NAME`; label_texts: what the image's label holds (instance_label picks one at run time).
    values["runlabels"] = {name: env.get_template(f"labels/{name}").render(values, instance=instance_names(
        DEFAULT_INSTANCE)).strip() for name in RUNLABELS}
    values["instance_runlabels"] = {name: env.get_template(f"labels/{name}").render(values, instance=instance_names(
        "$NAME")).strip() for name in RUNLABELS}
    values["label_texts"] = {name: instance_label(values["runlabels"][name], values["instance_runlabels"][name])
                             for name in RUNLABELS}
    values["labels"] = {name: containerfile_label(text) for name, text in values["label_texts"].items()}
    return values


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_file(config: Config, name: str) -> str:
    """One template (e.g. files/doctor) rendered for CONFIG."""
    return _environment().get_template(name).render(template_values(config))


def prepare_output(output: Path) -> None:
    """Make OUTPUT an empty directory; replace only what render made before (it holds MARKER)."""
    if output.exists() and not output.is_dir():
        raise PipglrError(f"{output} exists and is not a directory: choose another --output")
    if output.is_dir() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise PipglrError(f"{output} is not empty and was not written by `pipglr-build render` "
                              f"(it has no {MARKER}): nothing was changed. Choose a new or empty directory.")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by pipglr-build render; the next render replaces this directory\n")


def render(config: Config, output: Path, runner_binaries: dict[str, Path] | None = None) -> Path:
    """Write the build context into OUTPUT (replacing what render put there before, nothing else)."""
    env = _environment()
    values = template_values(config)
    prepare_output(output)

    (output / "Containerfile").write_text(env.get_template("Containerfile.j2").render(values))
    for folder in ("systemd", "files"):
        for src in sorted((TEMPLATES / folder).iterdir()):
            dest = output / src.name
            dest.write_text(env.get_template(f"{folder}/{src.name}").render(values))
            dest.chmod(src.stat().st_mode & 0o777)
    ca = Path(config.ca_bundle).expanduser().read_text() if config.ca_bundle else ""
    (output / "custom-ca.crt").write_text(ca)  # empty: no CA added at build time
    excluded = {0, config.podman_uid, config.runner_uid}
    (output / "subuid").write_text(subid_file("podman", excluded))
    (output / "subgid").write_text(subid_file("podman", excluded | {PODMAN_API_GID}))

    (output / "helper").mkdir()  # empty: the build puts each platform's helper there (helper_image.carry)

    runner_dir = output / "runner"
    runner_dir.mkdir()
    (runner_dir / "VERSION").write_text(config.runner_version)
    for arch, binary in sorted((runner_binaries or {}).items()):
        shutil.copy2(binary, runner_dir / f"gitlab-runner-{arch}")
    return output
