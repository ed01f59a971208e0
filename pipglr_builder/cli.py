"""The command line (build.py / pipglr-build). The only place that prints errors and exits."""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path

import click

from . import config as config_mod
from . import processes
from .errors import ConfigError, PipglrError

DEFAULT_CONFIG = "pipglr.toml"


def _flag_name(key: str) -> str:
    return "--platform" if key == "platforms" else "--" + key.replace("_", "-")


def setting_options(func):
    """Add one flag per pipglr.toml setting; they override the file."""
    for setting in reversed(config_mod.SETTINGS):
        kind = "comma-separated list" if setting.kind is list else setting.kind.__name__
        func = click.option(_flag_name(setting.key), setting.key, default=None, metavar=kind.upper().split()[0],
                            help=f"{setting.help} [{kind}; pipglr.toml key {setting.key}]")(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        overrides = {s.key: kwargs.pop(s.key) for s in config_mod.SETTINGS if kwargs.get(s.key) is not None}
        for s in config_mod.SETTINGS:
            kwargs.pop(s.key, None)
        ctx = click.get_current_context()
        path = ctx.obj["config_path"]
        kwargs["config"] = config_mod.load(path, overrides)
        return func(*args, **kwargs)
    return wrapper


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Cli(click.Group):
    """Turns PipglrError into a one-paragraph message and exit status 1, and
    SIGTERM (a scheduler's or CI's stop) into an interruption like Ctrl-C, so
    every command cleans up what it started on the way out."""

    def invoke(self, ctx):
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return super().invoke(ctx)
        except PipglrError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Settings file (TOML). Default: ./{DEFAULT_CONFIG} when it exists.")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """Generate, build and check pipglr container images: systemd, a rootless
    podman service and gitlab-runner in one image, started by an ordinary user
    with `podman container runlabel`.

    Settings come from pipglr.toml; every key can be overridden by its flag.
    """
    if config_file is None and Path(DEFAULT_CONFIG).exists():
        config_file = Path(DEFAULT_CONFIG)
    ctx.obj = {"config_path": config_file}


@main.command("render")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write the build context into: new, empty, or one render wrote before "
                   "(then replaced). Anything else is refused.")
@setting_options
def render_cmd(config, output: Path) -> None:
    """Write the build context (Containerfile, units, runlabels) without building."""
    from . import render
    render.render(config, output)
    click.echo(f"build context written to {output}")


@main.command("bootstrap-base")
@click.option("--refresh", is_flag=True, help="Bootstrap again even when a cached base exists.")
@setting_options
def bootstrap_base_cmd(config, refresh: bool) -> None:
    """Bootstrap the Debian base image for each platform (cached)."""
    from . import base_image, build, helper_image
    if config.base_image:
        raise PipglrError(f"base_image is set ({config.base_image}): nothing to bootstrap")
    for arch in config.arches:
        helper = processes.image_label(helper_image.names(config, arch)[0], base_image.KEY_LABEL) is not None
        click.echo(base_image.bootstrap(config, arch, refresh=refresh, images=build.on_base(config, arch, helper)).tag)


@main.command("build")
@click.option("--verbose", "-v", is_flag=True, help="Show all of buildah's output, not only one line per step.")
@click.option("--no-cache", is_flag=True,
              help="Run every step again: use neither an image built from the same inputs nor buildah's layer cache.")
@setting_options
def build_cmd(config, verbose: bool, no_cache: bool) -> None:
    """Build the image for each platform and tag it (a manifest list for several)."""
    from . import build
    for ref in build.build(config, verbose=verbose, no_cache=no_cache).refs:
        click.echo(ref)


@main.command("verify")
@click.argument("image")
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default=None,
              help="Platform of IMAGE to check. Default: this machine's (full profile); "
                   "another one gets the emulated profile (rootful boot under qemu, lighter checks).")
def verify_cmd(image: str, arch: str | None) -> None:
    """Boot IMAGE as its users run it and check it; exit 1 if any check fails.

    Full profile: on a stand-in for a user's host (cgroup v2, rootless podman,
    subuid count 65539), through the runlabels setupstorage, setupcache and
    run, then systemd, users, sub-IDs, socket, runner, timer, storage, secrets,
    nested jobs with the uid map expansion, the privileged policy, and the
    refusal of a 65536 sub-ID allocation. Needs root (host podman).
    """
    from . import verify
    sys.exit(0 if verify.verify(image, arch).ok else 1)


@main.command("nightly")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("nightly-report"), show_default=True,
              help="Directory for report.json and summary.txt (the previous report there lets an unchanged run "
                   "skip the push).")
@setting_options
def nightly_cmd(config, report_dir: Path) -> None:
    """Build all platforms, verify each, tag latest/RUNNER_VERSION/YYYYMMDD and push.

    Nothing is pushed unless every platform built and verified; the exit
    status is 1 then. Meant for a scheduler (GitLab CI schedule, systemd
    timer, cron); see examples/.
    """
    from . import nightly
    sys.exit(nightly.run(config, report_dir))


@main.command("doctor")
@click.argument("image", default=None, required=False)
@click.option("--instance", default="pipglr", show_default=True,
              help="Check this instance's container, volumes and secret (podman container runlabel --name NAME).")
@setting_options
def doctor_cmd(config, image: str | None, instance: str) -> None:
    """Check this host for what the pipglr container needs (run as the user who runs it).

    Rootless podman version, linger, /etc/subuid and /etc/subgid counts
    (65539), /dev/fuse, cgroup v2 and delegation, the two volumes, and the
    config.toml secret (parsed by IMAGE's gitlab-runner when IMAGE is given).
    Each problem comes with the command that fixes it. Exit status 0 when the
    runner can start. The same check without this tool:
    `podman container runlabel doctor IMAGE | sh` (with --name NAME for an
    instance, as --instance NAME here).

    The build side first: whether this host can build every configured
    platform (qemu, binfmt and arch-test for a foreign one).
    """
    from . import base_image, render
    render.check_instance_name(instance)
    build_ok = True
    for arch in config.arches:
        problems = base_image.foreign_arch_problems(arch, bootstrapping=not config.base_image)
        build_ok = build_ok and not problems
        how = "natively" if arch == base_image.native_arch() else "under emulation"
        for line in problems or [f"this host can build it {how}"]:
            click.echo(f"{'FAIL' if problems else 'ok  '} build linux/{arch}: {line}")
    script = render.render_file(config, "files/doctor")
    proc = processes.call(["sh", "-s", "--", image or "", instance], input=script, capture=False)
    sys.exit(proc.returncode or (0 if build_ok else 1))


@main.command("keygen")
@click.argument("prefix", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Read the key's passphrase from this file (else $PIPGLR_SIGN_PASSPHRASE, else asked twice).")
@setting_options
def keygen_cmd(config, prefix: Path, passphrase_file: Path | None) -> None:
    """Make the key pair `nightly` signs with: PREFIX.private (encrypted) and PREFIX.pub.

    Runs `skopeo generate-sigstore-key` of Debian 13 in a throw-away container
    of the signer image (built from the Debian base: run bootstrap-base
    first), as Debian 12's skopeo cannot. Keep PREFIX.private and its
    passphrase secret; give PREFIX.private as publish_sign_key, and
    PREFIX.pub to the hosts (`pipglr-build trust`).
    """
    import os

    from . import base_image, render, signing
    base = render.base_image_for(config, base_image.native_arch())
    if processes.execute(["podman", "image", "exists", base], check=False).returncode != 0:
        raise PipglrError(f"the Debian base {base} is not here: run `pipglr-build bootstrap-base` first")
    if passphrase_file is not None:
        secret = signing.passphrase(str(passphrase_file))
    elif signing.PASSPHRASE_ENV in os.environ:
        secret = os.environ[signing.PASSPHRASE_ENV]
    else:
        secret = click.prompt("Passphrase for the new key", hide_input=True, confirmation_prompt=True)
    private, pub = signing.keygen(signing.ensure_signer(base), prefix, secret)
    click.echo(f"wrote {private} (secret) and {pub} ({signing.fingerprint(pub)})")


@main.command("trust")
@click.argument("repository")
@click.option("--key", "key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The public key the images are signed with (signing-key.pub from the nightly report, "
                   "PREFIX.pub from keygen).")
def trust_cmd(repository: str, key: Path) -> None:
    """Let this user's podman take REPOSITORY's images only with a valid signature by KEY.

    REPOSITORY as you pull it, e.g. registry.example.com/group/pipglr. Merges
    a sigstoreSigned requirement for it into ~/.config/containers/policy.json
    (starting from /etc/containers/policy.json when you have none) and adds
    ~/.config/containers/registries.d/pipglr-*.yaml (signatures are looked up
    in the registry); the rest of your policy stays as it was. Each changed
    file is backed up first (NAME.pipglr-backup-TIMESTAMP); a policy that is
    not valid JSON is refused and nothing is written. Then `podman pull`
    refuses an unsigned or foreign-signed image under any of its tags and the
    host keeps the image it has (`podman auto-update` pulls through the same
    policy). Run it as the user who runs pipglr.
    """
    from . import trust
    scope = trust.check_scope(repository)
    changes = trust.plan(Path.home(), scope, key.read_bytes())
    for line in trust.apply(changes) or [f"nothing to change: {scope} already needs a signature by {key}"]:
        click.echo(line)


@main.command("quadlet")
@click.argument("image", default=None, required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the unit here (e.g. ~/.config/containers/systemd/pipglr.container: the unit is "
                   "named after the file); default: stdout.")
@click.option("--instance", default="pipglr", show_default=True,
              help="The instance (podman container runlabel --name NAME): its container, volumes NAME-storage, "
                   "NAME-cache, NAME-state and secret NAME-config.toml; pipglr keeps pipglr-* and config.toml.")
@setting_options
def quadlet_cmd(config, image: str | None, output: Path | None, instance: str) -> None:
    """Generate a quadlet .container file that starts the pipglr container at boot.

    Same container as `podman container runlabel run IMAGE` (name, volumes,
    secret, devices), under the user's systemd; with --instance NAME, that of
    `podman container runlabel --name NAME run IMAGE`. Needs linger for the user.
    """
    from . import quadlet
    text = quadlet.render_quadlet(config, image or config.image_ref, instance)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        click.echo(f"wrote {output}; then: systemctl --user daemon-reload && systemctl --user start {output.stem}")


@main.command("bench")
@click.option("--runs", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Runs per figure (builds, start, memory; pairs of the fuse-overlayfs and vfs peers).")
@click.option("--pairs", type=click.IntRange(1, 100), default=20, show_default=True,
              help="Pairs (one sample of each side, alternating which goes first) per nesting comparison.")
@click.option("--job-pairs", type=click.IntRange(1, 100), default=20, show_default=True,
              help="Pairs per CI job comparison (a pair of jobs takes far longer than a pair of `run true`).")
@click.option("--builds/--no-builds", default=True, show_default=True,
              help="Time the cold, warm and runner-bump builds; --no-builds measures the rest only.")
@click.option("--cold-runs", type=click.IntRange(0, 20), default=3, show_default=True,
              help="Cold builds (Debian bootstrap + every layer without cache) of the native platform; 0 skips them.")
@click.option("--arm64/--no-arm64", default=True, show_default=True,
              help="One cold arm64 build under emulation (about 10 minutes).")
@click.option("--bump-runner-file", default="",
              help="A gitlab-runner binary ({arch} in the path) of another version, to time a version bump rebuild.")
@click.option("--bump-runner-version", default="", help="The version of --bump-runner-file, e.g. 19.4.1.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-report"),
              show_default=True, help="Directory for bench.json and bench.txt.")
@click.option("--jobs/--no-jobs", default=True, show_default=True,
              help="CI jobs with the real runner, nested against alice's own runner (latency, throughput).")
@setting_options
def bench_cmd(config, runs: int, pairs: int, job_pairs: int, builds: bool, cold_runs: int, arm64: bool, bump_runner_file: str,
              bump_runner_version: str, output: Path, jobs: bool) -> None:
    """Measure what the image costs: builds, size, start, job overhead, memory.

    Cold, warm and runner-bump builds; size as stored and as pushed; then the
    image runs on the stand-in user host as verify does (time to ready,
    nested jobs against the stand-in user's own rootless podman with overlay,
    fuse-overlayfs and vfs storage, memory), then CI jobs with the real
    runner nested against the same runner on that user's own podman (latency,
    whole job, 1/2/4 jobs at once). Both sides of a comparison are sampled
    pair by pair in alternating order, each sample after sync and dropped
    caches (run it as root); a ratio is the median of the per-pair ratios.
    Writes JSON and a table; exit 1 if a target is missed.
    """
    from .harness import bench
    bump = None
    if bump_runner_file or bump_runner_version:
        if not (bump_runner_file and bump_runner_version):
            raise ConfigError("--bump-runner-file and --bump-runner-version go together: give both or neither")
        problem = config_mod.SETTINGS_BY_KEY["runner_version"].check(bump_runner_version)
        if problem:
            raise ConfigError(f"--bump-runner-version {bump_runner_version}: {problem}")
        if bump_runner_version == config.runner_version:
            raise ConfigError(f"--bump-runner-version {bump_runner_version} is the configured runner_version; "
                              "a bump needs another version")
        from .base_image import native_arch
        if not Path(bump_runner_file.replace("{arch}", native_arch())).is_file():
            raise ConfigError(f"--bump-runner-file {bump_runner_file}: no such file for {native_arch()}")
        bump = (bump_runner_file, bump_runner_version)
    sys.exit(bench.run(config, runs, output, cold_runs=cold_runs, arm64=arm64, bump=bump, jobs=jobs, pairs=pairs,
                       job_pairs=job_pairs, builds=builds))


@main.command("runner")
@setting_options
def runner_cmd(config) -> None:
    """Obtain gitlab-runner for each platform as the build would, and say from where."""
    from . import runner
    source, binaries = runner.obtain(config)
    for arch, path in sorted(binaries.items()):
        click.echo(f"{arch}\t{source}\t{path}")


if __name__ == "__main__":
    main()
