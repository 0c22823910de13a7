# The everyday commands. `make test` is the one CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services services-down check test unit demo bench schema clean

install: $(VENV)/.installed

# Exact versions come from constraints.txt, so a fresh install is the one we tested.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

services:
	scripts/dev-services up

services-down:
	scripts/dev-services down

check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

test: install services check
	$(BIN)/pytest

# The README's first command: everything end to end on the local services.
demo: install services
	$(BIN)/python scripts/demo.py

schema: install
	$(BIN)/python -m cleanup_worker.adapters.event_schema > docs/event-schema.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
