"""publish: push built images and manifest lists to a registry, and read back what it holds.

Pushing uses buildah (the images live in buildah's storage); reading back
uses `skopeo inspect --raw`, so the digest reported is the sha256 of the
exact bytes the registry serves for a tag. Commands are built by pure
functions (`*_argv`) so tests can read them as data.

Passwords only ever travel on stdin: they are never in an argv, a log line
or an exception message. Failures name the cause (connection refused, TLS,
authentication) and the setting that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import buildah, processes
from .errors import CommandFailed, PipglrError


class PublishError(PipglrError):
    """Pushing to or reading from a registry failed."""


# Reference grammar of the distribution spec (lower-case path components, tags up to 128 chars).
NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

LIST_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


@dataclass(frozen=True)
class Registry:
    """Where to push: ADDRESS is host:port (no scheme), the rest are the usual container-tools flags."""

    address: str
    tls_verify: bool = True
    cert_dir: str | None = None  # a directory holding ca.crt (as --cert-dir takes it)
    authfile: str | None = None  # containers-auth.json; None: the tools' default

    def __post_init__(self):
        if "://" in self.address or "/" in self.address or not self.address:
            raise PublishError(
                f"registry address {self.address!r} is not host[:port]: give it without a scheme or path, "
                f"e.g. 'registry.example.com:5000' (use tls_verify=False for a plain-HTTP registry)."
            )

    def ref(self, name: str, tag: str) -> str:
        """ADDRESS/NAME:TAG, after checking NAME and TAG are valid."""
        if not NAME.match(name):
            raise PublishError(
                f"image name {name!r} is not a valid repository name: use lower-case letters, digits and "
                f"separators (. _ -) in '/'-separated parts, e.g. 'team/pipglr'."
            )
        if not TAG.match(tag):
            raise PublishError(
                f"tag {tag!r} is not valid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'."
            )
        return f"{self.address}/{name}:{tag}"

    def flags(self) -> list[str]:
        """--tls-verify, --cert-dir and --authfile as buildah, podman and skopeo all take them."""
        argv = [f"--tls-verify={'true' if self.tls_verify else 'false'}"]
        if self.cert_dir:
            argv += ["--cert-dir", self.cert_dir]
        if self.authfile:
            argv += ["--authfile", self.authfile]
        return argv


# --- argv builders (pure) ---------------------------------------------------------------------------------------


def login_argv(registry: Registry, username: str) -> list[str]:
    """podman login reading the password from stdin (it is never an argument)."""
    return ["podman", "login", *registry.flags(), "--username", username, "--password-stdin", registry.address]


def manifest_push_argv(local_ref: str, registry: Registry, name: str, tag: str, digestfile: str) -> list[str]:
    """buildah manifest push of a local manifest list and every image in it."""
    return buildah.manifest_push_argv(local_ref, f"docker://{registry.ref(name, tag)}", registry.flags(), digestfile)


def image_push_argv(local_ref: str, registry: Registry, name: str, tag: str, digestfile: str) -> list[str]:
    """buildah push of one single-platform image."""
    return buildah.push_argv(local_ref, f"docker://{registry.ref(name, tag)}", registry.flags(), digestfile)


def inspect_raw_argv(registry: Registry, name: str, tag: str, *, config: bool = False) -> list[str]:
    """skopeo inspect --raw: the manifest (or with CONFIG the image config) exactly as the registry serves it."""
    return ["skopeo", "inspect", "--raw", *(["--config"] if config else []), *registry.flags(),
            f"docker://{registry.ref(name, tag)}"]


# --- reading manifests (pure) -----------------------------------------------------------------------------------


def digest_of(raw: bytes) -> str:
    """The content digest of a manifest: sha256 of its exact bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _platform(os_: str | None, arch: str | None, variant: str | None) -> str | None:
    if not os_ or not arch or "unknown" in (os_, arch):
        return None  # e.g. attestation manifests in an index
    return "/".join(p for p in (os_, arch, variant) if p)


