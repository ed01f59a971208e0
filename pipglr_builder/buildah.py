"""buildah: every buildah command the tool runs, built here as argv (data a unit test reads), and the few
steps made of them that the build stages share.

build.py (the pipglr image), helper_image.py (the helper image), standin.py (the stand-in host's image)
and publish.py (pushes) say what to build or push; this module says how buildah is asked. Every command
runs through processes.run. What it shares:

- the inputs key: a hash of everything an image is made from, kept in the image as the label
  INPUTS_LABEL, so a build whose inputs did not change is skipped;
- StepProgress: buildah's output as one line per Containerfile step;
- tagging, and removing temporary images and manifest lists quietly.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path

from . import processes
from .errors import CommandFailed

INPUTS_LABEL = "io.pipglr.inputs"
# A multi-stage build prefixes its stage: "[1/2] STEP 3/3: RUN ...".
STEP = re.compile(r"^(?:\[(\d+/\d+)\] )?STEP (\d+)/(\d+): (.*)$")


# --- argv builders (pure) ---------------------------------------------------------------------------------------


def build_args(values: dict[str, str]) -> list[str]:
    """--build-arg NAME=VALUE for each of VALUES, in their order."""
    return [word for name, value in values.items() for word in ("--build-arg", f"{name}={value}")]


def bud_argv(context: Path, tag: str, *, args: Sequence[str] = (), arch: str | None = None, inputs: str | None = None,
             containerfile: Path | None = None, no_cache: bool = False) -> list[str]:
    """buildah bud of CONTEXT into TAG, with ARGS (--build-arg words) in their order; for ARCH (linux) when given,
    and labelled with the INPUTS key when given. NO_CACHE rebuilds every layer."""
    return [
        # --force-rm: a failed step's working container is removed too, not left to fill the disk.
        "buildah", "bud", "--layers", *(["--no-cache"] if no_cache else []), "--force-rm", "--isolation", "chroot",
        *(["--arch", arch, "--os", "linux"] if arch else []),
        *(["--label", f"{INPUTS_LABEL}={inputs}"] if inputs is not None else []),
        *args,
        *(["--file", str(containerfile)] if containerfile else []),
        "--tag", tag,
        str(context),
    ]


def tag_argv(image: str, *names: str) -> list[str]:
    return ["buildah", "tag", image, *names]


def manifest_create_argv(name: str) -> list[str]:
    return ["buildah", "manifest", "create", name]


def manifest_add_argv(name: str, arch: str, image: str) -> list[str]:
    """Add the local IMAGE to the manifest list NAME as the linux/ARCH entry."""
    return ["buildah", "manifest", "add", "--arch", arch, "--os", "linux", name, f"containers-storage:{image}"]


def remove_argvs(ref: str) -> list[list[str]]:
    """The commands that remove REF, whichever it is: a manifest list, else an image."""
    return [["buildah", "manifest", "rm", ref], ["buildah", "rmi", ref]]


def manifest_push_argv(local_ref: str, destination: str, flags: Sequence[str], digestfile: str) -> list[str]:
    """buildah manifest push of a local manifest list and every image in it; the pushed digest into DIGESTFILE."""
    return ["buildah", "manifest", "push", "--all", "--quiet", *flags, "--digestfile", digestfile,
            local_ref, destination]


def push_argv(local_ref: str, destination: str, flags: Sequence[str], digestfile: str) -> list[str]:
    """buildah push of one single-platform image; the pushed digest into DIGESTFILE."""
    return ["buildah", "push", "--quiet", *flags, "--digestfile", digestfile, local_ref, destination]


# --- the inputs key -----------------------------------------------------------------------------------------------


def inputs_key(context: Path, base_id: str, arch: str, extra: str = "") -> str:
    """A hash of everything an image is made from: the rendered context (with the
    runner binary), the base image, the platform and EXTRA (a build argument that
    is not in the context). Same key, same image."""
    digest = hashlib.sha256(f"{arch}\0{base_id}\0{extra}\0".encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(context)}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def base_id(ref: str) -> str:
    """The ID of the local base image REF, for the inputs key (REF itself when there is no such image)."""
    return processes.image_field(ref, "{{.Id}}") or ref


def made_from(ref: str, key: str) -> bool:
    """Whether the local image REF carries the inputs key KEY (then rebuilding it would make the same image)."""
    return processes.image_label(ref, INPUTS_LABEL) == key


# --- running ------------------------------------------------------------------------------------------------------


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
            stage, number, total, what = match.groups()
            self.step = f"{f'stage {stage} ' if stage else ''}step {number}/{total}"
            self.last_said = now
            processes.say(f"[{self.arch} {now - self.started:6.1f}s] {self.step}: {what[:90]}")
        elif self.verbose or line.startswith(("Error", "error")):
            processes.say(f"    {line}")
        elif now - self.last_said >= self.HEARTBEAT:
            self.last_said = now
            processes.say(f"[{self.arch} {now - self.started:6.1f}s] {self.step} still running: {line.strip()[:80]}")


# buildah's layer cache looks at every image in local storage; one whose layers went (a removal cut off, or one
# beside this build) fails every --layers build until it is removed.
BROKEN_CACHE = "checking if cached image exists from a previous build"
BROKEN_CACHE_FIX = ("buildah's layer cache met an image in local storage whose layers are gone (a removal that was cut "
                    "off, or one running beside this build). Build again; if it fails the same way, remove the broken "
                    "untagged images (`podman image prune`) or build with --no-cache.")


def bud(argv: list[str], what: str, verbose: bool = False) -> None:
    """Run a bud ARGV, shown as one progress line per step of WHAT (all of buildah's output when VERBOSE)."""
    try:
        processes.run(argv, on_line=StepProgress(what, verbose), quiet=not verbose)
    except CommandFailed as failed:
        if BROKEN_CACHE not in str(failed):
            raise
        raise CommandFailed(f"{failed}\n{BROKEN_CACHE_FIX}") from None


def tag(image: str, *names: str) -> None:
    processes.run(tag_argv(image, *names), quiet=True)


def remove_quietly(*refs: str) -> None:
    """Remove each of REFS (image or manifest list) if it exists; a ref that is not there is no error."""
    for ref in refs:
        for argv in remove_argvs(ref):
            try:
                processes.run(argv, quiet=True)
                break
            except CommandFailed:
                continue
