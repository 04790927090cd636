# boundq: every target bootstraps its own virtualenv (.venv) and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EXTRAS ?= dev

.DEFAULT_GOAL := help
.PHONY: help venv pg-server run worker test lint typecheck bench flood flood-ui report soak clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip >/dev/null
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create .venv and install boundq with the dev extras

pg-server: ## Make sure PostgreSQL server binaries exist (installs them as root on Debian)
	@bash scripts/ensure-postgres.sh

run: venv pg-server ## Start the API and workers on the embedded PostgreSQL (or DATABASE_URL)
	$(VENV)/bin/boundq serve

worker: venv pg-server ## Start workers only
	$(VENV)/bin/boundq worker

test: venv pg-server ## Run the test suite against a throwaway PostgreSQL cluster
	$(PY) -m pytest tests -q

lint: venv ## ruff and mypy --strict
	$(VENV)/bin/ruff check core server tests
	$(VENV)/bin/mypy

bench: venv pg-server ## Drain a 100k no-op backlog at several MAX_CONCURRENT_JOBS values
	$(PY) -m core.bench drain --jobs $${BENCH_JOBS:-100000} --concurrency $${BENCH_CONCURRENCY:-1,5,50,500}

flood: venv pg-server ## Load test with Locust (not built yet)
	@echo "make flood: the Locust flood runner is not built yet (see the load-test issue)." >&2
	@exit 2

flood-ui: flood

report: venv ## Benchmark sweeps and figures (not built yet)
	@echo "make report: the report sweeps are not built yet (see the load-test issue)." >&2
	@exit 2

clean: ## Stop the embedded PostgreSQL and remove local state
	-$(VENV)/bin/boundq db stop
	rm -rf .boundq .pytest_cache .mypy_cache .ruff_cache
