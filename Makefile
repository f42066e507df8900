# Developer and CI entry points. 'make test' is what .ci/run runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-print-directory

VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
export VENV
# Tools the recipes start (ansible-lint, pytest's ansible-playbook) come from the venv too.
export PATH := $(BIN):$(PATH)

.PHONY: collections-link venv lint security sanity units integration faults docs docs-check drills test demo demo-clean bench clean

venv:
	scripts/bootstrap.sh

# Playbooks name this collection by FQCN: let Ansible (and ansible-lint) find this checkout.
COLLECTIONS_DIR := $(CURDIR)/build/collections
collections-link:
	mkdir -p $(COLLECTIONS_DIR)/ansible_collections/cepcomunicacion
	ln -sfn $(CURDIR) $(COLLECTIONS_DIR)/ansible_collections/cepcomunicacion/backup

lint: collections-link
	$(BIN)/yamllint --strict .
	ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS_DIR) $(BIN)/ansible-lint

# Python security linter (ruff's S rules / bandit) and the security tests (secrets, modes, hostile input).
security:
	scripts/security.sh

sanity:
	scripts/ansible_test.sh sanity

units:
	scripts/ansible_test.sh units

integration:
	if find tests/integration -name 'test_*.py' -print -quit 2>/dev/null | grep -q .; then \
	  $(BIN)/pytest tests/integration -q; \
	else \
	  echo "integration: no tests under tests/integration yet; skipped"; \
	fi

# The fault matrix against the installed system; regenerates docs/RELIABILITY.md from the run.
faults:
	$(BIN)/pytest tests/faults -q

# The module reference (docs/modules/) from the modules' own DOCUMENTATION.
docs: collections-link
	$(BIN)/python scripts/docs.py build

# CI: the generated reference is current, and every link, make target and playbook the docs name exists.
docs-check: collections-link
	$(BIN)/python scripts/docs.py check

# Molecule scenarios on podman (root only): installs podman, runc and debootstrap when missing,
# builds the cached Debian 12 images, then 'molecule test' for each scenario under molecule/.
# One scenario: make drills SCENARIOS=default
SCENARIOS ?=
drills: collections-link
	scripts/drills.sh $(SCENARIOS)

# Each step in order; make stops at the first failure.
test:
	$(MAKE) venv
	$(MAKE) lint
	$(MAKE) security
	$(MAKE) docs-check
	$(MAKE) sanity
	$(MAKE) units
	$(MAKE) integration
	$(MAKE) faults
	$(MAKE) drills

# The newcomer's tour (scripts/demo.sh): platform, install, backups, offsite, check, two disasters recovered.
# Everything under DEMO_PREFIX (default /tmp/cepcomunicacion-demo); DEMO_SIZE=tiny|small|1GB (default small).
demo:
	scripts/demo.sh

# Stops whatever the demo left running and removes DEMO_PREFIX (only a prefix the demo made).
demo-clean:
	scripts/demo.sh --clean

# Every benchmark section side by side with its peer (~1 GB reference data; about 15 min here), then
# docs/BENCHMARKS.md and docs/benchmarks/benchmarks.png. bench/setup.sh installs what only the benchmarks
# need when missing (Debian's pgbackrest, matplotlib from bench/requirements.txt).
# One section: make bench BENCH_ARGS='--sections dr'; page and chart from the stored JSON: BENCH_ARGS=--render
BENCH_ARGS ?=
bench:
	$(MAKE) venv
	bench/setup.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build tests/output bench/output .cache .pytest_cache
	find . \( -name .venv -o -name .git \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
