#!/usr/bin/env bash
# Prepare a Debian-family build/test host for pipglr-builder.
# Safe to run again: every step checks before it changes anything.
# Needs root (apt-get, /etc/containers, binfmt_misc).
set -euo pipefail

log() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: run as root (it installs packages and writes /etc/containers)." >&2
    exit 1
fi

PACKAGES=(
    podman buildah skopeo runc crun uidmap fuse-overlayfs slirp4netns passt
    mmdebstrap arch-test debian-archive-keyring qemu-user-static binfmt-support
    docker-registry apache2-utils openssl zstd jq curl iproute2 nftables
    systemd python3-venv golang-go gpgv gpg gpg-agent git
)
# gpgv checks a release's signed checksums (runner_signing_keyring); gpg and
# gpg-agent only make the tests' keys (gpg merely recommends its agent).
# git: the e2e tests serve jobs a repository they commit on this host.

missing=()
for p in "${PACKAGES[@]}"; do
    # golang-go is only needed where no Go toolchain is installed already.
    if [ "$p" = golang-go ] && command -v go >/dev/null; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "host packages already installed"
fi

# Engine settings for host-level (rootful) podman and buildah.
conf_dir=/etc/containers/containers.conf.d
conf=$conf_dir/50-pipglr-host.conf
mkdir -p "$conf_dir"
want=""
# crun refuses rootful containers on a cgroup v1 "hybrid" host; runc works there.
if [ -d /sys/fs/cgroup/unified ] && ! grep -q cgroup2 <(stat -f -c %T /sys/fs/cgroup); then
    want+=$'[engine]\nruntime = "runc"\n'
fi
# Podman raises a container's nofile to 1048576 and nproc to 4194304; without
# CAP_SYS_RESOURCE above a lower hard limit that fails ("setrlimit ...: Operation
# not permitted"). Lower defaults only where raising them here really fails.
if ! (ulimit -Hn 1048576 && ulimit -Hu 4194304) 2>/dev/null; then
    want+=$'[containers]\ndefault_ulimits = ["nofile=10000:10000", "nproc=10000:10000"]\n'
fi
if [ -n "$want" ]; then
    if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$(printf '%s' "$want")" ]; then
        log "writing $conf (host podman settings this host needs):"
        printf '%s' "$want" | sed 's/^/      /'
        printf '%s' "$want" > "$conf"
    fi
elif [ -f "$conf" ]; then
    log "removing $conf: this host needs no podman overrides"
    rm -f "$conf"
fi

# Cross-arch RUN steps (arm64 under qemu-user-static) need binfmt_misc.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    log "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    log "enabling qemu-aarch64 binfmt handler"
    update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
fi

# Rootless podman (the stand-in host in the tests) opens these.
for dev in /dev/fuse /dev/net/tun; do
    if [ -e "$dev" ] && [ "$(stat -c %a "$dev")" != 666 ]; then
        log "making $dev usable by every user (chmod 0666; was $(stat -c %a "$dev"))"
        chmod 0666 "$dev"
    fi
done

log "host ready: $(podman --version), $(buildah --version | cut -d' ' -f1-3)"
