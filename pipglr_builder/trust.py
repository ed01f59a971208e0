"""trust: make this user's podman accept one repository's images only with a valid sigstore signature.

Writes, for the user who runs it (rootless podman reads these first):
- ~/.config/containers/policy.json: the repository's scope gets a
  `sigstoreSigned` requirement with the published public key (identity
  matchRepoDigestOrExact: a signature made for `latest` does not vouch for
  another tag). Everything else is kept as it was: the user's own file, or a
  copy of /etc/containers/policy.json when the user had none (podman reads
  only one of them).
- ~/.config/containers/registries.d/pipglr-SCOPE.yaml: look the signatures
  up in the registry itself (`use-sigstore-attachments`). When the user had
  no registries.d yet, the system's files are copied in first: podman reads
  the user's directory instead of /etc/containers/registries.d, not besides.
- the public key under ~/.config/containers/pipglr-keys/.

A file that changes is backed up first (NAME.pipglr-backup-TIMESTAMP); a
policy that is not valid JSON is refused and nothing is written. Decisions
are pure functions (merged_policy, plan) the unit tests read against fixtures.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import PipglrError

SYSTEM_DIR = Path("/etc/containers")
FALLBACK_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}  # containers-common's own default
SCOPE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)+$")


class TrustError(PipglrError):
    """The policy cannot be merged: nothing was written."""


@dataclass(frozen=True)
class Change:
    path: Path
    content: str
    mode: int
    backup: bool  # the file exists with other content: keep a copy first


def check_scope(repository: str) -> str:
    """REPOSITORY as a policy scope: host[:port]/path, no scheme, tag or digest."""
    if not SCOPE.match(repository):
        raise TrustError(f"{repository!r} is not a repository as podman names it: give host[:port]/path without a "
                         f"scheme, tag or digest, e.g. registry.example.com/group/pipglr")
    return repository


def slug(scope: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", scope)


def requirement(key_path: str) -> list[dict]:
    return [{"type": "sigstoreSigned", "keyPath": key_path, "signedIdentity": {"type": "matchRepoDigestOrExact"}}]


def parse_policy(text: str, where: Path) -> dict:
    """A policy.json's content, or TrustError naming the file and what is wrong in it."""
    try:
        policy = json.loads(text)
    except ValueError as e:
        raise TrustError(f"{where} is not valid JSON ({e}): podman cannot read it either. Fix it or move it away, "
                         f"then run this again; nothing was changed.") from None
    if not isinstance(policy, dict) or not isinstance(policy.get("default"), list):
        raise TrustError(f"{where} is not a containers policy (it needs a \"default\" list of requirements, see "
                         f"containers-policy.json(5)); nothing was changed.")
    transports = policy.get("transports", {})
    if not isinstance(transports, dict) or not isinstance(transports.get("docker", {}), dict):
        raise TrustError(f"{where}: \"transports\" and its \"docker\" entry must be JSON objects; nothing was changed.")
    return policy


def merged_policy(policy: dict, scope: str, key_path: str) -> dict:
    """POLICY with SCOPE requiring a sigstore signature by KEY_PATH; every other entry as it was."""
    merged = copy.deepcopy(policy)
    merged.setdefault("transports", {}).setdefault("docker", {})[scope] = requirement(key_path)
    return merged


def registries_d_conflict(text: str, scope: str) -> bool:
    """Whether a registries.d YAML file already configures SCOPE (podman refuses two files for one scope)."""
    return re.search(rf"^\s+[\"']?{re.escape(scope)}[\"']?\s*:", text, re.MULTILINE) is not None


def plan(home: Path, scope: str, public_key: bytes, system: Path = SYSTEM_DIR) -> list[Change]:
    """The files to write under HOME so that SCOPE's images need a signature by PUBLIC_KEY (nothing is written)."""
    from .signing import registries_d  # the same YAML the signer uses to store the signatures
    if b"-----BEGIN PUBLIC KEY-----" not in public_key:
        raise TrustError("the key given is not a PEM public key (the .pub beside the signing key, "
                         "-----BEGIN PUBLIC KEY-----)")
    user = home / ".config" / "containers"
    key_path = user / "pipglr-keys" / f"{slug(scope)}.pub"
    changes = [_change(key_path, public_key.decode(), 0o644)]

    policy_path = user / "policy.json"
    source = policy_path if policy_path.exists() else system / "policy.json"
    policy = parse_policy(source.read_text(), source) if source.exists() else FALLBACK_POLICY
    changes.append(_change(policy_path, json.dumps(merged_policy(policy, scope, str(key_path)), indent=4) + "\n",
                           0o644))

    user_d = user / "registries.d"
    ours = user_d / f"pipglr-{slug(scope)}.yaml"
    if not user_d.is_dir() and (system / "registries.d").is_dir():  # keep the system's files in force
        for path in sorted((system / "registries.d").glob("*.yaml")):
            changes.append(_change(user_d / path.name, path.read_text(), 0o644))
    existing = {p: p.read_text() for p in sorted(user_d.glob("*.yaml"))} if user_d.is_dir() else \
        {c.path: c.content for c in changes if c.path.parent == user_d}
    for path, text in existing.items():
        if path != ours and registries_d_conflict(text, scope):
            raise TrustError(f"{path} already configures {scope}, and podman refuses a scope configured in two "
                             f"files: remove it there (or add `use-sigstore-attachments: true` to it yourself); "
                             f"nothing was changed.")
    changes.append(_change(ours, registries_d(scope), 0o644))
    return [c for c in changes if not c.path.exists() or c.path.read_text() != c.content]


def _change(path: Path, content: str, mode: int) -> Change:
    exists = path.exists()
    return Change(path, content, path.stat().st_mode & 0o777 if exists else mode, exists)


def apply(changes: list[Change], now: datetime.datetime | None = None) -> list[str]:
    """Write CHANGES, each after backing up the file it replaces; what was done, one line each."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%dT%H%M%S")
    done = []
    for change in changes:
        change.path.parent.mkdir(parents=True, exist_ok=True)
        if change.backup:
            backup = change.path.with_name(f"{change.path.name}.pipglr-backup-{stamp}")
            backup.write_bytes(change.path.read_bytes())
            os.chmod(backup, change.mode)
            done.append(f"backed up {change.path} to {backup}")
        fd, tmp = tempfile.mkstemp(dir=change.path.parent, prefix=f".{change.path.name}.")
        with os.fdopen(fd, "w") as out:
            out.write(change.content)
        os.chmod(tmp, change.mode)
        os.replace(tmp, change.path)  # whole or not at all: podman never reads a half-written policy
        done.append(f"wrote {change.path}")
    return done
