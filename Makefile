# minerwatch entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# apt for what PyPI cannot give: the broker, and a browser for the dashboard tests.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system-deps browser-deps demo run test lint format bench clean vendor

help:
	@echo "make demo   the whole stack with a simulated fleet; dashboard at http://127.0.0.1:8000"
	@echo "make run    the stack with your own config (MINERWATCH_CONFIG / MINERWATCH_* variables)"
	@echo "make test   installs what it needs, then runs lint and the whole test suite"
	@echo "make bench  benchmarks (collector, store, alerts, api, dashboard); results in docs/benchmarks.md"
	@echo "make setup  .venv with every console script (and mosquitto when missing)"
	@echo "make vendor re-fetch the vendored browser files (Swagger UI, uPlot) from npm, checking sha256"

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "minerwatch needs Python 3.11 or newer as '$(PYTHON)' (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml shared/pyproject.toml sim/pyproject.toml \
		$(wildcard services/*/pyproject.toml)
	$(UV) sync --all-packages --frozen --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	@touch $@

setup: $(VENV)/.synced system-deps

define apt_install
	@command -v apt-get >/dev/null || { echo "$(1) is missing and there is no apt-get: install $(1) yourself"; exit 1; }
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(1) >/dev/null
endef

system-deps:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
	  $(MAKE) --no-print-directory _apt PKGS=mosquitto; fi

browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then $(MAKE) --no-print-directory _apt PKGS=chromium; fi

_apt:
	$(call apt_install,$(PKGS))

demo: setup
	@bash deploy/local-stack.sh demo

run: setup
	@bash deploy/local-stack.sh run

# ruff for style, mypy (strict, see pyproject.toml) for the types of shared and the services.
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup browser-deps lint
	$(VENV)/bin/pytest

# Benchmark-only packages (pyasic and friends) come in with the `bench` group.
bench: setup
	$(UV) sync --all-packages --frozen --group bench
	@set -e; for script in bench/*.py; do \
	  case "$$script" in bench/report.py|bench/broker.py) continue;; esac; \
	  echo "== $$script"; $(VENV)/bin/python "$$script"; done
	@echo "results: docs/benchmarks.md"

# Re-fetch the vendored browser files (Swagger UI, uPlot) from the npm registry at the versions
# pinned in their SOURCE files, checking every sha256. Not part of `make test`: the files are
# committed, and this needs the registry. `deploy/vendor.sh --check` only compares.
vendor:
	@bash deploy/vendor.sh

format: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache .ruff_cache
