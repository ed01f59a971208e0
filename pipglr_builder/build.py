"""build: buildah builds one image per platform and tags them only when all succeed.

Per-platform images are first built under temporary names; the final tags
(and the manifest list when there are several platforms) are applied at the
end, so a failed build never leaves a half-tagged image behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import tempfile
import time
import uuid
from pathlib import Path

from . import base_image, helper_image, processes, render, runner
from .config import Config
from .errors import CommandFailed

STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")


INPUTS_LABEL = "io.pipglr.inputs"


def bud_argv(config: Config, arch: str, context: Path, tag: str, created: str, inputs: str = "",
             no_cache: bool = False, runner_args: list[str] | tuple[str, ...] = (), runner_sha256: str = "") -> list[str]:
    """The buildah command for one platform (data, so tests can read it)."""
    return [
        # --force-rm: a failed step's working container is removed too, not left to fill the disk.
        "buildah", "bud", "--layers", *(["--no-cache"] if no_cache else []), "--force-rm", "--isolation", "chroot",
        "--arch", arch, "--os", "linux", "--label", f"{INPUTS_LABEL}={inputs}",
        "--build-arg", f"BASE_IMAGE={render.base_image_for(config, arch)}",
        "--build-arg", f"TARGETARCH={arch}",
        "--build-arg", f"CREATED={created}",
        "--build-arg", f"REVISION={render.git_revision()}",
        "--build-arg", f"SOURCE={render.git_source()}",
        *runner_args,  # the runner's own labels (runner.label_args)
        "--build-arg", f"RUNNER_SHA256={runner_sha256}",
        "--file", str(context / "Containerfile"),
        "--tag", tag,
        str(context),
    ]


class StepProgress:
    """Turns buildah's output into one progress line per Containerfile step."""

    HEARTBEAT = 30.0  # seconds between "still working" lines on a long step

    def __init__(self, arch: str, verbose: bool):
        self.arch, self.verbose = arch, verbose
        self.started = self.last_said = time.monotonic()
        self.step = ""

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        match = STEP.match(line)
        if match:
            number, total, what = match.groups()
            self.step = f"step {number}/{total}"
            self.last_said = now
            processes.say(f"[{self.arch} {now - self.started:6.1f}s] {self.step}: {what[:90]}")
        elif self.verbose or line.startswith(("Error", "error")):
            processes.say(f"    {line}")
        elif now - self.last_said >= self.HEARTBEAT:
            self.last_said = now
            processes.say(f"[{self.arch} {now - self.started:6.1f}s] {self.step} still running: {line.strip()[:80]}")


def inputs_key(context: Path, base_id: str, arch: str) -> str:
    """A hash of everything an image is made from: the rendered context (with the
    runner binary), the base image and the platform. Same key, same image."""
    digest = hashlib.sha256(f"{arch}\0{base_id}\0".encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(context)}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def platform_ref(config: Config, arch: str) -> str:
    """Where the finished image of one platform is kept."""
    suffix = f"-{arch}" if len(config.arches) > 1 else ""
    return f"{config.image_name}:{config.tags[0]}{suffix}"


def on_base(config: Config, arch: str, helper: bool) -> list[str]:
    """The images a build makes from ARCH's base: the platform's image and, with HELPER, the helper image."""
    return [platform_ref(config, arch), *(helper_image.names(config, arch)[:1] if helper else [])]


def final_refs(config: Config) -> list[str]:
    return [f"{config.image_name}:{tag}" for tag in config.tags]


def remove_quietly(ref: str) -> None:
    for argv in (["buildah", "manifest", "rm", ref], ["buildah", "rmi", ref]):
        try:
            processes.run(argv, quiet=True)
            return
        except CommandFailed:
            continue


@dataclasses.dataclass
class Built:
    """What build() made: the final refs and, per platform, how."""

    refs: list[str]
    runner_source: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    rebuilt: dict[str, bool] = dataclasses.field(default_factory=dict)
    base: dict[str, str] = dataclasses.field(default_factory=dict)  # what bootstrap did (none: base_image set)


