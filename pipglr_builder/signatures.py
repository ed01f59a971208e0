"""OpenPGP signatures, checked with gpgv against one given keyring and no other.

gpgv runs in an empty home of its own, so no trustedkeys.kbx of this user
counts; every key in the keyring is trusted, nothing else is.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path

from . import processes
from .errors import CommandFailed

# What gpgv's status lines mean to someone reading the error.
PROBLEMS = {"BADSIG": "BAD signature: the file was changed after it was signed",
            "NO_PUBKEY": "signed by a key that is not in the keyring",
            "EXPKEYSIG": "signed by an expired key", "REVKEYSIG": "signed by a revoked key",
            "NODATA": "no signature in it"}


class BadSignature(Exception):
    """The reason a signature was refused (the caller says which file and what it means)."""


def dearmored(data: bytes) -> bytes:
    """Binary keys from ASCII-armored key blocks: gpgv 2.2 reads only binary keyrings and keyboxes
    ("invalid packet (ctb=2d)" for an .asc)."""
    blocks = re.findall(rb"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----",
                        data, re.DOTALL)
    if not blocks:
        return data
    out = b""
    for block in blocks:
        body = block.replace(b"\r", b"").partition(b"\n\n")[2] or block  # armor headers end at a blank line
        try:
            out += base64.b64decode(b"".join(l for l in body.split() if not l.startswith(b"=")))  # "=XXXX": CRC
        except ValueError:
            raise BadSignature("a PGP PUBLIC KEY BLOCK in the keyring is damaged (not base64)") from None
    return out


def verify(keyring: Path, signed: bytes, data: bytes | None = None) -> bytes:
    """Check SIGNED (a detached signature of DATA, or a clearsigned text when DATA is None) with KEYRING.
    Returns what the signature covers (for a clearsigned text: only the signed part); raises BadSignature."""
    processes.require("gpgv")
    try:
        key = dearmored(keyring.read_bytes())
    except OSError as e:
        raise BadSignature(f"cannot read the keyring {keyring} ({e.strerror})") from None
    with tempfile.TemporaryDirectory(prefix="pipglr-gpgv-") as tmp:
        work = Path(tmp)
        (work / "keyring.gpg").write_bytes(key)
        (work / "signed").write_bytes(signed)
        files = [str(work / "signed")]
        if data is not None:
            (work / "data").write_bytes(data)
            files.append(str(work / "data"))
        argv = ["gpgv", "--homedir", tmp, "--status-fd", "1", "--keyring", str(work / "keyring.gpg"),
                *(["--output", str(work / "content")] if data is None else []), *files]
        try:
            status, ok = processes.capture(argv), True
        except CommandFailed as e:
            status, ok = str(e), False
        if ok and "[GNUPG:] VALIDSIG " in status:
            return data if data is not None else (work / "content").read_bytes()
    why = [text for word, text in PROBLEMS.items() if f"[GNUPG:] {word}" in status]
    raise BadSignature("; ".join(why) or status.strip().splitlines()[-1].strip())
