# The two set-up commands: `make up` deploys the dev stack, `make test` runs the test suite.
# STACK=prod make up deploys the hardened stack instead.
STACK ?= dev
VENV  ?= venv
PY    := $(VENV)/bin/python

.PHONY: venv test lint render up preview destroy

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## Unit tests: the real program under Pulumi mocks, plus artifact validators, then the sample
## app's own tests (Node.js from the venv). No cloud, no Pulumi CLI.
test: venv
	$(PY) -m pytest
	cd apps/shark-app && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm ci --no-audit --no-fund && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm test

## Offline render of what `pulumi up` would create (build/render/<stack>), no credentials needed.
render: venv
	$(PY) -m tools.render --stack $(STACK) --out build/render/$(STACK)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

policy/venv/.installed: policy/requirements.txt
	python3 -m venv policy/venv
	policy/venv/bin/python -m pip install --quiet -r policy/requirements.txt
	touch $@

POLICY := --policy-pack policy --policy-pack-config policy/config.$(STACK).json

## Deploy (needs the Pulumi CLI, AWS credentials and adminCidrs set: see README). The policy
## pack runs on every preview and update: a mandatory violation stops it before any change.
up: venv policy/venv/.installed
	pulumi up --stack $(STACK) $(POLICY)

preview: venv policy/venv/.installed
	pulumi preview --diff --stack $(STACK) $(POLICY)

destroy:
	pulumi destroy --stack $(STACK)

## After `up`: check the live stack from its outputs (GitLab, registry, runner, nodes, Flux, app,
## API certificate), one line per check with the fix; non-zero exit when a check fails.
.PHONY: doctor
doctor: venv
	$(PY) -m tools.doctor --stack $(STACK)
