"""Shared test setup.

Unit tests may not run host programs: an autouse fixture makes every start
of a program (processes._start) fail unless the test is marked `tools` or
`slow`, or the program is a read-only query (UNIT_TEST_QUERIES). Integration
tests use unique names and remove what they create.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipglr_builder import config, helper_image, processes
from pipglr_builder.base_image import base_tag
from pipglr_builder.processes import wait_for

# Read-only queries unit tests may make: config validation asks systemd-analyze
# whether a schedule is valid, render asks git for the commit.
UNIT_TEST_QUERIES = {"systemd-analyze", "git"}


@pytest.fixture(autouse=True)
def _no_host_programs_in_unit_tests(request, monkeypatch):
    """Every program starts in processes._start: a unit test reaching it fails, unless it is marked."""
    if request.node.get_closest_marker("tools") or request.node.get_closest_marker("slow"):
        return
    start = processes._start

    def refuse(argv, **kwargs):
        if Path(argv[0]).name not in UNIT_TEST_QUERIES:
            raise AssertionError(f"unit test tried to run {argv[0]}; mark it @pytest.mark.tools")
        return start(argv, **kwargs)

    monkeypatch.setattr(processes, "_start", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private cache directory for tests that must not touch the real one."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PIPGLR_CACHE", str(path))
    return path


def need(*programs: str) -> None:
    """Integration tests need the host set up by scripts/setup-host.sh (make test does it)."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing {missing}: run `make test` (it runs scripts/setup-host.sh) or install them")


IMAGE_NAME = "localhost/pipglr-test"
# What the image fixture's build (default settings) makes beside the image: the Debian base (the tests'
# job image, and the stand-in hosts' base) and the helper image under the runner's own name for it.
DEFAULTS = config.load(None)
BASE = base_tag(DEFAULTS, "amd64")
HELPER = helper_image.names(DEFAULTS, "amd64")[0]
HELPER_WRITTEN = helper_image.written(DEFAULTS, "amd64")  # what register puts in config.toml (the runner expands it)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """A short command, its output captured; CommandFailed when CHECK and it fails."""
    return processes.execute(list(argv), check=check)


def cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run build.py as a user would (with ENV instead of this process's environment when given)."""
    proc = processes.call([sys.executable, str(ROOT / "build.py"), *args], cwd=ROOT, timeout=3000, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"build.py {shlex.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def keygen(directory: Path, *names: str) -> Path:
    """`pipglr-build keygen DIRECTORY/NAME` for each of NAMES, as a publisher makes a key pair, with one passphrase
    in DIRECTORY/passphrase (never in the output); DIRECTORY."""
    passphrase = directory / "passphrase"
    passphrase.write_text(f"pipglr-{uuid.uuid4().hex}\n")
    for name in names:
        proc = cli("keygen", str(directory / name), "--passphrase-file", str(passphrase))
        assert "sha256:" in proc.stdout and passphrase.read_text().strip() not in proc.stdout + proc.stderr
    return directory


def stop_midway(*args: str, when, timeout: float, what: str, exit_within: float) -> tuple[int, str]:
    """Run build.py ARGS, send it SIGTERM once WHEN(its stderr so far) is true (within TIMEOUT), give it
    EXIT_WITHIN seconds to exit; return (exit code, stderr)."""
    # A bare Popen: the test reads build.py's stderr while it runs and signals it midway, which
    # processes.run and processes.call (each to the command's end) do not offer.
    proc = subprocess.Popen([sys.executable, str(ROOT / "build.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: when("".join(lines)), timeout, what=what)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=exit_within)
    finally:
        proc.kill()
        reader.join(timeout=10)
    return proc.returncode, "".join(lines)


def runner_args() -> list[str]:
    """The real gitlab-runner and helper from its Go module (built once by `make test`, then cached), and the
    pull policy of an air-gapped host: the tests' jobs use preloaded images only."""
    return ["--runner-source", "gomodule", "--pull-policy", "if-not-present"]


def listed(*argv: str) -> list[str]:
    """The words a listing command (`podman images`, `buildah containers`) prints, asked again while it fails:
    podman fails a listing with "image not known" when the other test worker removes an image meanwhile."""
    done = wait_for(lambda: (proc := sh(*argv, check=False)).returncode == 0 and proc,
                    timeout=60, interval=1, what=f"`{' '.join(argv[:2])}` to list")
    return done.stdout.split()


def local_image_refs() -> list[str]:
    """REPOSITORY:TAG of every image in this machine's storage."""
    return listed("podman", "images", "--format", "{{.Repository}}:{{.Tag}}")


def image_exists(ref: str) -> bool:
    return sh("podman", "image", "exists", ref, check=False).returncode == 0


@contextlib.contextmanager
def one_worker_at_a_time(name: str):
    """`make test` runs two pytest workers (pytest-xdist): what both need built, they build in turn, and the
    second finds the first's by its inputs instead of building it again beside it."""
    with open(Path(tempfile.gettempdir()) / f"pipglr-tests-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def image():
    """The amd64 image, built once per test run (per pytest worker: the second reuses the first's build by its
    inputs) and removed at the end."""
    need("buildah", "podman", "mmdebstrap")
    tag = f"t-{uuid.uuid4().hex[:8]}"
    with one_worker_at_a_time("image"):
        proc = cli("build", "--image-name", IMAGE_NAME, "--tags", tag, *runner_args())
    ref = f"{IMAGE_NAME}:{tag}"
    assert proc.stdout.strip().splitlines()[-1] == ref
    yield ref
    if not os.environ.get("PIPGLR_KEEP_IMAGES"):
        sh("podman", "rmi", "--force", ref, check=False)


@pytest.fixture
def fresh_storage():
    """A private podman storage (vfs, own root/runroot/tmpdir): pulls there never touch the host's images.

    Not under tmp_path: podman 4.3 refuses a runroot longer than 50 characters.
    """
    base = Path(tempfile.mkdtemp(prefix="pipglr-pull-"))
    dirs = [base / "root", base / "run", base / "tmp"]
    for d in dirs:
        d.mkdir()
    podman = ["podman", "--root", str(dirs[0]), "--runroot", str(dirs[1]), "--tmpdir", str(dirs[2]),
              "--storage-driver", "vfs", "--events-backend", "none"]
    try:
        yield podman
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- OpenPGP keys made by the tests (signed releases, signed archives) ---------

def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    argv = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args]
    return processes.execute(argv, input=stdin, binary=True).stdout


@pytest.fixture(scope="session")
def signing_keys():
    """Two keys made here: 'trusted' (the tests' keyrings hold it) and 'other'. {name: (home, fingerprint)}."""
    # Short paths: gpg-agent's socket path must stay under 108 characters.
    homes = {name: Path(tempfile.mkdtemp(prefix=f"pipglr-gpg-{name}-")) for name in ("trusted", "other")}
    keys = {}
    try:
        for name, home in homes.items():
            home.chmod(0o700)
            gpg(home, "--quick-gen-key", f"{name} test key <{name}@example.invalid>", "ed25519", "sign", "never")
            listing = gpg(home, "--with-colons", "--list-keys").decode()
            keys[name] = (home, next(l.split(":")[9] for l in listing.splitlines() if l.startswith("fpr:")))
        yield keys
    finally:
        for home in homes.values():
            processes.call(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"])
            shutil.rmtree(home, ignore_errors=True)


def sign(keys, name: str, data: bytes, clear: bool = False) -> bytes:
    """A detached armored signature of DATA, or DATA clearsigned (like Debian's InRelease)."""
    home, fingerprint = keys[name]
    return gpg(home, "--local-user", fingerprint, *(["--clearsign"] if clear else ["--armor", "--detach-sign"]),
               stdin=data)


def keyring(keys, path: Path, armored: bool = True) -> Path:
    """PATH holding the public key of 'trusted' only."""
    path.write_bytes(gpg(keys["trusted"][0], *(["--armor"] if armored else []), "--export"))
    return path


@contextlib.contextmanager
def file_server(lookup):
    """An HTTP server on loopback answering GET PATH with the bytes lookup(PATH) gives (404 for None);
    yields its URL and the list of paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            body = lookup(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"not found")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
