"""nightly: build every platform, verify each, tag, push; one command for a scheduler.

Order: build all platforms (tagged only if all build), verify each (full
profile on this machine's platform, emulated on the others), then tag the
manifest list `latest`, the gitlab-runner version and the UTC date, and push
all tags with every platform. A runner built from its Go module (stand-ins)
is published only when chosen (runner_source = gomodule), under tags ending
in -gomodule; `auto` never falls back to it here. If any platform fails to build or verify,
nothing is pushed and the exit status is 1. A run whose inputs did not change
rebuilds nothing and, when the registry already holds the same digests,
pushes nothing. With publish_sign_key every pushed tag is signed (signing.py)
and the public key is written beside the report (signing-key.pub); a push
that could not be signed fails the run. Every run writes report.json and
summary.txt.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import time
from pathlib import Path

from . import base_image, build, processes, publish, render, signing, verify
from .config import Config
from .errors import PipglrError

PACKAGES_MARK = "--- packages ---"
VERSION_SCRIPT = (
    "podman --version; gitlab-runner --version | sed -n 's/^Version: *//p'; "
    "systemctl --version | head -n1; . /etc/os-release; echo \"$VERSION_CODENAME\"; "
    f"echo {PACKAGES_MARK}; cat {render.PACKAGE_LIST}"
)


def nightly_tags(config: Config, today: datetime.date) -> list[str]:
    """latest, the runner version and the date; each ends in -gomodule when the runner is built from its Go module
    on purpose (with stand-ins where the proxy refuses modules): never under the tags of a release build.
    `auto` cannot end up there: a nightly takes no fallback (runner.obtain without fallback)."""
    suffix = "-gomodule" if config.runner_source == "gomodule" else ""
    return [f"{tag}{suffix}" for tag in ("latest", config.runner_version, today.strftime("%Y%m%d"))]


def versions_inside(ref: str, arch: str) -> tuple[dict[str, str], dict[str, str]]:
    """The versions the report shows, and the image's package list {name: version}."""
    out, _, listed = processes.execute(["podman", "run", "--rm", "--arch", arch, "--entrypoint", "/bin/sh", ref, "-c",
                                        VERSION_SCRIPT], timeout=600).stdout.partition(PACKAGES_MARK + "\n")
    podman, runner, systemd, suite = (out.splitlines() + [""] * 4)[:4]
    return {
        "podman": podman.removeprefix("podman version ").strip(),
        "gitlab-runner": runner.strip(),
        "systemd": (re.findall(r"\d+", systemd) or [""])[0],
        "base_suite": suite.strip(),
        "base_snapshot": processes.image_label(ref, base_image.ARCHIVE_LABEL) or "none",
    }, dict(line.split(" ", 1) for line in listed.splitlines())


def package_changes(old: dict[str, str] | None, new: dict[str, str]) -> list[list[str | None]] | None:
    """[name, old version, new version] for each package added (old None), removed (new None) or changed;
    None when there is no previous list to compare with."""
    if old is None:
        return None
    return [[name, old.get(name), new.get(name)] for name in sorted(old.keys() | new.keys())
            if old.get(name) != new.get(name)]


def image_size(ref: str) -> int:
    return int(processes.execute(["podman", "image", "inspect", "--format", "{{.Size}}", ref]).stdout.strip())


def registry_of(config: Config) -> tuple[publish.Registry | None, str]:
    """publish_repository split into the registry and the repository name inside it."""
    if not config.publish_repository:
        return None, ""
    address, _, name = config.publish_repository.partition("/")
    return publish.Registry(address, tls_verify=config.publish_tls_verify, cert_dir=config.publish_cert_dir or None,
                            authfile=config.publish_authfile or None), name


def run(config: Config, report_dir: Path, today: datetime.date | None = None) -> int:
    """The nightly job. Returns the exit status; the report says why."""
    registry, repository = registry_of(config)
    today = today or datetime.datetime.now(datetime.UTC).date()
    tags = nightly_tags(config, today)
    config = dataclasses.replace(config, tags=tuple(tags))
    report: dict = {"started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "image": config.image_name, "tags": tags, "repository": config.publish_repository, "platforms": {},
                    "pushed": {}, "result": "failed"}
    started = time.monotonic()
    previous = load_previous(report_dir)
    try:
        signer = _signing_inputs(config) if config.publish_sign_key and registry else None  # before a long build
        _build_and_verify(config, report, previous.get("platforms", {}))
        if all(p.get("verified") for p in report["platforms"].values()):
            _publish(config, registry, repository, tags, report, previous.get("pushed", {}))
            if signer:
                _sign(config, signer, registry, repository, report, report_dir)
            report["result"] = "ok"
    except PipglrError as e:
        report["error"] = str(e)
    except KeyboardInterrupt:  # stopped (Ctrl-C, SIGTERM): nothing more is built or pushed, the report says so
        report["result"] = "interrupted"
        raise
    finally:
        report["seconds"] = round(time.monotonic() - started, 1)
        _write(report, report_dir)
    return 0 if report["result"] == "ok" else 1


