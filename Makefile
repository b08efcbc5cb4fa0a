# Every target sets up its own virtual environment: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000

.PHONY: run test bench lint lambda-local install clean

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

bench: install  ## the benchmark (~5 min): gateway vs direct path; prints and writes bench/RESULTS.md
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) -m bench.run

lint: install  ## cfn-lint on the SAM template
	$(VENV)/bin/cfn-lint template.yaml

lambda-local: install  ## the Lambda streaming path (function URL emulation) on http://localhost:3001, embedded default
	$(PY) -m aisix serve --local --lambda --port 3001

clean:
	rm -rf $(VENV) .pytest_cache
