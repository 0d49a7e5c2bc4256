# Two entry points a fresh machine needs: `make demo` and `make test`.
# Both create .venv and install facetrail into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint types unit install bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-base

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[bench]'
	# face_recognition's metadata asks for a source build of dlib; dlib-bin already ships it.
	$(BIN)/python -m pip install -q --no-deps face_recognition==1.3.0
	touch $@

install: $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/facetrail demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench

types: $(VENV)/.installed-dev
	$(BIN)/mypy src/facetrail

unit: $(VENV)/.installed-dev
	$(BIN)/pytest

test: lint types unit

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/face_engine.py