def _build_and_verify(config: Config, report: dict, previous: dict) -> None:
    # Refreshes the base first when the Debian archive changed. Each image's label says the checks it must pass here
    # before it is pushed (an arm64 host sees its image was not proven with nested jobs).
    checks = {arch: verify.PROFILE_CHECKS[verify.profile_for(arch)] for arch in config.arches}
    built = build.build(config, runner_fallback=False, verified=checks)
    report["runner_source"] = built.runner_source
    for arch in config.arches:
        ref = build.platform_ref(config, arch)
        versions, packages = versions_inside(ref, arch)
        report["platforms"][f"linux/{arch}"] = {
            "image": ref, "build_seconds": round(built.seconds[arch], 1), "rebuilt": built.rebuilt[arch],
            "base": built.base.get(arch),
            "size_bytes": image_size(ref), "versions": versions, "packages": packages,
            "package_changes": package_changes(previous.get(f"linux/{arch}", {}).get("packages"), packages)}
    for arch in config.arches:
        entry = report["platforms"][f"linux/{arch}"]
        checked = verify.verify(entry["image"], arch)
        entry.update(verify_profile=checked.profile, verify_seconds=round(checked.seconds, 1),
                     verified=checked.ok, failed_checks=checked.failed)


def _publish(config: Config, registry: publish.Registry | None, repository: str, tags: list[str],
             report: dict, previous: dict[str, str]) -> None:
    if registry is None:
        report["push"] = "skipped: no registry configured (publish_repository)"
        return
    unchanged = not any(p["rebuilt"] for p in report["platforms"].values())
    local = f"{config.image_name}:{tags[0]}"
    if unchanged:
        remote = {tag: publish.remote_digest(registry, repository, tag) for tag in tags}
        if all(remote[t] and remote[t] == previous.get(t) for t in tags):
            report["push"] = "skipped: nothing changed and the registry already holds these digests"
            report["pushed"] = remote
            processes.say("nightly: nothing changed; the registry already has these images")
            return
    pushed = publish.push_manifest(local, registry, repository, tags) if len(config.arches) > 1 else \
        publish.push_image(local, registry, repository, tags)
    report["pushed"] = pushed
    report["push"] = "pushed"
    report["remote_platforms"] = publish.remote_platforms(registry, repository, tags[0])


def _signing_inputs(config: Config) -> tuple[Path, Path, str]:
    """The key, its public key and passphrase, checked before anything is built."""
    key, pub = signing.check_key(config.publish_sign_key)
    return key, pub, signing.passphrase(config.publish_sign_passphrase_file)


def _sign(config: Config, inputs: tuple[Path, Path, str], registry: publish.Registry, repository: str,
          report: dict, report_dir: Path) -> None:
    """Sign each pushed tag whose digest has no signature yet; publish the public key beside the report."""
    key, pub, secret = inputs
    report["signing_key"] = signing.fingerprint(pub)
    report["signed"] = []
    signer = None
    for tag, digest in report["pushed"].items():
        if report["push"] != "pushed" and publish.remote_digest(registry, repository, signing.signature_tag(digest)):
            continue  # unchanged and already signed
        signer = signer or signing.ensure_signer(render.base_image_for(config, base_image.native_arch()))
        try:
            signing.sign(signer, key, secret, registry, repository, tag, digest)
        except signing.SigningError as e:
            raise signing.SigningError(f"{e}\nThe tags were pushed unsigned: hosts that trust the key refuse them "
                                       f"and keep what they run.") from None
        report["signed"].append(tag)
    report_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pub, report_dir / "signing-key.pub")


def _write(report: dict, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    summary = summarize(report)
    (report_dir / "summary.txt").write_text(summary)
    processes.say(summary)


def summarize(report: dict) -> str:
    lines = [(f"nightly {report['image']} ({', '.join(report['tags'])}): {report['result'].upper()}"
             f" in {report.get('seconds', 0):.0f}s")]
    for platform, p in sorted(report["platforms"].items()):
        v = p.get("versions", {})
        state = "verified" if p.get("verified") else ("FAILED: " + ", ".join(p.get("failed_checks") or ["not run"]))
        lines.append(f"  {platform}: build {p['build_seconds']:.0f}s{'' if p['rebuilt'] else ' (unchanged)'}, "
                     f"{p['size_bytes'] / 1e6:.0f} MB, {state}"
                     + (f" ({p.get('verify_profile')} profile, {p.get('verify_seconds', 0):.0f}s)"
                        if "verify_seconds" in p else ""))
        lines.append(f"    podman {v.get('podman')}, gitlab-runner {v.get('gitlab-runner')}, systemd "
                     f"{v.get('systemd')}, base {v.get('base_suite')} (archive {v.get('base_snapshot')})")
        if p.get("base"):
            lines.append(f"    base: {p['base']}")
        changes = p.get("package_changes")
        if changes is None:
            lines.append(f"    packages: {len(p.get('packages') or {})} (no previous report to compare with)")
        else:
            lines.append(f"    packages: {len(changes)} changed since the previous report")
            lines += [f"      {name} {old or '(new)'} -> {new or '(removed)'}" for name, old, new in changes]
    if report.get("push"):
        lines.append(f"  push: {report['push']}")
    if report.get("signing_key"):
        lines.append(f"  signed: {', '.join(report.get('signed') or []) or 'nothing new'} with the key "
                     f"{report['signing_key']} (signing-key.pub)")
    for tag, digest in sorted(report.get("pushed", {}).items()):
        lines.append(f"    {report['repository']}:{tag} {digest}")
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    return "\n".join(lines) + "\n"


def load_previous(report_dir: Path) -> dict:
    try:
        return json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        return {}

