# Everything a fresh machine needs is set up by the target that needs it: `make synth` and `make test`.
PYTHON ?= python3
VENV ?= .venv
STACK ?= local
BASE ?= origin/main
BIN := $(VENV)/bin
CHECKOV_VENV ?= .venv-checkov

.PHONY: install install-dev checkov-venv synth checkov synth-all diff test bench clean ci-stacks deployable reachable \
	head-of-main last-deploy changed-stacks verify review e2e e2e-tools webhook-ports

# pip's own lines go to stderr, so that `make --silent ci-stacks >> "$$GITHUB_OUTPUT"` stays clean on a first run.
PIP := --disable-pip-version-check --progress-bar off

# What the synth and the commands around it need: the program's requirements, Helm and the schema checks.
$(BIN)/.installed-synth: requirements.txt requirements-synth.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mlplatform needs Python 3.11 or newer (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || { echo "Creating $(VENV) (first run only)" >&2; $(PYTHON) -m venv $(VENV); }
	@echo "Installing the synth's pinned requirements into $(VENV) (requirements-synth.txt; about a minute the first time)" >&2
	@$(BIN)/python -m pip install $(PIP) -r requirements-synth.txt >&2
	@touch $@

# The tests' tooling on top (pytest, the type checker, actionlint).
$(BIN)/.installed: $(BIN)/.installed-synth requirements-dev.txt
	@echo "Installing the test tooling into $(VENV) (requirements-dev.txt; about a minute the first time)" >&2
	@$(BIN)/python -m pip install $(PIP) -r requirements-dev.txt >&2
	@touch $@

## Set up .venv with what the synth and the deploys need (the other targets do it when needed).
install: $(BIN)/.installed-synth

## Set up .venv with the test tooling too (make test does it when needed).
install-dev: $(BIN)/.installed

$(CHECKOV_VENV)/bin/checkov: requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@echo "Installing checkov into $(CHECKOV_VENV) (requirements-checkov.txt; about a minute the first time)" >&2
	@$(CHECKOV_VENV)/bin/python -m pip install $(PIP) -r requirements-checkov.txt >&2
	@touch $@

## Set up checkov in its own virtualenv (.venv-checkov), for `make checkov` and the tests.
checkov-venv: $(CHECKOV_VENV)/bin/checkov

## Synthesize STACK and run checkov over everything it applies (counts per chart in the summary).
checkov: $(BIN)/.installed-synth $(CHECKOV_VENV)/bin/checkov
	$(BIN)/python -m synth $(STACK) --checkov

## Synthesize STACK (default: local) offline into out/STACK/: manifests, Helm values, plan.json.
synth: $(BIN)/.installed-synth
	$(BIN)/python -m synth $(STACK)

## Synthesize every stack in the repo (what CI checks on every pull request).
synth-all: $(BIN)/.installed-synth
	@set -e; for stack in $$(ls Pulumi.*.yaml | sed -e 's/^Pulumi\.//' -e 's/\.yaml$$//'); do \
		$(BIN)/python -m synth $$stack; done

## Record the pod ports each pinned chart's webhooks are called on (the GKE firewall's), from Helm's renders.
webhook-ports: $(BIN)/.installed-synth
	$(BIN)/python -m synth.webhooks

## What `pulumi preview` would show for the working tree against BASE (default origin/main), offline.
diff: $(BIN)/.installed-synth
	$(BIN)/python -m synth.diff --base $(BASE)

## The stacks CI previews and deploys (deployer.operate), with their runner labels, as GitHub Actions outputs.
ci-stacks: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.delivery stacks

## Refuse to deploy STACK while its file holds documentation placeholders or no CI-usable secrets provider.
deployable: $(BIN)/.installed-synth
	$(BIN)/python -m synth.delivery deployable $(STACK)

## Before a preview: is STACK's cluster deployed (a GitHub Actions output), and does its API answer this caller?
reachable: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.delivery reachable $(STACK)

## Refuse a deploy unless this run (GITHUB_REF, GITHUB_SHA) is main's head (MAIN_HEAD): no re-run deploys old code.
head-of-main: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.delivery head-of-main $(MAIN_HEAD)

## A stack's last successful update: its commit and whether it changed anything (HISTORY=`pulumi stack history --json`).
last-deploy: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.delivery last-deploy $(HISTORY)

## The stacks a pull request changes (PREVIEW=file written by `make review`), as a GitHub Actions output.
changed-stacks: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.delivery changed $(PREVIEW)

## After `pulumi up`: a one-GPU pod per GPU pool, from zero nodes, its metrics and alerts; a table of timings.
verify: $(BIN)/.installed-synth
	$(BIN)/python -m verify $(STACK) $(if $(VERIFY_TIMEOUT),--timeout $(VERIFY_TIMEOUT))

## The pull-request comment: replacements and deletions, GPU capacity and quota changes, policies first
## (COMMENT=file: also that, cut to fit a GitHub comment).
review: $(BIN)/.installed-synth
	@$(BIN)/python -m synth.review --base $(BASE) $(if $(COMMENT),--comment $(COMMENT))

## Run the whole test suite.
test: $(BIN)/.installed $(CHECKOV_VENV)/bin/checkov
	@echo "Running the test suite on every core (a minute or two; checkov's runs are cached afterwards)" >&2
	$(BIN)/python -m pytest -n auto

POLICY_VENV := policies/venv

$(POLICY_VENV)/bin/.installed: policies/requirements.txt
	test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r policies/requirements.txt
	touch $@

## Build the e2e tools from their Go modules (cached in ~/.cache/mlplatform/e2e; only what is missing).
e2e-tools: $(BIN)/.installed
	$(BIN)/python -m e2e.tools

## The real lifecycle on a loopback cluster (root, Go): preview with the policy pack, up, a no-changes preview,
## what the API server holds, the real Kueue, the team stack, destroy and nothing left.
e2e: $(BIN)/.installed $(POLICY_VENV)/bin/.installed e2e-tools
	$(BIN)/python -m pytest e2e/tests -p no:cacheprovider

## Time the synth of 10, 100 and 1000 teams against a bare program registering the same resources.
bench: $(BIN)/.installed-synth
	$(BIN)/python -m synth.bench

clean:
	rm -rf out .bench $(CHECKOV_VENV)
