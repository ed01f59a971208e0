#!/usr/bin/env bash
# Build the gitlab-runner protocol test double (runner-double/) for amd64 and
# arm64, cached under $PIPGLR_CACHE keyed by its sources, the Go version and
# the version it reports (RUNNER_DOUBLE_VERSION, default 19.4.0; the bench
# builds a second one to time a runner version bump).
# Prints the path pattern (with {arch}) of the binaries on stdout.
set -euo pipefail
cd "$(dirname "$0")/../runner-double"
cache=${PIPGLR_CACHE:-$HOME/.cache/pipglr-builder}
version=${RUNNER_DOUBLE_VERSION:-19.4.0}
key=$( (go version; echo "$version"; find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
out=$cache/runner-double/$key
if [ ! -x "$out/gitlab-runner-arm64" ]; then
    echo "==> building the gitlab-runner test double ($key)" >&2
    mkdir -p "$out.partial"
    for arch in amd64 arm64; do
        CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS=-mod=mod \
            go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out.partial/gitlab-runner-$arch" . >&2
    done
    rm -rf "$out" && mv "$out.partial" "$out"
fi
echo "$out/gitlab-runner-{arch}"
