# The two commands the README promises:
#   make site   bring the lab up (building it the first time) and run playbooks/site.yml against it
#   make test   everything CI runs: lint, ansible-test sanity, unit, lab conformance, integration, Molecule
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
LAB_ENV := tests/lab/.run/lab.env

PYTHON ?= python3

.PHONY: preflight venv lab-build lab-up lab-down lab-status site lint sanity unit pytest test bench clean

# What the machine must have, said in the first second with the command that fixes it.
preflight:
	@PYTHON=$(PYTHON) tests/tools/preflight.sh

# Without ensurepip (Debian's and Ubuntu's python3-venv, a root install) pip comes from the package index.
$(VENV)/.installed: requirements.txt tests/requirements.txt
	if [ ! -x $(PY) ]; then
	  if $(PYTHON) -c 'import ensurepip' 2>/dev/null; then $(PYTHON) -m venv $(VENV)
	  else $(PYTHON) -m venv --without-pip $(VENV) && $(PY) tests/tools/bootstrap_pip.py; fi
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r tests/requirements.txt
	touch $@

venv: preflight $(VENV)/.installed

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

# Each phase prints its wall time and the run ends with a summary of them; the integration tests and the Molecule
# scenarios run at the same time, each on a lab of its own (tests/tools/test.sh).
test: venv
	VENV=$(VENV) tests/tools/test.sh

# API requests per workload of each flow, on a lab of its own (python -m tests.bench --help)
bench: lab-build
	$(PY) -m tests.bench $(ARGS)

clean: lab-down
	rm -rf .build tests/output
