#!/usr/bin/env bash
# `make image`: build localhost/pipglr:latest for this machine's platform.
# gitlab-runner comes from pipglr.toml's runner_source (auto: the official
# release, else built from its Go module, with Go replacements where the Go proxy
# refuses a dependency; the build says which).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${1:-.venv/bin/python}" build.py build
