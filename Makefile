# meshpos: every target sets up what it needs in .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_DIR ?= $(shell mktemp -d -t meshpos-demo-XXXX)

.PHONY: install test lint bench demo demo-store clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core (docs/decisions.md, "Tests"); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check meshpos tests bench docker
	$(BIN)/ruff format --check meshpos tests bench docker
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# Part one: two terminals sync by bundle (issue 3). Part two: three daemons on loopback find each
# other over mDNS, converge live, one stops and catches up (issue 4). Part three: an HQ and a
# three-terminal store; the store's WAN goes down, it sells on, and HQ's chain view matches it
# once the WAN is back (issue 5).
demo: $(STAMP)
	@dir="$(DEMO_DIR)"; \
	$(BIN)/python -m meshpos.demo.bundle "$$dir/bundle" && \
	$(BIN)/python -m meshpos.demo.mesh "$$dir/mesh" && \
	$(BIN)/python -m meshpos.demo.hq "$$dir/hq"

# A store of three terminals and an HQ as processes on loopback: the topology of
# docker/compose.yaml without containers (encrypted databases, backup, restore, catch-up).
demo-store: $(STAMP)
	$(BIN)/python -m meshpos.demo.store

# docker/compose.yaml's store run for real with podman: sets up podman and a Debian base image if
# missing, builds docker/'s images, runs PostgreSQL, HQ and three terminals (sales, HQ, a terminal
# killed and restarted), and removes the pod, containers and volumes it made.
.PHONY: demo-containers test-containers
demo-containers: $(STAMP)
	$(BIN)/python docker/podman_store.py

# The same as tests (minutes, so not in `make test`); they skip, saying why, where podman cannot run.
test-containers: $(STAMP)
	-$(BIN)/python docker/podman_store.py setup
	MESHPOS_CONTAINERS=1 $(BIN)/pytest -q -p no:cacheprovider -m containers tests/test_containers.py

clean:
	rm -rf $(VENV) build *.egg-info
