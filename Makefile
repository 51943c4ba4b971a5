# The two commands the README promises:
#   make site   bring the lab up (building it the first time) and run playbooks/site.yml against it
#   make test   everything CI runs: lint, ansible-test sanity, unit, lab conformance, integration, Molecule
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
LAB_ENV := tests/lab/.run/lab.env

.PHONY: venv lab-build lab-up lab-down lab-status site lint sanity unit pytest test bench clean

$(VENV)/.installed: requirements.txt tests/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

lab-build: venv
	$(PY) -m tests.lab build

lab-up: lab-build
	$(PY) -m tests.lab up

lab-down: venv
	$(PY) -m tests.lab down

lab-status: venv
	$(PY) -m tests.lab status

site: lab-up
	set -a; . $(LAB_ENV); set +a
	export ANSIBLE_COLLECTIONS_PATH=$$($(PY) -c 'import tests.conftest as c; print(c.COLLECTIONS)')
	$(VENV)/bin/ansible-playbook aks.workload_identity.site -e @playbooks/vars/lab.yml $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/yamllint -s .
	ANSIBLE_COLLECTIONS_PATH=$$($(PY) -c 'import tests.conftest as c; print(c.COLLECTIONS)') $(VENV)/bin/ansible-lint

sanity: venv
	VENV=$(abspath $(VENV)) tests/tools/sanity.sh

unit: venv
	$(PY) -m pytest tests/unit -q

pytest: lab-build
	$(PY) -m pytest -q $(ARGS)

# Each phase prints its wall time, so a slow CI run says where the time went.
test: venv
	started=$$SECONDS; summary=""
	phase() { local name=$$1; shift; local t0=$$SECONDS; "$$@"; summary+="$$(printf '  %-12s %5d s' "$$name" $$((SECONDS - t0)))"$$'\n'; echo "== phase $$name: $$((SECONDS - t0)) s"; }
	phase lint $(MAKE) --no-print-directory lint
	phase sanity $(MAKE) --no-print-directory sanity
	phase lab-build $(MAKE) --no-print-directory lab-build
	phase unit $(PY) -m pytest -q tests/unit
	phase lab $(PY) -m pytest -q tests/lab
	phase integration $(PY) -m pytest -q tests/integration/modules
	phase molecule $(PY) -m pytest -q tests/integration/test_molecule.py
	printf '== make test: %d s\n%s' $$((SECONDS - started)) "$$summary"

# API requests per workload of each flow, on a lab of its own (python -m tests.bench --help)
bench: lab-build
	$(PY) -m tests.bench $(ARGS)

clean: lab-down
	rm -rf .build tests/output