def build(config: Config, verbose: bool = False, work_dir: Path | None = None, no_cache: bool = False,
          runner_fallback: bool = True) -> Built:
    """Build every configured platform; tag them all only when all succeeded.
    NO_CACHE rebuilds every layer (the bench's cold build). Without RUNNER_FALLBACK, runner_source = auto never
    falls back to gomodule (runner.obtain)."""
    processes.require("buildah", "podman")
    if not config.base_image:
        processes.require("mmdebstrap")
    base_image.require_foreign_arches(config.arches, bootstrapping=not config.base_image)
    source, binaries = runner.obtain(config, fallback=runner_fallback)
    bases = {}  # arch -> what bootstrap did; the images built on the base decide whether an archive change matters
    for arch in () if config.base_image else config.arches:
        helper = runner.helper_binary(binaries[arch], arch) is not None
        bases[arch] = base_image.bootstrap(config, arch, images=on_base(config, arch, helper)).note
    note = runner.standins_note(next(iter(binaries.values())))
    if note:
        processes.say(f"build: {note}")

    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = uuid.uuid4().hex[:8]
    for arch in config.arches:
        helper_image.build_helper(config, arch, binaries[arch], nonce, source)
    temporary: dict[str, str] = {}
    result = Built([], source, base=bases)
    with tempfile.TemporaryDirectory(prefix="pipglr-context-", dir=work_dir) as tmp:
        context = render.render(config, Path(tmp) / "context", binaries)
        try:
            for arch in config.arches:
                tag = f"{config.image_name}:build-{nonce}-{arch}"
                base_ref = render.base_image_for(config, arch)
                key = inputs_key(context, processes.image_field(base_ref, "{{.Id}}") or base_ref, arch)
                started = time.monotonic()
                if not no_cache and processes.image_label(platform_ref(config, arch), INPUTS_LABEL) == key:
                    processes.run(["buildah", "tag", platform_ref(config, arch), tag], quiet=True)
                    temporary[arch] = tag
                    result.seconds[arch], result.rebuilt[arch] = time.monotonic() - started, False
                    processes.say(f"build: {arch} unchanged (same inputs as {platform_ref(config, arch)}), not rebuilt")
                    continue
                processes.say(f"build: {arch} image (gitlab-runner from {source})")
                processes.run(bud_argv(config, arch, context, tag, created, key, no_cache,
                                       runner.label_args(binaries[arch], source), runner.sha256_of(binaries[arch])),
                          on_line=StepProgress(arch, verbose), quiet=not verbose)
                temporary[arch] = tag
                result.seconds[arch], result.rebuilt[arch] = time.monotonic() - started, True
                processes.say(f"build: {arch} done in {result.seconds[arch]:.0f}s")
            result.refs = _tag(config, temporary)
        finally:
            for tag in temporary.values():
                remove_quietly(tag)
    return result


def _tag(config: Config, images: dict[str, str]) -> list[str]:
    """Apply the final names: the image itself (one platform) or a manifest list."""
    refs = final_refs(config)
    for ref in refs:
        remove_quietly(ref)
    if len(images) == 1:
        (image,) = images.values()
        processes.run(["buildah", "tag", image, *refs], quiet=True)
    else:
        first, *rest = refs
        processes.run(["buildah", "manifest", "create", first], quiet=True)
        for arch, image in sorted(images.items()):
            # Per-platform names stay usable for `verify --arch`.
            per_arch = platform_ref(config, arch)
            processes.run(["buildah", "tag", image, per_arch], quiet=True)
            processes.run(["buildah", "manifest", "add", "--arch", arch, "--os", "linux", first,
                           f"containers-storage:{per_arch}"], quiet=True)
        for ref in rest:
            processes.run(["buildah", "tag", first, ref], quiet=True)
    for ref in refs:
        processes.say(f"build: tagged {ref}")
    return refs
