# pipglr-builder: the two commands of the README are `make image` and `make test`.
# Both set up what they need and are safe to run again.

SHELL     := /bin/bash
VENV      := .venv
PY        := $(VENV)/bin/python
# Slow-to-make inputs (base tarballs, runner builds) live outside the clone.
export PIPGLR_CACHE ?= $(HOME)/.cache/pipglr-builder
SUDO      := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: image test bench setup host venv runner-double lint clean

image: setup
	@scripts/build-image.sh $(PY)

test: setup
	@PIPGLR_RUNNER_DOUBLE="$$(scripts/runner-double.sh)" $(PY) -m pytest $(PYTEST_ARGS)

# Figures for the README's benchmark section (bench-report/bench.json and .txt).
bench: setup
	@D="$$(scripts/runner-double.sh)"; B="$$(RUNNER_DOUBLE_VERSION=19.4.1 scripts/runner-double.sh)"; \
	 sums=$$(for a in amd64 arm64; do printf '%s=%s,' $$a $$(sha256sum $${D/\{arch\}/$$a} | cut -d' ' -f1); done); \
	 $(PY) build.py bench --runs 5 --tags bench --runner-source file --runner-file "$$D" --runner-sha256 "$${sums%,}" \
	   --bump-runner-file "$$B" --bump-runner-version 19.4.1

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

runner-double:
	@scripts/runner-double.sh

lint: venv
	@$(VENV)/bin/ruff check pipglr_builder tests build.py

clean:
	rm -rf $(VENV) build .pytest_cache
