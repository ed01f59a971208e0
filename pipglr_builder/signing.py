"""signing: sigstore signatures on what `nightly` pushes, stored in the registry beside the image.

The key is a cosign-format key pair (PREFIX.private or cosign.key, with its
.pub beside it), made once by the publisher (`pipglr-build keygen`, or
`skopeo generate-sigstore-key` >= 1.10, or `cosign generate-key-pair`).
Signing runs trixie's skopeo in a throw-away container of the signer image
(templates/signer/Containerfile): Debian 12's skopeo and podman refuse to
sign with sigstore keys. skopeo copies each pushed tag onto itself with
--preserve-digests, so the digests do not change, and attaches one signature
to the manifest list and one to each platform's image
(`sha256-DIGEST.sig` tags, registries.d `use-sigstore-attachments`).

Not to be confused with signatures.py (Debian's OpenPGP-signed indexes).

The private key is mounted read-only into the --rm container and its
passphrase goes in on stdin: neither is ever in an argv, an image, a label
or a log line.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from . import buildah, processes
from .errors import CommandFailed, PipglrError

CONTEXT = Path(__file__).resolve().parent / "templates" / "signer"
PASSPHRASE_ENV = "PIPGLR_SIGN_PASSPHRASE"


class SigningError(PipglrError):
    """A key is missing or unusable, or signing failed."""


def signer_image(base_image: str) -> str:
    """The signer image's tag: keyed by its Containerfile and the base it is built on."""
    key = hashlib.sha256((CONTEXT / "Containerfile").read_bytes() + buildah.base_id(base_image).encode())
    return f"localhost/pipglr-signer:{key.hexdigest()[:12]}"


def ensure_signer(base_image: str) -> str:
    """Build the signer image on BASE_IMAGE unless it exists; its tag."""
    image = signer_image(base_image)
    if processes.execute(["podman", "image", "exists", image], check=False).returncode != 0:
        processes.say(f"signing: building {image} (skopeo from {base_image})")
        processes.run(buildah.bud_argv(CONTEXT, image, args=buildah.build_args({"BASE_IMAGE": base_image}),
                                       containerfile=CONTEXT / "Containerfile"), quiet=True)
    return image


def public_key_of(private_key: Path) -> Path:
    """The public key beside PRIVATE_KEY: pipglr.private -> pipglr.pub, cosign.key -> cosign.pub."""
    return private_key.with_suffix(".pub")


def passphrase(passphrase_file: str) -> str:
    """The key's passphrase: from PASSPHRASE_FILE when given, else from $PIPGLR_SIGN_PASSPHRASE."""
    if passphrase_file:
        try:
            return Path(passphrase_file).read_text().rstrip("\n")
        except OSError as e:
            raise SigningError(f"cannot read the signing passphrase file {passphrase_file}: {e.strerror}") from None
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        raise SigningError(f"no passphrase for the signing key: give publish_sign_passphrase_file "
                           f"(--publish-sign-passphrase-file FILE) or set {PASSPHRASE_ENV}")
    return value


def check_key(private_key: str) -> tuple[Path, Path]:
    """PRIVATE_KEY and its public key, both present and of the right kind; a clear error otherwise."""
    key = Path(private_key).expanduser().resolve()
    pub = public_key_of(key)
    if not key.is_file():
        raise SigningError(f"the signing key {key} does not exist: make one with `pipglr-build keygen PREFIX`")
    head = key.read_bytes()[:64]
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" not in head and b"ENCRYPTED COSIGN PRIVATE KEY" not in head:
        raise SigningError(f"{key} is not an encrypted sigstore/cosign private key (made by `pipglr-build keygen`, "
                           f"`skopeo generate-sigstore-key` or `cosign generate-key-pair`)")
    if not pub.is_file() or b"BEGIN PUBLIC KEY" not in pub.read_bytes():
        raise SigningError(f"no public key {pub} beside the signing key {key}: it is published with the image")
    return key, pub


def fingerprint(public_key: Path) -> str:
    """sha256 of the public key file, as users compare it before trusting it."""
    return "sha256:" + hashlib.sha256(public_key.read_bytes()).hexdigest()


def signature_tag(digest: str) -> str:
    """The tag under which sigstore attachments of DIGEST are stored (sha256-HEX.sig)."""
    return digest.replace(":", "-", 1) + ".sig"


def registries_d(scope: str) -> str:
    """The registries.d YAML that stores and finds sigstore signatures for SCOPE in the registry itself."""
    return f"docker:\n  {scope}:\n    use-sigstore-attachments: true\n"


