# The two set-up commands: `make up` deploys the dev stack, `make test` runs the test suite.
# STACK=prod make up deploys the hardened stack instead.
STACK ?= dev
VENV  ?= venv
PY    := $(VENV)/bin/python
# The interpreter the virtual environments are made from: Python 3.11 or newer (PYTHON=python3.12 ...).
PYTHON ?= python3

.PHONY: venv test lint render cost up preview destroy destroy-for-good

# Run before building a virtual environment: say what is needed instead of letting pip fail to
# resolve packages that require Python 3.11.
define check_python
@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
  echo "Python 3.11 or newer is needed; '$(PYTHON)' is $$($(PYTHON) --version 2>/dev/null || echo 'not installed')." >&2; \
  echo "Install one (Debian/Ubuntu: sudo apt-get install python3.11 python3.11-venv), then: make PYTHON=python3.11 ..." >&2; \
  exit 1; }
endef

# Run before a command that needs the Pulumi CLI: $(call check_pulumi,<oldest version>). 3.151.0 for
# any update: older engines replace every resource whose explicit provider changed (pulumi/pulumi#18509),
# which this program's owner provider does on existing stacks (README "Before you start").
define check_pulumi
@v="$$(pulumi version 2>/dev/null | sed 's/^v//')"; \
  if [ -z "$$v" ] || [ "$$(printf '%s\n' '$(1)' "$$v" | sort -V | head -n 1)" != '$(1)' ]; then \
    echo "Pulumi CLI $(1) or newer is needed; found: $${v:-none} (https://www.pulumi.com/docs/iac/download-install/; README \"Before you start\")." >&2; \
    exit 1; fi
endef

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(check_python)
	$(PYTHON) -m venv $(VENV)
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

## Monthly cost estimate of what the stack would create (pinned on-demand prices, no credentials).
cost: venv
	$(PY) -m tools.cost --stack $(STACK)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

policy/venv/.installed: policy/requirements.txt
	$(check_python)
	$(PYTHON) -m venv policy/venv
	policy/venv/bin/python -m pip install --quiet -r policy/requirements.txt
	touch $@

POLICY := --policy-pack policy --policy-pack-config policy/config.$(STACK).json

## Deploy (needs the Pulumi CLI, AWS credentials and adminCidrs set: see README). The policy
## pack runs on every preview and update: a mandatory violation stops it before any change.
up: venv policy/venv/.installed
	$(call check_pulumi,3.151.0)
	pulumi up --stack $(STACK) $(POLICY)

preview: venv policy/venv/.installed
	$(call check_pulumi,3.151.0)
	pulumi preview --diff --stack $(STACK) $(POLICY)

## Everyday teardown (README "Tear down"): delete everything but the GitLab data volume. The
## control-plane nodes' instances (master, and master2/master3 with controlPlaneCount 3) are protected
## against a replacement or a removal (README "Day 2"), not against a teardown: each is unprotected
## first, or --exclude-protected would keep it with its subnet, VPC, security groups, key pair and
## instance profile, all billed. A plain `pulumi destroy` stops at a protected resource.
CONTROL_PLANE_URN := [:$$]aws:ec2/instance:Instance::gitops-k8s-master[0-9]*$$
destroy:
	@urns="$$(pulumi stack --stack $(STACK) --show-urns)" || exit 1; \
	  for urn in $$(printf '%s\n' "$$urns" | grep -oE 'urn:pulumi:[^ ]+' | grep -E '$(CONTROL_PLANE_URN)' || true); do \
	    pulumi state unprotect --stack $(STACK) --yes "$$urn" || exit 1; \
	  done
	pulumi destroy --stack $(STACK) --exclude-protected

## Delete the stack's resources for good, protected ones included (GitLab's data: repositories,
## registry). Deliberate: STACK=dev make destroy-for-good CONFIRM=dev. Needs Pulumi CLI 3.256+.
destroy-for-good:
	@test "$(CONFIRM)" = "$(STACK)" || { \
	  echo "destroy-for-good deletes the protected resources of stack '$(STACK)' too (GitLab's repositories and registry)." >&2; \
	  echo "To confirm, run: make destroy-for-good STACK=$(STACK) CONFIRM=$(STACK)" >&2; exit 1; }
	$(call check_pulumi,3.256.0)
	pulumi destroy --stack $(STACK) --ignore-protect

## After `up`: check the live stack from its outputs (GitLab, registry, runner, nodes, Flux, app,
## API certificate), one line per check with the fix; non-zero exit when a check fails.
.PHONY: doctor
doctor: venv
	$(PY) -m tools.doctor --stack $(STACK)
