"""A real registry for tests: distribution's `docker-registry` on 127.0.0.1, optionally with TLS and basic auth.

    running = start_registry(tmp_path, tls=True, auth=True)
    try:
        publish.login(running.registry, running.username, running.password)
        ...
    finally:
        running.stop()

Everything it makes (storage, config, certificates, htpasswd, log) lives
under the directory it is given. With TLS a throw-away CA signs a server
certificate for IP 127.0.0.1 and DNS localhost; `cert_dir` holds only that
CA's ca.crt, as --cert-dir expects. The registry listens on loopback only.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipglr_builder import processes
from pipglr_builder.publish import Registry

REGISTRY_BINARY = "docker-registry"  # Debian package docker-registry (distribution 2.8)


@dataclass
class RunningRegistry:
    address: str  # 127.0.0.1:PORT
    cert_dir: str | None  # holds ca.crt when TLS is on
    username: str | None
    password: str | None
    registry: Registry  # tls_verify/cert_dir/authfile set to talk to this registry
    log: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.registry.tls_verify else 'http'}://{self.address}"

    def stop(self) -> None:
        """Kill the registry and wait for it to be gone (safe to call twice)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def _run(*argv: str) -> str:
    return processes.execute(list(argv), timeout=60).stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(directory: Path, server: str = "localhost", alt_names: str = "IP:127.0.0.1, DNS:localhost",
                      ca_name: str = "pipglr test registry CA") -> tuple[Path, Path, Path]:
    """A test CA (CA_NAME) and a server certificate it signs for SERVER (ALT_NAMES, by default 127.0.0.1
    and localhost): (ca.crt, server.crt, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
         "-subj", f"/CN={ca_name}")
    _run("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={server}")
    extensions = directory / "server.ext"
    extensions.write_text("basicConstraints = critical, CA:FALSE\n"
                          "keyUsage = critical, digitalSignature, keyEncipherment\n"
                          "extendedKeyUsage = serverAuth\n"
                          f"subjectAltName = {alt_names}\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(extensions))
    return ca_crt, crt, key


def _config(storage: Path, port: int, tls: tuple[Path, Path] | None, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if tls:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if htpasswd:
        lines += ["auth:", "  htpasswd:", "    realm: pipglr-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def _answers(url: str, context: ssl.SSLContext | None, auth: bool) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=2, context=context) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        return auth and e.code == 401
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def start_registry(directory: Path, tls: bool, auth: bool, timeout: float = 30.0) -> RunningRegistry:
    """Start docker-registry under DIRECTORY and return once it answers GET /v2/ (401 counts when AUTH)."""
    directory.mkdir(parents=True, exist_ok=True)
    tls_files = None
    cert_dir = None
    context = None
    if tls:
        ca_crt, crt, key = make_certificates(directory / "tls")
        cert_dir = directory / "certs"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / "ca.crt").write_bytes(ca_crt.read_bytes())  # only the CA: a stray *.key would be read as a client key
        tls_files = (crt, key)
        context = ssl.create_default_context(cafile=str(ca_crt))
    username = password = htpasswd = None
    if auth:
        username, password = "pipglr-tester", secrets.token_urlsafe(12)
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(_run("htpasswd", "-Bbn", username, password))
    authfile = str(directory / "auth.json") if auth else None

    last_error = ""
    for _attempt in range(5):  # the free port can be taken between choosing it and the registry binding it
        port = _free_port()
        config = directory / "config.yml"
        config.write_text(_config(directory / "storage", port, tls_files, htpasswd))
        log = directory / "registry.log"
        with log.open("wb") as out:
            # A bare Popen: the registry serves in the background until stop(); processes starts
            # only commands it waits for.
            process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        address = f"127.0.0.1:{port}"
        running = RunningRegistry(
            address=address, cert_dir=str(cert_dir) if cert_dir else None, username=username, password=password,
            registry=Registry(address, tls_verify=tls, cert_dir=str(cert_dir) if cert_dir else None,
                              authfile=authfile),
            log=log, process=process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(running.url, context, auth):
                return running
            time.sleep(0.05)  # poll interval, not a fixed wait
        running.stop()
        last_error = running.log_tail()
        if "address already in use" not in last_error:
            break
    raise RuntimeError(f"docker-registry did not answer {running.url}/v2/ within {timeout:.0f}s; its log:\n{last_error}")


# The same registry on a stand-in host's loopback, where its users' podman (and podman auto-update) reach it.
STANDIN_BINARY = "/usr/local/bin/docker-registry"


def standin_volume() -> str:
    """The --volume that puts this machine's docker-registry into a stand-in host (it needs only libc)."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RuntimeError(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    return f"{binary}:{STANDIN_BINARY}:ro"


def serve_in_standin(name: str, ca_dir: Path, port: int = 5000, timeout: float = 60) -> tuple[str, str, str]:
    """Serve a registry with TLS and a login on 127.0.0.1:PORT of stand-in container NAME (started with
    standin_volume()) as the transient system unit pipglr-registry; return (address, username, password) once
    GET /v2/ answers there, refusing a request without the login (401). Its certificate is signed by a
    throw-away CA made in CA_DIR on this machine (CA_DIR/ca.crt)."""
    ca_crt, crt, key = make_certificates(ca_dir)
    username, password = "pipglr-puller", secrets.token_urlsafe(12)
    htpasswd = processes.execute(["htpasswd", "-iBn", username], input=password).stdout
    config, certificate, private, users = ("/etc/pipglr-test-registry.yml", "/etc/pipglr-test-registry.crt",
                                           "/etc/pipglr-test-registry.key", "/etc/pipglr-test-registry.htpasswd")
    for path, text in ((certificate, crt.read_text()), (private, key.read_text()), (users, htpasswd),
                       (config, _config(Path("/var/lib/pipglr-test-registry"), port,
                                        (Path(certificate), Path(private)), Path(users)))):
        processes.execute(["podman", "exec", "--interactive", name, "sh", "-c", f"umask 077 && cat > {path}"],
                          input=text)
    processes.execute(["podman", "exec", name, "systemd-run", "--unit", "pipglr-registry", "--quiet",
                       STANDIN_BINARY, "serve", config])
    url = f"https://127.0.0.1:{port}/v2/"
    ca_inside = "/etc/pipglr-test-registry-ca.crt"
    processes.execute(["podman", "exec", "--interactive", name, "sh", "-c", f"cat > {ca_inside}"],
                      input=ca_crt.read_text())
    status = ["podman", "exec", name, "curl", "-sS", "--output", "/dev/null", "--write-out", "%{http_code}",
              "--cacert", ca_inside, url]
    processes.wait_for(lambda: processes.execute(status, check=False).stdout == "401", timeout,
                       what=f"the registry in the stand-in host to answer {url} (401 without a login)")
    return f"127.0.0.1:{port}", username, password
