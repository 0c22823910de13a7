# The everyday commands. `make test` is the one CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services services-secure services-down tools check test unit fuzz demo demo-cdc bench schema clean producers chaos

install: $(VENV)/.installed

# Exact versions come from constraints.txt, so a fresh install is the one we tested.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

# The real producers tests/integration/test_producers.py drives (kcat comes from apt, see
# .ci/run): each CloudEvents Python SDK line in a directory of its own (1.x and 2.x share a
# distribution name, so neither goes into the venv) and the Java SDK's jars.
PRODUCERS := .dev/producers
producers: $(PRODUCERS)/python-sdk1/.installed $(PRODUCERS)/python-sdk2/.installed \
	$(PRODUCERS)/java/.installed

$(PRODUCERS)/python-sdk%/.installed: tests/producers/python-sdk%.txt | $(VENV)/.installed
	rm -rf $(@D)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--target $(@D) -r $<
	touch $@

$(PRODUCERS)/java/.installed: tests/producers/pom.xml
	rm -rf $(@D)
	mvn -q -B -f $< generate-resources -Dlib.dir=$(CURDIR)/$(@D)
	touch $@

# --cdc: also Kafka Connect with Debezium and a sample membership table (the CDC tests).
services:
	scripts/dev-services up --cdc

# Also TLS, SASL_SSL/SCRAM, mTLS and ACLs; writes .dev/secure.env and .dev/secure-mtls.env.
services-secure:
	scripts/dev-services up --secure

services-down:
	scripts/dev-services down

# kustomize and promtool for the deploy-file tests, cached under .dev/tools.
tools:
	scripts/tools install

check: install
	$(BIN)/ruff check src tests testkit bench examples
	$(BIN)/ruff format --check src tests testkit bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install tools
	$(BIN)/pytest tests/unit

test: install services tools check producers
	$(BIN)/pytest

# The hostile-record tests (records built by clients, and byte by byte), longer than CI
# runs them: `make fuzz RUNS=20 RECORDS=5000`, or one run again with `make fuzz SEED=<printed seed> RUNS=1 RECORDS=<as printed>`.
SEED ?=
RECORDS ?= 5000
RUNS ?= 10
fuzz: install services
	CLEANUP_FUZZ_SEED=$(SEED) CLEANUP_FUZZ_RECORDS=$(RECORDS) CLEANUP_FUZZ_RUNS=$(RUNS) \
		$(BIN)/pytest tests/integration/test_hostile_records.py \
		tests/integration/test_wire_records.py -rA

# A randomized chaos run checked against the oracle (tests/chaos/, docs/reliability.md):
# SEED empty picks a fresh seed and prints it, so a failure can be rerun.
SEED ?=
DURATION ?= 60
chaos: install services tools
	$(BIN)/python -m tests.chaos $(if $(SEED),--seed $(SEED)) --duration $(DURATION)

# The README's first command: everything end to end on the local services.
demo: install services
	$(BIN)/python scripts/demo.py

# Memberships kept in a table: a row deleted in the directory's table, the keys revoked.
demo-cdc: install services
	$(BIN)/python scripts/demo_cdc.py

schema: install
	$(BIN)/python -m cleanup_worker.adapters.cloudevents.schema > docs/event-schema.json
	$(BIN)/python -m cleanup_worker.adapters.cloudevents.schema notice > docs/revocation-notice-schema.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