def platforms_of_list(raw: bytes) -> list[str] | None:
    """Platforms ("linux/arm64", "linux/arm/v7") named by a manifest list or OCI index; None if RAW is not one."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise PublishError("the registry returned a manifest that is not JSON") from None
    if doc.get("mediaType") not in LIST_TYPES and "manifests" not in doc:
        return None
    found = []
    for entry in doc.get("manifests", []):
        p = entry.get("platform") or {}
        platform = _platform(p.get("os"), p.get("architecture"), p.get("variant"))
        if platform and platform not in found:
            found.append(platform)
    return sorted(found)


# --- explaining failures (pure) ---------------------------------------------------------------------------------


def scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def is_not_found(output: str) -> bool:
    """The registry answered, and has no such tag (or no such repository)."""
    low = output.lower()
    return "manifest unknown" in low or "name unknown" in low or "repository name not known" in low


def explain(output: str, registry: Registry) -> str | None:
    """One paragraph naming why talking to REGISTRY failed and how to fix it; None if OUTPUT is not recognised.

    OUTPUT is the tool's own output, not the command line (whose paths and names could contain any word).
    """
    low = output.lower()
    where = registry.address
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "no route to host",
                              "network is unreachable", "connection reset")):
        return (f"cannot reach the registry at {where} (connection refused or no route): check that the registry "
                f"is running and that the address host:port is right.")
    if "server gave http response to https client" in low:
        return (f"the registry at {where} speaks plain HTTP, but TLS verification is on: for a plain-HTTP "
                f"registry set tls_verify=False (--tls-verify=false), or serve the registry over TLS.")
    if re.search(r"\b(x509|tls): ", low):
        if registry.cert_dir:
            hint = (f"the cert dir {registry.cert_dir} does not hold the CA that signed the registry's certificate "
                    f"(or the certificate does not name {where.rsplit(':', 1)[0]}): put that CA there as ca.crt")
        else:
            hint = (f"pass the directory holding the CA certificate that signed the registry's certificate as "
                    f"cert_dir (--cert-dir DIR with DIR/ca.crt), or install it as "
                    f"/etc/containers/certs.d/{where}/ca.crt")
        return (f"TLS verification of the registry at {where} failed: {hint}; tls_verify=False "
                f"(--tls-verify=false) skips the check, for test registries only.")
    if "invalid username/password" in low:
        return (f"the registry at {where} refused the user name or password: check both (and that the account "
                f"exists on the registry), then log in again.")
    if any(s in low for s in ("unauthorized: ", "authentication required", "access to the resource is denied",
                              "401 unauthorized")):
        authfile = registry.authfile or "the default auth file"
        return (f"the registry at {where} wants credentials it did not get (not logged in, or logged in with "
                f"another auth file, or this user may not do that): log in with publish.login() "
                f"(podman login --authfile {authfile} {where}) and use the same authfile here.")
    return None


def tool_output(text: str) -> str:
    """What the program printed: a CommandFailed message without the command line processes.run puts first."""
    return text.split("Last output:", 1)[-1]


def _failure(what: str, output: str, registry: Registry, *secrets: str | None) -> PublishError:
    reason = explain(tool_output(output), registry)
    detail = scrub(output.strip(), *secrets)
    if reason:
        return PublishError(f"{what}: {reason}\n{detail}")
    return PublishError(f"{what} failed.\n{detail}")


# --- running ------------------------------------------------------------------------------------------------------


def _run_raw(argv: list[str]) -> tuple[int, bytes, str]:
    """Run a query whose stdout must be kept byte for byte (processes.run works in text lines and merges stderr)."""
    try:
        proc = processes.call(argv, binary=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise PublishError(f"`{shlex.join(argv)}` did not finish within 300s: is the registry answering?") from None
    return proc.returncode, proc.stdout, proc.stderr.decode(errors="replace")


def _inspect_raw(registry: Registry, name: str, tag: str, *, config: bool = False) -> bytes | None:
    code, out, err = _run_raw(inspect_raw_argv(registry, name, tag, config=config))
    if code == 0:
        return out
    if is_not_found(err):
        return None
    raise _failure(f"reading {registry.ref(name, tag)} from the registry", err, registry)


def login(registry: Registry, username: str, password_stdin: str) -> None:
    """Log in to REGISTRY, storing the credentials in registry.authfile; the password goes through stdin."""
    if not username or not password_stdin:
        raise PublishError(f"logging in to {registry.address} needs a user name and a password.")
    argv = login_argv(registry, username)
    try:
        processes.run(argv, stdin=password_stdin + "\n")  # logs the argv: the password is only on stdin
    except CommandFailed as e:
        raise _failure(f"logging in to {registry.address} as {username}", str(e), registry, password_stdin) from None
    processes.say(f"publish: logged in to {registry.address} as {username}")


def _read_digest(path: Path) -> str | None:
    text = path.read_text().strip() if path.exists() else ""
    return text if DIGEST.match(text) else None


def _push(argv_for, kind: str, local_ref: str, registry: Registry, name: str, tags: Iterable[str]) -> dict[str, str]:
    tags = list(tags)
    if not tags:
        raise PublishError(f"no tags given to push {local_ref} to: name at least one.")
    refs = {tag: registry.ref(name, tag) for tag in tags}  # validate every name before pushing anything
    if registry.authfile and not Path(registry.authfile).exists():
        raise PublishError(
            f"the auth file {registry.authfile} does not exist (buildah refuses to push with it): log in first "
            f"with publish.login(), or leave authfile unset for a registry without authentication."
        )
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pipglr-push-") as tmp:
        for tag in tags:
            digestfile = Path(tmp) / f"{tag}.digest"
            argv = argv_for(local_ref, registry, name, tag, str(digestfile))
            try:
                processes.run(argv)  # logs the argv: it holds no credentials
            except CommandFailed as e:
                text = str(e)
                printed = tool_output(text)
                if "is not a manifest list" in printed:
                    raise PublishError(f"{local_ref} is a single image, not a manifest list: push it with "
                                       f"push_image(), or build it for several platforms.") from None
                if "image not known" in printed:
                    raise PublishError(f"there is no local image or manifest list named {local_ref}: build it "
                                       f"first (./build.py build), or check the name with `buildah images`.") from None
                raise _failure(f"pushing {local_ref} to {refs[tag]}", text, registry) from None
            digest = _read_digest(digestfile)
            if digest is None:
                # buildah 1.28 `manifest push --digestfile` exits 0 and leaves the file empty when the push
                # failed; the reason is lost, so ask the registry ourselves.
                raise _silent_failure(argv, local_ref, registry, name, tag)
            held = remote_digest(registry, name, tag)
            if held != digest:
                raise PublishError(
                    f"pushed {local_ref} to {refs[tag]} as {digest}, but the registry now serves "
                    f"{held or 'nothing'} for that tag: is someone else pushing to it at the same time?"
                )
            processes.say(f"publish: {kind} {local_ref} -> {refs[tag]} is {digest}")
            digests[tag] = digest
    return digests


def _silent_failure(argv: list[str], local_ref: str, registry: Registry, name: str, tag: str) -> PublishError:
    """buildah 1.28 `manifest push --digestfile` exits 0 with an empty digest file whenever the push fails
    (connection refused, TLS, authentication alike), and prints no reason; skopeo, asked the same registry, says why."""
    what = f"pushing {local_ref} to {registry.ref(name, tag)} failed (buildah exited 0 but wrote no digest)"
    code, _, err = _run_raw(inspect_raw_argv(registry, name, tag))
    reason = explain(err, registry) if code != 0 else None
    if reason:
        return PublishError(f"{what}: {reason}\nskopeo, asked the same registry: {err.strip()}")
    shown = shlex.join([a for a in argv if a != "--quiet"])
    return PublishError(f"{what}, and the registry answers skopeo. Run `{shown}` by hand without --digestfile "
                        f"to see buildah's reason.")


def push_manifest(local_ref: str, registry: Registry, name: str, tags: Iterable[str]) -> dict[str, str]:
    """Push the local manifest list LOCAL_REF and all its images to NAME:TAG for each tag; return {tag: digest}.

    The digest is that of the manifest list as the registry stores it (buildah may convert the local list to
    an OCI index, so it differs from the local list's digest); it is checked against the registry after each push.
    """
    return _push(manifest_push_argv, "manifest list", local_ref, registry, name, tags)


def push_image(local_ref: str, registry: Registry, name: str, tags: Iterable[str]) -> dict[str, str]:
    """Push one single-platform image to NAME:TAG for each tag; return {tag: digest of the image manifest}."""
    return _push(image_push_argv, "image", local_ref, registry, name, tags)


def remote_digest(registry: Registry, name: str, tag: str) -> str | None:
    """The digest ("sha256:...") of what REGISTRY holds for NAME:TAG, or None if there is no such tag."""
    raw = _inspect_raw(registry, name, tag)
    return None if raw is None else digest_of(raw)


def remote_platforms(registry: Registry, name: str, tag: str) -> list[str]:
    """The platforms NAME:TAG provides, e.g. ["linux/amd64", "linux/arm64"] (one, for a single image)."""
    raw = _inspect_raw(registry, name, tag)
    if raw is None:
        raise PublishError(f"{registry.ref(name, tag)} does not exist in the registry: push it first, "
                           f"or check the name and tag.")
    platforms = platforms_of_list(raw)
    if platforms is not None:
        return platforms
    config = _inspect_raw(registry, name, tag, config=True)
    try:
        doc = json.loads(config or b"{}")
    except ValueError:
        doc = {}
    platform = _platform(doc.get("os"), doc.get("architecture"), doc.get("variant"))
    if platform is None:
        raise PublishError(f"{registry.ref(name, tag)} is a single image whose config names no platform.")
    return [platform]
