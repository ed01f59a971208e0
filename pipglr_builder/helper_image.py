"""helper: gitlab-runner's helper image for each platform, from the Debian base and the helper binary.

The docker executor runs the helper beside every job (git, caches, artifacts,
the volume permission container). It is tagged with the name this runner
computes by itself (registry.gitlab.com/...:x86_64-v19.4.0) and with the
pinned helper_image, so a preloaded helper is found either way. Built only
when the runner came with its helper binary (runner_source gomodule).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import processes, render, runner
from .config import Config

CONTEXT = render.TEMPLATES / "helper"
DEFAULT_NAME = "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:{arch}-v{version}"
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


def bud_argv(config: Config, arch: str, context: Path, tag: str, inputs: str, runner_args: list[str]) -> list[str]:
    from .build import INPUTS_LABEL  # late import: build calls this module
    return ["buildah", "bud", "--layers", "--force-rm", "--isolation", "chroot", "--arch", arch, "--os", "linux",
            "--label", f"{INPUTS_LABEL}={inputs}",
            "--build-arg", f"BASE_IMAGE={render.base_image_for(config, arch)}",
            "--build-arg", f"RUNNER_VERSION={config.runner_version}",
            *runner_args,  # the runner's own labels (runner.label_args)
            "--tag", tag, str(context)]


def build_helper(config: Config, arch: str, runner_binary: Path, nonce: str, source: str) -> list[str] | None:
    """Build and tag the helper image for ARCH; None when the runner came without a helper binary."""
    from . import build  # late import: build calls this module
    helper_bin = runner.helper_binary(runner_binary, arch)
    if helper_bin is None:
        return None
    refs = names(config, arch)
    with tempfile.TemporaryDirectory(prefix="pipglr-helper-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(CONTEXT, context)
        shutil.copy2(helper_bin, context / "gitlab-runner-helper")
        base_ref = render.base_image_for(config, arch)
        key = build.inputs_key(context, processes.image_field(base_ref, "{{.Id}}") or base_ref, arch)
        if all(processes.image_label(ref, build.INPUTS_LABEL) == key for ref in refs):
            processes.say(f"helper: {arch} unchanged ({refs[0]})")
            return refs
        processes.say(f"helper: building {refs[0]}")
        tag = f"localhost/pipglr-helper:build-{nonce}-{arch}"
        try:
            processes.run(bud_argv(config, arch, context, tag, key, runner.label_args(runner_binary, source)),
                          on_line=build.StepProgress(f"{arch} helper", False), quiet=True)
            processes.run(["buildah", "tag", tag, *refs], quiet=True)
        finally:
            build.remove_quietly(tag)
    return refs
