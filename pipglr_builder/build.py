"""build: buildah builds one image per platform and tags them only when all succeed.

Per-platform images are first built under temporary names; the final tags
(and the manifest list when there are several platforms) are applied at the
end, so a failed build never leaves a half-tagged image behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
import time
import uuid
from pathlib import Path

from . import base_image, buildah, helper_image, processes, render, runner
from .config import Config


def bud_argv(config: Config, arch: str, context: Path, tag: str, created: str, inputs: str = "",
             no_cache: bool = False, runner_args: list[str] | tuple[str, ...] = (), runner_sha256: str = "",
             base: dict[str, str] | None = None, verified: str = "") -> list[str]:
    """The buildah command for one platform (data, so tests can read it); BASE: helper_image.base_labels;
    VERIFIED: the checks a nightly runs before it pushes this platform (label io.pipglr.verified)."""
    args = [
        *buildah.build_args({"BASE_IMAGE": render.base_image_for(config, arch), "TARGETARCH": arch, "CREATED": created,
                             "REVISION": render.git_revision(), "SOURCE": render.git_source(), **(base or {})}),
        *runner_args,  # the runner's own labels (runner.label_args)
        *buildah.build_args({"RUNNER_SHA256": runner_sha256, **({"VERIFIED": verified} if verified else {})}),
    ]
    return buildah.bud_argv(context, tag, args=args, arch=arch, inputs=inputs, containerfile=context / "Containerfile",
                            no_cache=no_cache)


def platform_ref(config: Config, arch: str) -> str:
    """Where the finished image of one platform is kept."""
    suffix = f"-{arch}" if len(config.arches) > 1 else ""
    return f"{config.image_name}:{config.tags[0]}{suffix}"


def on_base(config: Config, arch: str, helper: bool) -> list[str]:
    """The images a build makes from ARCH's base: the platform's image and, with HELPER, the helper image."""
    return [platform_ref(config, arch), *(helper_image.names(config, arch)[:1] if helper else [])]


def final_refs(config: Config) -> list[str]:
    return [f"{config.image_name}:{tag}" for tag in config.tags]


@dataclasses.dataclass
class Built:
    """What build() made: the final refs and, per platform, how."""

    refs: list[str]
    runner_source: str
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    rebuilt: dict[str, bool] = dataclasses.field(default_factory=dict)
    base: dict[str, str] = dataclasses.field(default_factory=dict)  # what bootstrap did (none: base_image set)


def build(config: Config, verbose: bool = False, work_dir: Path | None = None, no_cache: bool = False,
          runner_fallback: bool = True, verified: dict[str, str] | None = None) -> Built:
    """Build every configured platform; tag them all only when all succeeded.
    NO_CACHE rebuilds every layer (the bench's cold build). Without RUNNER_FALLBACK, runner_source = auto never
    falls back to gomodule (runner.obtain). VERIFIED: {arch: the checks a nightly runs before pushing it}."""
    processes.require("buildah", "podman")
    if not config.base_image:
        processes.require("mmdebstrap")
    base_image.require_foreign_arches(config.arches, bootstrapping=not config.base_image)
    source, binaries = runner.obtain(config, fallback=runner_fallback)
    bases = {}  # arch -> what bootstrap did; the images built on the base decide whether an archive change matters
    for arch in () if config.base_image else config.arches:
        helper = runner.helper_binary(binaries[arch], arch) is not None
        bases[arch] = base_image.bootstrap(config, arch, images=on_base(config, arch, helper)).note
    note = runner.replacements_note(next(iter(binaries.values())))
    if note:
        processes.say(f"build: {note}")

    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    nonce = uuid.uuid4().hex[:8]
    helpers = {arch: helper_image.build_helper(config, arch, binaries[arch], nonce, source) for arch in config.arches}
    if any(helpers.values()):
        processes.require("zstd")
    temporary: dict[str, str] = {}
    result = Built([], source, base=bases)
    with tempfile.TemporaryDirectory(prefix="pipglr-context-", dir=work_dir) as tmp:
        context = render.render(config, Path(tmp) / "context", binaries)
        try:
            for arch in config.arches:
                tag = f"{config.image_name}:build-{nonce}-{arch}"
                base_ref = render.base_image_for(config, arch)
                helper_id = helpers[arch]
                helper_image.carry(context, config, arch, helper_id or "")
                checks = (verified or {}).get(arch, "")
                key = buildah.inputs_key(context, buildah.base_id(base_ref), arch, extra=checks)
                started = time.monotonic()
                if not no_cache and buildah.made_from(platform_ref(config, arch), key):
                    buildah.tag(platform_ref(config, arch), tag)
                    temporary[arch] = tag
                    result.seconds[arch], result.rebuilt[arch] = time.monotonic() - started, False
                    processes.say(f"build: {arch} unchanged (same inputs as {platform_ref(config, arch)}), not rebuilt")
                    continue
                processes.say(f"build: {arch} image (gitlab-runner from {source})")
                if helper_id:
                    helper_image.save_archive(context, helper_id)
                buildah.bud(bud_argv(config, arch, context, tag, created, key, no_cache,
                                     runner.label_args(binaries[arch], source), runner.sha256_of(binaries[arch]),
                                     helper_image.base_labels(base_ref), checks),
                            arch, verbose)
                temporary[arch] = tag
                result.seconds[arch], result.rebuilt[arch] = time.monotonic() - started, True
                processes.say(f"build: {arch} done in {result.seconds[arch]:.0f}s")
            result.refs = _tag(config, temporary)
        finally:
            buildah.remove_quietly(*temporary.values())
    return result


def _tag(config: Config, images: dict[str, str]) -> list[str]:
    """Apply the final names: the image itself (one platform) or a manifest list."""
    refs = final_refs(config)
    buildah.remove_quietly(*refs)
    if len(images) == 1:
        (image,) = images.values()
        buildah.tag(image, *refs)
    else:
        first, *rest = refs
        processes.run(buildah.manifest_create_argv(first), quiet=True)
        for arch, image in sorted(images.items()):
            # Per-platform names stay usable for `verify --arch`.
            per_arch = platform_ref(config, arch)
            buildah.tag(image, per_arch)
            processes.run(buildah.manifest_add_argv(first, arch, per_arch), quiet=True)
        for ref in rest:
            buildah.tag(first, ref)
    for ref in refs:
        processes.say(f"build: tagged {ref}")
    return refs
