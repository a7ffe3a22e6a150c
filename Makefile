# meshpos: every target sets up what it needs in .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_DIR ?= $(shell mktemp -d -t meshpos-demo-XXXX)

.PHONY: install test lint bench demo clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check meshpos tests bench sim
	$(BIN)/ruff format --check meshpos tests bench sim
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

demo: $(STAMP)
	$(BIN)/python -m meshpos.demo $(DEMO_DIR)

clean:
	rm -rf $(VENV) build *.egg-info
