# Every target a person or CI uses. `make` alone lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fashion-product-images-small

.DEFAULT_GOAL := help
.PHONY: help install install-serving run test test-fast lint proto bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# Two stamps: `make run` needs only what the services need (requirements/serving.txt: no TensorFlow, tf2onnx or
# Playwright); tests, linting and training add the rest (requirements/dev.txt) into the same .venv.
$(VENV)/.serving: requirements/serving.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/serving.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed: $(VENV)/.serving requirements/*.txt
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $@

install: $(VENV)/.installed ## create .venv and install everything (serving, training, dev tools)

install-serving: $(VENV)/.serving ## create .venv with only what the services need (what `make run` does)

run: install-serving ## start the three services with the embedded Qdrant store and the sample catalogue
	$(PY) deploy/run_local.py

test: install ## run every test (unit, integration, e2e, training)
	$(PY) -m pytest

test-fast: install ## unit and integration tests only
	$(PY) -m pytest -m "not e2e and not training"

lint: install ## ruff lint and format check, mypy (strict for fashionsearch/ and services/; pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

proto: install ## regenerate fashionsearch/v1 from proto/ (pinned grpcio-tools from requirements/dev.txt)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/fashionsearch/v1/*.proto

# The load client of bench/gateway_batching.py runs on Node.js, outside the services' Python processes.
bench/client/node_modules/.installed: bench/client/package.json bench/client/package-lock.json
	npm ci --prefix bench/client --no-audit --no-fund
	touch $@

bench: install bench/client/node_modules/.installed ## run every benchmark under bench/ (each prints a table; needs Node.js >= 18)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
