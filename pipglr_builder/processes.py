"""Running host programs: the one place every program of the build starts.

Commands are argv lists (data, testable without running them). Every run
checks first that the program exists (else: which Debian package to
install), starts it in a process group of its own, and on an interruption
or a timeout stops that whole group (buildah's RUN steps, podman's conmon),
so nothing goes on, or tags an image, behind our back.

- `run()`: a long command whose output streams line by line (logged, shown
  as progress); on failure CommandFailed with its last lines.
- `call()`: a short query; the caller reads its output and judges its exit.
- `execute()`: `call()` against this machine's own podman, CommandFailed on
  failure with the last lines of its stderr.
- `copy_image()`: `podman save | podman load` into another storage.
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
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .errors import CommandFailed, PipglrError, ToolMissing

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
    "git": "git",
}

STOP_GRACE = 60  # seconds an interrupted command gets to clean up before it is killed


def require(*programs: str) -> None:
    """Fail early, naming every missing program and the package to install."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pkgs = sorted({PACKAGE_OF.get(Path(p).name, Path(p).name) for p in missing})
        raise ToolMissing(
            f"{', '.join(missing)} not found on this host. Install with: "
            f"apt-get install {' '.join(pkgs)} (or run scripts/setup-host.sh, which `make image` calls)."
        )


def say(message: str) -> None:
    """Progress and notes for the person running the build: on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def _start(argv: list[str], **popen) -> subprocess.Popen:
    require(argv[0])
    # process_group=0: a group of its own, so that stopping it reaches its children too.
    return subprocess.Popen(argv, process_group=0, **popen)


def _stop(processes: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process group, wait up to GRACE seconds for it, then SIGKILL it."""
    for proc in processes:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def _stopped_on_exit(*processes: subprocess.Popen):
    """Stop PROCESSES (their groups) when the block ends by an exception: Ctrl-C, SIGTERM, a timeout."""
    try:
        yield
    except BaseException:
        _stop(list(processes))
        raise


def failure(argv: list[str], code: int, output: str | bytes, tail: int = 30) -> CommandFailed:
    """The one way a failed command reads: the command, its exit code, its last lines."""
    lines = _text(output).rstrip("\n").splitlines()[-tail:]
    shown = "\n".join(f"    {line}" for line in lines) or "    (no output)"
    return CommandFailed(f"`{shlex.join(argv)}` failed with exit code {code}. Last output:\n{shown}")


def run(argv: list[str], *, on_line: Callable[[str], None] | None = None, quiet: bool = False,
        stdin: str | None = None, env: dict[str, str] | None = None, cwd: str | Path | None = None,
        tail: int = 30, timeout: float | None = None) -> str:
    """Run ARGV, streaming its output (stdout and stderr together) line by line; return it whole.

    On failure raise CommandFailed carrying the command and its last TAIL lines; after TIMEOUT
    seconds stop it and raise CommandFailed too.
    """
    if not quiet:
        say(f"+ {shlex.join(argv)}")
    proc = _start(argv, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, text=True, errors="replace", env=env, cwd=cwd)
    timer = None
    timed_out = threading.Event()
    if timeout is not None:
        def expire():
            timed_out.set()
            _stop([proc], grace=10)
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
    lines: list[str] = []
    last: collections.deque[str] = collections.deque(maxlen=tail)
    with _stopped_on_exit(proc):
        if stdin is not None:  # fed from a thread: a command may write before it has read everything
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            last.append(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    if timer is not None:
        timer.cancel()
    if timed_out.is_set():
        raise failure(argv, code, "\n".join(last) + f"\n(stopped: no end after {timeout:.0f} s)", tail + 1)
    if code != 0:
        raise failure(argv, code, "\n".join(last), tail)
    return "\n".join(lines)


def _feed(pipe, text: str) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(text)
        pipe.close()


def call(argv: list[str], *, input: str | bytes | None = None, binary: bool = False, capture: bool = True,
         timeout: float | None = None, env: dict[str, str] | None = None,
         cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run a short command to its end, quietly; the caller judges its exit code.

    Output is captured (stdout and stderr apart; bytes when BINARY) unless CAPTURE is false,
    when it goes to this process's own stdout and stderr. After TIMEOUT seconds the command's
    group is stopped and subprocess.TimeoutExpired raised.
    """
    pipe = subprocess.PIPE if capture else None
    proc = _start(argv, stdin=subprocess.PIPE if input is not None else None, stdout=pipe, stderr=pipe,
                  text=not binary, env=env, cwd=cwd)
    with _stopped_on_exit(proc):
        stdout, stderr = proc.communicate(input, timeout=timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def execute(argv: list[str], *, check: bool = True, input: str | bytes | None = None, binary: bool = False,
            timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a short command and capture its output (text unless BINARY or INPUT is bytes), by default with
    this machine's own podman; on failure (CHECK) raise CommandFailed with the end of its stderr."""
    proc = call(argv, input=input, binary=binary or isinstance(input, bytes), timeout=timeout, env=env or local_env())
    if check and proc.returncode != 0:
        raise failure(argv, proc.returncode, proc.stderr)
    return proc


def local_env() -> dict[str, str]:
    """This machine's environment for its own podman (never a remote CONTAINER_HOST)."""
    return {k: v for k, v in os.environ.items() if k != "CONTAINER_HOST"}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def copy_image(ref: str, load_argv: list[str], env: dict[str, str] | None = None) -> None:
    """`podman save REF | LOAD_ARGV`: copy an image from this machine's storage into another one.
    LOAD_ARGV ends in `podman load` run where the image should go (env: for a remote podman)."""
    save = _start(["podman", "save", ref], stdout=subprocess.PIPE, env=local_env())
    with _stopped_on_exit(save):
        load = _start(load_argv, stdin=save.stdout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                      env=env or local_env())
        save.stdout.close()  # load holds the pipe now; save sees EPIPE if load dies
        with _stopped_on_exit(load):
            output, _ = load.communicate()
        saved = save.wait()
    if saved != 0 or load.returncode != 0:
        raise failure(load_argv, load.returncode or saved, f"(podman save {ref} | ...)\n{output}")


def capture(argv: list[str], cwd: Path | None = None) -> str:
    """Run a short query command quietly and return its stripped output."""
    return run(argv, quiet=True, cwd=cwd).strip()


def image_field(ref: str, template: str) -> str | None:
    """A field of a local image (a podman --format template), or None when there is no such image."""
    try:
        return capture(["podman", "image", "inspect", "--format", template, ref])
    except CommandFailed:
        return None


def image_label(ref: str, label: str) -> str | None:
    return image_field(ref, f'{{{{ index .Labels "{label}" }}}}')


def unique(prefix: str) -> str:
    """A name for something we start (container, volume, network) that no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(condition, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll CONDITION until it returns something truthy; raise after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise PipglrError(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")
