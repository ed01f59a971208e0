"""helper: gitlab-runner's helper image for each platform, from the Debian base and the helper binary.

The docker executor runs the helper beside every job (git, caches, artifacts,
the volume permission container). It is tagged with the name this runner
computes by itself (registry.gitlab.com/...:x86_64-v19.4.0) and with the
pinned helper_image, so a preloaded helper is found either way. Built only
when the runner came with its helper binary (runner_source gomodule).
Its last stage starts FROM scratch (one layer, only what the helper runs), so
the base's labels are passed on by hand: the base's package check finds the
helper built on it by them.

The image carries its platform's helper (carry, save_archive): the build context's helper/ holds the names
the runner uses, the helper's image ID (so the inputs key changes with the helper) and, when the image is
built, the helper as a zstd-compressed docker-archive; pipglr-helper.service loads it into the nested
storage at boot when that lacks one of the names (files/load-helper).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from . import base_image, buildah, processes, render, runner
from .config import Config

CONTEXT = render.TEMPLATES / "helper"
DEFAULT_NAME = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:{arch}-v{version}"
CARRIED = "helper"  # the build context's folder, copied to render.HELPER_DIR in the image
ARCHIVE = Path(render.HELPER_ARCHIVE).name  # zstd -19: the 115 MB helper in 33 MB (default level: 42 MB)
# How the archive is made: written beside it (helper/format), so the inputs key changes with it too.
FORMAT = ("docker-archive", "-19")  # podman save --format, zstd level
HELPER_ARCH = {"amd64": "x86_64", "arm64": "arm64"}  # gitlab-runner's names (helpers/container/helperimage)


def names(config: Config, arch: str) -> list[str]:
    """The runner's own default helper name for ARCH, and the pinned helper_image when it differs."""
    found = []
    for pattern in (DEFAULT_NAME, config.helper_image):
        name = pattern.replace("{arch}", HELPER_ARCH[arch]).replace("{version}", config.runner_version)
        if name not in found:
            found.append(name)
    return found


def written(config: Config, arch: str) -> str:
    """The helper_image register writes for ARCH: {version} left for gitlab-runner to expand
    (${CI_RUNNER_VERSION}), so the name follows whatever runner reads the config (Containerfile step 5)."""
    return config.helper_image.replace("{arch}", HELPER_ARCH[arch]).replace("{version}", "${CI_RUNNER_VERSION}")


def base_labels(base: str) -> dict[str, str]:
    """The build args that carry the base image's own labels into the helper (FROM scratch inherits none)."""
    return {"BASE_KEY": processes.image_label(base, base_image.KEY_LABEL) or "",
            "BASE_ARCHIVE": processes.image_label(base, base_image.ARCHIVE_LABEL) or ""}


def bud_argv(config: Config, arch: str, context: Path, tag: str, inputs: str, runner_args: list[str],
             base: dict[str, str]) -> list[str]:
    """The buildah command for ARCH's helper image (data, so tests can read it); BASE: base_labels."""
    args = [*buildah.build_args({"BASE_IMAGE": render.base_image_for(config, arch),
                                 "RUNNER_VERSION": config.runner_version, **base}),
            *runner_args]  # the runner's own labels (runner.label_args)
    return buildah.bud_argv(context, tag, args=args, arch=arch, inputs=inputs)


def build_helper(config: Config, arch: str, runner_binary: Path, nonce: str, source: str) -> str | None:
    """Build and tag the helper image for ARCH; its image ID, or None when the runner came without a helper
    binary. A build reads the ID from its own temporary tag (the shared names may be retagged meanwhile); an
    unchanged helper's is that of its first name, just checked."""
    helper_bin = runner.helper_binary(runner_binary, arch)
    if helper_bin is None:
        return None
    refs = names(config, arch)
    with tempfile.TemporaryDirectory(prefix="pipglr-helper-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(CONTEXT, context)
        shutil.copy2(helper_bin, context / "gitlab-runner-helper")
        key = buildah.inputs_key(context, buildah.base_id(render.base_image_for(config, arch)), arch)
        if all(buildah.made_from(ref, key) for ref in refs):
            processes.say(f"helper: {arch} unchanged ({refs[0]})")
            return processes.image_field(refs[0], "{{.Id}}")
        processes.say(f"helper: building {refs[0]}")
        tag = f"localhost/pipglr-helper:build-{nonce}-{arch}"
        try:
            argv = bud_argv(config, arch, context, tag, key, runner.label_args(runner_binary, source),
                            base_labels(render.base_image_for(config, arch)))
            buildah.bud(argv, f"{arch} helper")
            image_id = processes.image_field(tag, "{{.Id}}")
            buildah.tag(tag, *refs)
        finally:
            buildah.remove_quietly(tag)
    return image_id


def carry(context: Path, config: Config, arch: str, image_id: str = "") -> Path:
    """Write the context's helper/ for ARCH: the names the runner uses and, for a built helper, its IMAGE_ID
    (the inputs key then follows the helper). What a previous platform left there is removed."""
    folder = context / CARRIED
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "names").write_text("".join(f"{name}\n" for name in names(config, arch)))
    if image_id:
        (folder / "image-id").write_text(f"{image_id}\n")
        (folder / "format").write_text(f"{FORMAT[0]}, zstd {FORMAT[1]}\n")
    return folder


def save_archive(context: Path, image_id: str) -> Path:
    """The helper IMAGE_ID into the context's helper/ as a compressed docker-archive (only when the image is built:
    the inputs key is made from the ID). By ID, not name: another build may retag the shared name meanwhile;
    load-helper tags the ID. `podman load` in the image reads the archive as it is. zstd -19 (33 MB, about a
    minute) is paid once per helper: the archive is cached by the ID, and the image's next builds copy it."""
    cached = cache_dir() / f"{image_id}{FORMAT[1]}.{ARCHIVE}"
    if not cached.is_file():
        processes.say(f"helper: compressing {image_id[:12]} into {cached} (once per helper)")
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pipglr-helper-archive-", dir=cached.parent) as tmp:
            tar, made = Path(tmp) / "helper.tar", Path(tmp) / ARCHIVE
            processes.run(["podman", "save", "--quiet", "--format", FORMAT[0], "--output", str(tar), image_id],
                          quiet=True)
            processes.run(["zstd", "--quiet", FORMAT[1], "-T0", str(tar), "-o", str(made)], quiet=True)
            made.replace(cached)  # whole or not at all: another build may read it
        _forget_old_archives(cached)
    archive = context / CARRIED / ARCHIVE
    shutil.copyfile(cached, archive)
    archive.chmod(0o644)
    cached.touch()  # in use: kept by _forget_old_archives
    return archive


def cache_dir() -> Path:
    return base_image.cache_dir() / "helper"


def _forget_old_archives(keep: Path, days: int = 14) -> None:
    """Remove cached helper archives no build used for DAYS (one per helper, 33 MB each)."""
    limit = time.time() - days * 86400
    for old in keep.parent.glob(f"*.{ARCHIVE}"):
        if old != keep and old.stat().st_mtime < limit:
            old.unlink(missing_ok=True)
