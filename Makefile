# The two set-up commands: `make up` deploys the dev stack, `make test` runs the test suite.
# STACK=prod make up deploys the hardened stack instead.
STACK ?= dev
VENV  ?= venv
PY    := $(VENV)/bin/python

.PHONY: venv test lint up preview destroy

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## Unit tests: the real program under Pulumi mocks, plus artifact validators. No cloud, no CLI.
test: venv
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

## Deploy (needs the Pulumi CLI, AWS credentials and adminCidrs set: see README).
up: venv
	pulumi up --stack $(STACK)

preview: venv
	pulumi preview --diff --stack $(STACK)

destroy:
	pulumi destroy --stack $(STACK)
