# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test demo bench archs clean

# Creates the virtual environment when missing and installs the pinned stack
# (re-runs when a requirements file changes).
$(STAMP): requirements.txt requirements-torch.txt requirements-dev.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-torch.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

archs: $(STAMP)
	$(BIN)/python -m auditdm_jax.models.arch

bench: $(STAMP)
	$(BIN)/python benchmarks/sampler_vs_transformers.py

demo: $(STAMP)
	$(BIN)/python -m auditdm_jax.demo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
