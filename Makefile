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

.PHONY: help setup system-deps browser-deps prometheus-deps ha-deps node-red demo run test lint format bench clean vendor deploy-init deploy-user compose-test

help:
	@echo "make demo   the whole stack with a simulated fleet; dashboard at http://127.0.0.1:8000"
	@echo "make run    the stack with your own config (MINERWATCH_CONFIG / MINERWATCH_* variables)"
	@echo "make test   installs what it needs, then runs lint and the whole test suite"
	@echo "make bench  benchmarks (collector, store, alerts, api, dashboard); results in docs/benchmarks.md"
	@echo "make setup  .venv with every console script (and mosquitto when missing)"
	@echo "make vendor re-fetch the vendored browser files (Swagger UI, uPlot) from npm, checking sha256"
	@echo "make deploy-init   deploy/.env with generated passwords and the broker's files; then"
	@echo "                   docker compose -f deploy/compose.yaml up -d   (FORCE=1: new passwords)"
	@echo "make deploy-user NAME=...  one more broker account (read only), for the compose stack"
	@echo "make compose-test  the compose stack on a real Docker engine, checked, then removed"

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

# Debian's Prometheus (prometheus and promtool) for tests/test_prometheus.py; without its
# recommended node exporter, which would start a daemon of its own.
prometheus-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  $(MAKE) --no-print-directory _apt PKGS="prometheus --no-install-recommends"; fi

# Home Assistant 2024.3.3 (the newest release that runs on Python 3.11) in an environment of
# its own, for tests/tools/ha_validate.py: the discovery configs are checked with HA's schemas.
HA_PYTHON ?= python3.11
HA_ENV := $(TOOLS)/ha
HA_REQUIREMENTS := tests/tools/ha-requirements.txt

ha-deps: $(HA_ENV)/.installed

$(HA_ENV)/.installed: $(UV) $(HA_REQUIREMENTS)
	@$(HA_PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || \
	  { echo "the Home Assistant check needs Python 3.11 as '$(HA_PYTHON)' (pyenv install 3.11, or set HA_PYTHON=...)"; exit 1; }
	rm -rf $(HA_ENV)
	$(HA_PYTHON) -m venv $(HA_ENV)
	$(UV) pip install --quiet --python $(HA_ENV)/bin/python -r $(HA_REQUIREMENTS)
	@touch $@

# Node-RED 4 for tests/test_node_red.py (the example flow in docs/node-red/), from the lock
# in tests/node-red/ with the machine's npm (Node-RED 5 needs Node.js 22; 4.1 runs on 18.5+).
NODE_RED_DIR := $(TOOLS)/node-red
NODE_RED_LOCK := tests/node-red/package.json tests/node-red/package-lock.json

node-red: $(NODE_RED_DIR)/.installed

$(NODE_RED_DIR)/.installed: $(NODE_RED_LOCK)
	@if ! command -v npm >/dev/null; then $(MAKE) --no-print-directory _apt PKGS="nodejs npm"; fi
	rm -rf $(NODE_RED_DIR)
	mkdir -p $(NODE_RED_DIR)
	cp $(NODE_RED_LOCK) $(NODE_RED_DIR)/
	npm ci --prefix $(NODE_RED_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

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

# The suite mostly waits (brokers, polls, timeouts), so it runs in TEST_WORKERS processes
# (pytest-xdist); each file's tests stay in one, so a module's stack starts once.
# TEST_WORKERS=0: all in this process.
TEST_WORKERS ?= 3
test: setup browser-deps prometheus-deps ha-deps node-red lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

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

# The compose deployment (deploy/compose.yaml): Docker is all they need on the host.
deploy-init:
	@sh deploy/init.sh $(if $(FORCE),--force)

deploy-user:
	@sh deploy/init.sh user "$(NAME)"

# Builds the images and runs the stack with the simulated fleet on a real Docker engine;
# fails when none answers. Not part of `make test`. Without a registry: see
# `deploy/compose-test.sh --help` (deploy/local-base-images.sh, PYTHON_IMAGE, MOSQUITTO_IMAGE).
compose-test:
	@bash deploy/compose-test.sh

format: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(TOOLS) .demo .pytest_cache .ruff_cache
