# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two workers, one test file each at a time (module fixtures stay shared):
# compile time dominates and is single-threaded, so this halves the wall time.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install test demo bench archs clean

# Creates the virtual environment when missing and installs the pinned stack
# (re-runs when a requirements file changes).
# Headless Chromium for tests/test_discover_report.py comes from Debian's
# `chromium` package (browser downloads from CDNs are not an option): apt
# installs it when running as root and no browser is found; otherwise a
# warning, and that test fails (it never skips) until one is installed or
# AUDITDM_CHROMIUM names one.
$(STAMP): requirements.txt requirements-torch.txt requirements-dev.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-torch.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	@if [ -n "$$AUDITDM_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
	    || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1 \
	    || command -v google-chrome-stable >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing headless Chromium (apt: chromium fonts-liberation) for the report test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-liberation; \
	else \
	  echo "WARNING: no Chromium found; tests/test_discover_report.py will fail." \
	    "As root: apt-get install -y --no-install-recommends chromium fonts-liberation" \
	    "(or set AUDITDM_CHROMIUM=/path/to/chrome)." >&2; \
	fi
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

archs: $(STAMP)
	$(BIN)/python -m auditdm_jax.models.arch

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

demo: $(STAMP)
	$(BIN)/python -m auditdm_jax.demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
