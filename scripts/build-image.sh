#!/usr/bin/env bash
# `make image`: build localhost/pipglr:latest for this machine's platform.
# gitlab-runner comes from pipglr.toml's runner_source (auto: release download,
# then its Go module). Where neither can work, as on machines that reach only
# package registries, the image gets the protocol test double instead, and
# this script says so loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
if "$py" build.py runner; then
    exec "$py" build.py build
fi
double=$(scripts/runner-double.sh)
sums=$(for arch in amd64 arm64; do printf '%s=%s,' "$arch" "$(sha256sum "${double/\{arch\}/$arch}" | cut -d' ' -f1)"; done)
cat >&2 <<'MSG'

  ******************************************************************
  * No real gitlab-runner can be had on this machine (see above).   *
  * Building with pipglr-builder's gitlab-runner TEST DOUBLE: the   *
  * image boots and registers against a test coordinator, but it is *
  * not fit to run real CI jobs. Where the release server or the Go *
  * module proxy with all dependencies is reachable, `make image`   *
  * uses the real gitlab-runner.                                    *
  ******************************************************************

MSG
exec "$py" build.py build --runner-source file --runner-file "$double" --runner-sha256 "${sums%,}"
