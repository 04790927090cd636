# boundq: every target bootstraps its own virtualenv (.venv) and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
EXTRAS ?= dev

.DEFAULT_GOAL := help
.PHONY: help venv venv-extras pg-server browser run worker test test-busy lock lint typecheck bench flood flood-ui report soak soak-life clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip >/dev/null
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## Create .venv and install boundq with the dev extras

pg-server: ## Make sure PostgreSQL server binaries exist (installs them as root on Debian)
	@bash scripts/ensure-postgres.sh

browser: venv ## Make sure a Chromium exists for the browser tests (installs Debian's package as root)
	@$(PY) -m tests.loadtests.browser

run: venv pg-server ## Start the API and workers on the embedded PostgreSQL (or DATABASE_URL)
	API_CPUS=$${API_CPUS:-auto} $(VENV)/bin/boundq serve

worker: venv pg-server ## Start workers only
	$(VENV)/bin/boundq worker

test: venv pg-server browser ## Run the test suite (tests/ and invariants/ side by side) against throwaway PostgreSQL clusters
	bash scripts/run-suite.sh $(PY) --durations=25

test-busy: venv pg-server browser ## The suite beside two CPU hogs (HOGS=N): what timing-dependent tests meet in CI
	HOGS=$${HOGS:-2} bash scripts/with-cpu-hogs.sh bash scripts/run-suite.sh $(PY) --durations=25

lock: ## Re-resolve the newest versions pyproject.toml allows into constraints.txt (a scratch venv)
	@rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet '.[dev,load,report,peers]'
	@{ sed -n '/^#/p' constraints.txt; $(VENV)-lock/bin/python -m pip freeze --exclude boundq; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt && rm -rf $(VENV)-lock
	@echo "constraints.txt rewritten; run make test before committing it"

lint: venv ## ruff and mypy --strict
	$(VENV)/bin/ruff check boundq core server tests invariants loadtests reports
	$(VENV)/bin/mypy

bench: venv-extras pg-server ## Drain 100k no-op jobs through `boundq worker` at MAX_CONCURRENT_JOBS 1,5,50,200,500; naive loop, PgQueuer, memory
	$(PY) -m boundq.reports.drain --jobs $${BENCH_JOBS:-100000} --concurrency $${BENCH_CONCURRENCY:-1,5,50,200,500} $${BENCH_ARGS:---naive --peers --memory}

# flood and report also need Locust, matplotlib/pandas/Jupyter and the peer queues.
EXTRAS_STAMP := $(VENV)/.installed-extras-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
$(EXTRAS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,load,report,peers]'
	@touch $@

venv-extras: $(EXTRAS_STAMP)

# FLOOD_PROCESSES=N: Locust distributed, a master and N worker processes. The other
# FLOOD_* variables (docs/flood.md) reach `boundq flood` through the environment.
FLOOD_PROCESSES ?= 1
export FLOOD_PROCESSES

# `exec`: the runner replaces the recipe's shell, so a SIGTERM that make forwards to its
# child reaches `boundq flood` itself, which drains, verifies and prints the verdict.
flood: venv-extras pg-server ## Flood API + workers with Locust, drain, verify lost = 0 and the pace (FLOOD_TIME, FLOOD_USERS, FLOOD_PROCESSES, ...)
	API_CPUS=$${API_CPUS:-auto} exec $(VENV)/bin/boundq flood $(FLOOD_ARGS)

flood-ui: venv-extras pg-server ## The same with the Locust web UI on http://127.0.0.1:8089 (Ctrl-C or SIGTERM ends it)
	API_CPUS=$${API_CPUS:-auto} exec $(VENV)/bin/boundq flood --ui $(FLOOD_ARGS)

report: venv-extras pg-server ## Benchmark sweeps and goodput/pickup against offered load (with PgQueuer, procrastinate): figures + summary
	$(VENV)/bin/boundq report $(REPORT_ARGS)

soak: venv pg-server ## Long fault runs of the invariant suite (BOUNDQ_INVARIANTS_PROFILE=soak)
	BOUNDQ_INVARIANTS_PROFILE=soak $(PY) -m pytest invariants -q

# SOAK_LIFE_ARGS reach `boundq soak-life` (docs/soak-life.md), e.g. --quick or --minutes 20;
# `exec` so that a SIGTERM from make reaches the runner, which drains and prints the verdict.
soak-life: venv pg-server ## An hour at half capacity: retention on, off, xmin pinned, recovery; per-minute pace, pickup, sizes, vacuum
	exec $(VENV)/bin/boundq soak-life $(SOAK_LIFE_ARGS)

clean: ## Stop the embedded PostgreSQL and remove local state
	-$(VENV)/bin/boundq db stop
	rm -rf .boundq .pytest_cache .mypy_cache .ruff_cache
