# Every target sets up its own virtual environment: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000

.PHONY: run test bench lint agents lambda-local sam-local-deps install clean package build-GatewayFunction

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: install  ## the gateway on http://localhost:3000 with moto DynamoDB and a mock upstream
	$(PY) -m aisix serve --local --port $(PORT)

test: install  ## the whole test suite
	$(PY) -m pytest -q

bench: install  ## the benchmark (~10 min): gateway vs direct path; prints and writes bench/RESULTS.md
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) -m bench.run

lint: install  ## cfn-lint on the SAM template
	$(VENV)/bin/cfn-lint template.yaml

agents: install  ## Claude Code and Codex (from npm, into .agents/) through every provider, locally and on the Lambda path
	$(PY) tools/agents.py

lambda-local: install  ## the Lambda streaming path (function URL emulation) on http://localhost:3001, embedded default
	$(PY) -m aisix serve --local --lambda --port 3001

# For `sam local start-api --env-vars env.json`: moto and the mock upstream where SAM's container
# reaches them (host.docker.internal). env.json names these ports; SAM_DEPS_HOST=172.17.0.1 (docker0)
# keeps them off other interfaces on Linux.
SAM_DEPS_HOST ?= 0.0.0.0
SAM_DEPS_DYNAMODB_PORT ?= 3005
SAM_DEPS_UPSTREAM_PORT ?= 3006

sam-local-deps: install  ## moto (:3005) and the mock upstream (:3006) on 0.0.0.0, tables and demo key made, for sam local
	$(PY) -m aisix local-deps --host $(SAM_DEPS_HOST) --dynamodb-port $(SAM_DEPS_DYNAMODB_PORT) --upstream-port $(SAM_DEPS_UPSTREAM_PORT)

# The Lambda package (tools/lambda_package.py): handler, models file, aisix without its dev tooling, the
# runtime dependencies Lambda imports, precompiled bytecode. For Lambda (python3.13, arm64) by default;
# the bytecode needs a Python of the target version: LAMBDA_COMPILE_PYTHON, python3.13 on PATH, or
# `sam build --use-container`.
LAMBDA_PYTHON_VERSION ?= 3.13
LAMBDA_PLATFORM ?= manylinux2014_aarch64
LAMBDA_COMPILE_PYTHON ?=
LAMBDA_BUILD = tools/lambda_package.py --platform "$(LAMBDA_PLATFORM)" --python-version $(LAMBDA_PYTHON_VERSION) \
	$(if $(LAMBDA_COMPILE_PYTHON),--compile-python "$(LAMBDA_COMPILE_PYTHON)")

build-GatewayFunction:  ## what `sam build` runs (BuildMethod: makefile): the package into $(ARTIFACTS_DIR)
	$(PYTHON) $(LAMBDA_BUILD) "$(ARTIFACTS_DIR)"

package: install  ## the same package in .aws-sam/package/ and .aws-sam/package.zip, without SAM
	$(PY) $(LAMBDA_BUILD) .aws-sam/package --zip .aws-sam/package.zip

clean:
	rm -rf $(VENV) .pytest_cache .aws-sam/package .aws-sam/package.zip
