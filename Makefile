# Every target a person or CI uses. `make` alone lists them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/fashion-product-images-small

.DEFAULT_GOAL := help
.PHONY: help install install-serving run test test-fast lint proto lock bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# Installs come from the locks (requirements/*.txt: exact versions and sha256 hashes, transitive ones included;
# requirements/README.md). When a lock changes, the .venv is built anew from it instead of upgraded in place, so it
# holds exactly what the lock says. `make run` needs only the serving lock (no TensorFlow, tf2onnx or Playwright);
# tests, linting and training use the dev lock, which holds the same serving pins plus the rest.
# make deletes only a .venv it created (.made-by-make): a hand-made or shared one is left alone with a message.
define fresh_venv
	@if [ -e $(VENV) ] && [ ! -f $(VENV)/.made-by-make ]; then \
		echo "$(VENV) was not created by make; move it away to install from the locks" >&2; exit 1; fi
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	touch $(VENV)/.made-by-make
	$(PY) -m pip install -q --require-hashes -r $(1)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
endef

$(VENV)/.serving: requirements/serving.txt pyproject.toml
	$(call fresh_venv,requirements/serving.txt)
	touch $@

# The dev lock holds every serving pin (tests/unit/test_locks.py), so this venv satisfies `make run` as well.
$(VENV)/.installed: requirements/serving.txt requirements/training.txt requirements/dev.txt pyproject.toml
	$(call fresh_venv,requirements/dev.txt)
	touch $(VENV)/.serving $@

# pip-compile runs from its own small venv, locked by requirements/lock-tools.txt.
LOCK_VENV := .venv-lock
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(UPGRADE)

$(LOCK_VENV)/.installed: requirements/lock-tools.txt
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --require-hashes -r requirements/lock-tools.txt
	touch $@

install: $(VENV)/.installed ## create .venv and install everything (serving, training, dev tools)

install-serving: $(VENV)/.serving ## create .venv with only what the services need (what `make run` does)

run: install-serving ## start the three services with the embedded Qdrant store and the sample catalogue
	$(PY) deploy/run_local.py

test: install ## run every test (unit, integration, e2e, training)
	$(PY) -m pytest --durations=25

test-fast: install ## unit and integration tests only
	$(PY) -m pytest -m "not e2e and not training"

lint: install ## ruff lint and format check, mypy (strict for fashionsearch/ and services/; pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

lock: $(LOCK_VENV)/.installed ## regenerate the locks requirements/*.txt from requirements/*.in (UPGRADE=--upgrade moves every pin)
	$(PIP_COMPILE) -o requirements/lock-tools.txt requirements/lock-tools.in
	$(PIP_COMPILE) -o requirements/serving.txt requirements/serving.in
	$(PIP_COMPILE) -o requirements/training.txt requirements/training.in
	$(PIP_COMPILE) -o requirements/dev.txt requirements/dev.in

proto: install ## regenerate fashionsearch/v1 from proto/ (with the grpcio-tools locked in requirements/dev.txt)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/fashionsearch/v1/*.proto

# The load client of bench/gateway_batching.py runs on Node.js, outside the services' Python processes.
bench/client/node_modules/.installed: bench/client/package.json bench/client/package-lock.json
	npm ci --prefix bench/client --no-audit --no-fund
	touch $@

bench: install bench/client/node_modules/.installed ## run every benchmark under bench/ (each prints a table; needs Node.js >= 18)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
