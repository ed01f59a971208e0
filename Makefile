# pipglr-builder: the two commands of the README are `make image` and `make test`.
# Both set up what they need and are safe to run again. `make unit` is the quick one.

SHELL     := /bin/bash
VENV      := .venv
PY        := $(VENV)/bin/python
# Slow-to-make inputs (base tarballs, runner builds) live outside the clone.
export PIPGLR_CACHE ?= $(HOME)/.cache/pipglr-builder
SUDO      := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: image test unit bench setup host venv runner lint clean

image: setup
	@scripts/build-image.sh $(PY)

# The tests use the real gitlab-runner and helper, built from the Go module for
# both platforms first (minutes once, then cached under $(PIPGLR_CACHE)/runner).
# Two pytest workers, one test file each at a time: most of a slow test is waiting on a
# boot or a job, so two share this 2-core machine's time (docs/development.md).
TEST_WORKERS ?= 2
test: setup runner
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The unit tests alone, in seconds: only the venv, no host setup, no Go, no images (tests marked
# `tools` or `slow` run host programs; conftest refuses host programs to every other test).
unit: venv
	@$(PY) -m pytest -m "not slow and not tools" $(PYTEST_ARGS)

runner: setup
	@$(PY) build.py runner --runner-source gomodule --platform linux/amd64,linux/arm64

# Figures for docs/benchmarks.md (bench-report/bench.json and .txt). As root: every
# sample of a comparison starts after sync and dropped caches.
# The runner bump rebuild declares the same runner binary as 19.4.1: it times
# the layers a version bump rebuilds.
bench: setup runner
	@R="$$($(PY) build.py runner --runner-source gomodule | cut -f3)"; \
	 $(PY) build.py bench --runs 5 --pairs 20 --job-pairs 20 --tags bench --runner-source gomodule \
	   --bump-runner-file "$${R%amd64}{arch}" --bump-runner-version 19.4.1

setup: host venv

host:
	@$(SUDO) scripts/setup-host.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "==> creating $(VENV)"
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --upgrade pip
	@$(VENV)/bin/pip install --quiet -e '.[test]'
	@touch $@

lint: venv
	@$(VENV)/bin/ruff check pipglr_builder tests build.py

clean:
	rm -rf $(VENV) build .pytest_cache