def sign_argv(signer: str, ref: str, mounts: list[str], *, tls_verify: bool, cert_dir: bool, authfile: bool) -> list[str]:
    """podman run of the signer: skopeo copies REF onto itself, digests kept, signing the list and each image.
    CERT_DIR and AUTHFILE: whether MOUNTS bring them in (pure, for the unit tests)."""
    tls = "true" if tls_verify else "false"
    flags = [f"--src-tls-verify={tls}", f"--dest-tls-verify={tls}"]
    if cert_dir:
        flags += ["--src-cert-dir", "/signing/certs", "--dest-cert-dir", "/signing/certs"]
    if authfile:
        flags += ["--authfile", "/signing/auth.json"]
    return ["podman", "run", "--rm", "--interactive", "--network", "host", "--security-opt", "label=disable",
            *(arg for m in mounts for arg in ("--volume", m)), signer,
            "skopeo", "--registries.d", "/signing/registries.d", "copy", "--all", "--preserve-digests", "--quiet",
            *flags, "--sign-by-sigstore-private-key", "/signing/key", "--sign-passphrase-file", "/dev/stdin",
            "--digestfile", "/signing/out/digest", f"docker://{ref}", f"docker://{ref}"]


def sign(signer: str, private_key: Path, secret: str, registry, repository: str, tag: str, expected: str) -> None:
    """Sign REGISTRY's REPOSITORY:TAG (which must be EXPECTED, a digest) with PRIVATE_KEY; SECRET is its passphrase."""
    ref = registry.ref(repository, tag)
    with tempfile.TemporaryDirectory(prefix="pipglr-sign-") as tmp:
        work = Path(tmp)
        (work / "registries.d").mkdir()
        (work / "registries.d" / "pipglr.yaml").write_text(registries_d(f"{registry.address}/{repository}"))
        (work / "out").mkdir()
        mounts = [f"{work / 'registries.d'}:/signing/registries.d:ro", f"{work / 'out'}:/signing/out",
                  f"{private_key}:/signing/key:ro"]
        if registry.cert_dir:
            mounts.append(f"{Path(registry.cert_dir).resolve()}:/signing/certs:ro")
        if registry.authfile:
            mounts.append(f"{Path(registry.authfile).resolve()}:/signing/auth.json:ro")
        argv = sign_argv(signer, ref, mounts, tls_verify=registry.tls_verify, cert_dir=bool(registry.cert_dir),
                         authfile=bool(registry.authfile))
        processes.say(f"signing: {ref}")
        try:
            processes.run(argv, stdin=secret + "\n", quiet=True, timeout=1200)
        except CommandFailed as e:
            text = str(e)
            if "decrypt" in text.lower() or "passphrase" in text.lower():
                raise SigningError(f"signing {ref}: the passphrase does not open the key {private_key}") from None
            raise SigningError(f"signing {ref} failed.\n{text}") from None
        digest = (work / "out" / "digest").read_text().strip() if (work / "out" / "digest").exists() else ""
    if digest != expected:
        raise SigningError(f"signing {ref}: skopeo signed {digest or 'nothing'}, but {expected} was pushed "
                           f"(is someone else pushing to that tag?)")


def keygen(signer: str, prefix: Path, secret: str) -> tuple[Path, Path]:
    """Make PREFIX.private (encrypted with SECRET) and PREFIX.pub with skopeo generate-sigstore-key."""
    prefix = prefix.expanduser().resolve()
    private, pub = prefix.with_name(prefix.name + ".private"), prefix.with_name(prefix.name + ".pub")
    if private.exists() or pub.exists():
        raise SigningError(f"{private} or {pub} already exists: choose another prefix (a key is never overwritten)")
    if not prefix.parent.is_dir():
        raise SigningError(f"the directory {prefix.parent} does not exist")
    if len(secret) < 8:
        raise SigningError("the passphrase is shorter than 8 characters: choose a longer one")
    with tempfile.TemporaryDirectory(prefix="pipglr-keygen-", dir=prefix.parent) as tmp:
        os.chmod(tmp, 0o700)
        argv = ["podman", "run", "--rm", "--interactive", "--network", "none", "--security-opt", "label=disable",
                "--volume", f"{tmp}:/out", signer, "skopeo", "generate-sigstore-key", "--output-prefix", "/out/key",
                "--passphrase-file", "/dev/stdin"]
        try:
            processes.run(argv, stdin=secret + "\n", quiet=True, timeout=300)
        except CommandFailed as e:
            raise SigningError(f"making the key failed.\n{e}") from None
        os.chmod(Path(tmp) / "key.private", 0o600)
        os.replace(Path(tmp) / "key.private", private)
        os.replace(Path(tmp) / "key.pub", pub)
    return private, pub
