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

lint: install
	$(PY) -m cfnlint template.yaml

clean:
	rm -rf $(VENV) .pytest_cache
