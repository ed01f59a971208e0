"""Running host programs: one place that logs, streams, and explains failures.

Commands are built as argv lists (data, testable without running them) and
run through `run()`, which drives them with the `sh` package and streams their
output, or through `call()` for short queries whose output the caller reads
whole (stdout and stderr apart, or bytes). `execute()` is `call()` against this
machine's own podman that raises CommandFailed on failure; `copy_image()` pipes
`podman save` into a `podman load` elsewhere.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import sh

from .errors import CommandFailed, ToolMissing

# Which Debian package provides each program the build and tests use.
PACKAGE_OF = {
    "buildah": "buildah",
    "podman": "podman",
    "skopeo": "skopeo",
    "mmdebstrap": "mmdebstrap",
    "systemd-analyze": "systemd",
    "go": "golang-go",
    "qemu-aarch64-static": "qemu-user-static",
    "newuidmap": "uidmap",
    "gpgv": "gpgv",
}


def require(*programs: str) -> None:
    """Fail early, naming every missing program and the package to install."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pkgs = sorted({PACKAGE_OF.get(p, p) for p in missing})
        raise ToolMissing(
            f"{', '.join(missing)} not found on this host. Install with: "
            f"apt-get install {' '.join(pkgs)} (or run scripts/setup-host.sh, which `make image` calls)."
        )


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(argv: list[str], *, on_line: Callable[[str], None] | None = None, quiet: bool = False,
        stdin: str | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
        tail: int = 30) -> str:
    """Run ARGV, streaming its output line by line; return the whole output.

    On failure raise CommandFailed carrying the command and its last lines.
    """
    require(argv[0])
    if not quiet:
        say(f"+ {shlex.join(argv)}")
    last: collections.deque[str] = collections.deque(maxlen=tail)
    lines: list[str] = []
    # A process group of its own, so that stopping it reaches its children too (buildah's RUN steps).
    kwargs: dict = {"_iter": True, "_err_to_out": True, "_bg_exc": False, "_new_group": True}
    if stdin is not None:
        kwargs["_in"] = stdin
    if env is not None:
        kwargs["_env"] = env
    if cwd is not None:
        kwargs["_cwd"] = cwd
    running = None
    try:
        running = sh.Command(argv[0])(*argv[1:], **kwargs)
        for raw in running:
            line = raw.rstrip("\n")
            lines.append(line)
            last.append(line)
            if on_line is not None:
                on_line(line)
    except sh.ErrorReturnCode as e:
        shown = "\n".join(f"    {l}" for l in last)
        raise CommandFailed(f"`{shlex.join(argv)}` failed with exit code {e.exit_code}. Last output:\n{shown}") from None
    except KeyboardInterrupt:
        _stop(running)  # so an interrupted build cannot finish (and tag) behind our back
        raise
    return "\n".join(lines)


def _stop(running) -> None:
    """Terminate a command started by run() with its children; wait for it (killed after 60 s)."""
    if running is None or running.process.exit_code is not None:
        return
    with contextlib.suppress(OSError):
        running.process.signal_group(signal.SIGTERM)
    try:
        running.wait(timeout=60)
    except sh.TimeoutException:
        with contextlib.suppress(OSError):
            running.process.kill_group()
    except sh.ErrorReturnCode:
        pass


def call(argv: list[str], *, input: str | bytes | None = None, binary: bool = False, capture: bool = True,
         timeout: float | None = None, env: dict[str, str] | None = None,
         cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run a short command to its end, quietly; the caller judges its exit code.

    Output is captured (stdout and stderr apart; bytes when BINARY) unless CAPTURE is false,
    when it goes to this process's own stdout and stderr. Raises subprocess.TimeoutExpired
    after TIMEOUT seconds, and OSError when the program cannot be started.
    """
    return subprocess.run(argv, capture_output=capture, text=not binary, input=input, timeout=timeout, env=env,
                          cwd=cwd, check=False)


def execute(argv: list[str], *, check: bool = True, input: str | bytes | None = None,
            timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a short command and capture its output (text unless INPUT is bytes), by default with
    this machine's own podman; on failure (CHECK) raise CommandFailed with the end of its stderr."""
    proc = call(argv, input=input, binary=isinstance(input, bytes), timeout=timeout, env=env or local_env())
    if check and proc.returncode != 0:
        raise CommandFailed(f"`{' '.join(argv)}` failed ({proc.returncode}): {_text(proc.stderr)[-2000:]}")
    return proc


def local_env() -> dict[str, str]:
    """This machine's environment for its own podman (never a remote CONTAINER_HOST)."""
    return {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def copy_image(ref: str, load_argv: list[str], env: dict[str, str] | None = None) -> None:
    """`podman save REF | LOAD_ARGV`: copy an image from this machine's storage into another one.
    LOAD_ARGV ends in `podman load` run where the image should go (env: for a remote podman)."""
    save = subprocess.Popen(["podman", "save", ref], stdout=subprocess.PIPE, env=local_env())
    load = subprocess.run(load_argv, stdin=save.stdout, capture_output=True, text=True, env=env or local_env(),
                          check=False)
    save.stdout.close()
    if save.wait() != 0 or load.returncode != 0:
        raise CommandFailed(f"copying {ref} with `{' '.join(load_argv)}` failed: {load.stderr[-1500:]}")


def capture(argv: list[str], cwd: Path | None = None) -> str:
    """Run a short query command quietly and return its stripped output."""
    return run(argv, quiet=True, cwd=None if cwd is None else str(cwd)).strip()


def image_field(ref: str, template: str) -> str | None:
    """A field of a local image (a podman --format template), or None when there is no such image."""
    try:
        return capture(["podman", "image", "inspect", "--format", template, ref])
    except CommandFailed:
        return None


def image_label(ref: str, label: str) -> str | None:
    return image_field(ref, f'{{{{ index .Labels "{label}" }}}}')
