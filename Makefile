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

.PHONY: collections-link venv lint sanity units integration drills test demo demo-clean bench clean

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
	$(MAKE) sanity
	$(MAKE) units
	$(MAKE) integration
	$(MAKE) drills

demo:
	scripts/demo.sh

DEMO_PREFIX ?= /tmp/cepcomunicacion-demo
demo-clean:
	if [[ -d $(DEMO_PREFIX)/pg ]]; then $(BIN)/python reference_platform/pgcluster.py stop --dir $(DEMO_PREFIX)/pg --destroy || true; fi
	rm -rf $(DEMO_PREFIX)

bench:
	$(BIN)/python bench/run.py

clean:
	rm -rf build tests/output bench/output .cache .pytest_cache
	find . \( -name .venv -o -name .git \) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
