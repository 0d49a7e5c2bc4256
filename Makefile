# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both create .venv and install facetrail into it from the lock (requirements/*.txt: exact versions with hashes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements
# Everything comes from the lock: hashes checked, no dependency resolved on the fly, sdists built with the
# locked setuptools instead of whatever an isolated build environment would download.
PIP_LOCKED := $(BIN)/python -m pip install -q --require-hashes --no-deps --no-build-isolation
PIP_PROJECT := $(BIN)/python -m pip install -q --no-deps --no-build-isolation
PYTEST_ARGS ?=
# STRICT=1: a test that would skip for a missing data set or service fails instead (as under CI=true).
STRICT ?=
UV_VERSION := 0.13.9

.PHONY: demo test lint types unit install bench lock fresh-check

$(BIN)/python:
	@$(PYTHON) -c 'import sys; ok = (3, 11) <= sys.version_info[:2] <= (3, 13); \
		ok or sys.exit(f"facetrail supports Python 3.11 to 3.13; $(PYTHON) is {sys.version.split()[0]}: run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)/build.txt

$(VENV)/.installed-base: $(LOCK)/app.txt $(LOCK)/build.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r $(LOCK)/build.txt -r $(LOCK)/app.txt
	$(PIP_PROJECT) -e .
	touch $@

$(VENV)/.installed-dev: $(LOCK)/dev.txt $(LOCK)/build.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r $(LOCK)/build.txt -r $(LOCK)/dev.txt
	$(PIP_PROJECT) -e .
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-bench: $(LOCK)/bench.txt $(LOCK)/build.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) -r $(LOCK)/build.txt -r $(LOCK)/bench.txt
	$(PIP_PROJECT) -e .
	touch $@

install: $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/facetrail demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench

types: $(VENV)/.installed-dev
	$(BIN)/mypy src/facetrail

unit: $(VENV)/.installed-dev
	$(if $(STRICT),FACETRAIL_STRICT_TESTS=1) $(BIN)/pytest $(PYTEST_ARGS)

test: lint types unit

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/face_engine.py

# A clean venv from the lock in a temporary folder, facetrail installed as a user would (not editable),
# then its first commands on a shipped image: a missing install step fails here, not on a user's machine.
fresh-check:
	bash tools/fresh_check.sh $(PYTHON)

# Refresh the lock to the newest releases that pyproject.toml's ranges allow, then write the
# requirements files the Makefile installs. Run `make test` after every refresh.
lock:
	$(PYTHON) -m venv /tmp/facetrail-uv && /tmp/facetrail-uv/bin/python -m pip install -q uv==$(UV_VERSION)
	/tmp/facetrail-uv/bin/uv lock --upgrade
	$(MAKE) lock-export UV=/tmp/facetrail-uv/bin/uv

UV ?= uv
lock-export:
	$(UV) export -q --frozen --no-emit-project --no-default-groups --only-group build -o $(LOCK)/build.txt
	$(UV) export -q --frozen --no-emit-project --no-default-groups -o $(LOCK)/app.txt
	$(UV) export -q --frozen --no-emit-project --no-default-groups --extra dev -o $(LOCK)/dev.txt
	$(UV) export -q --frozen --no-emit-project --no-default-groups --extra dev --extra bench --group bench-peers \
		-o $(LOCK)/bench.txt
	$(UV) export -q --frozen --no-emit-project --no-default-groups --extra gpu -o $(LOCK)/gpu.txt
