# Tongban — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean venv postgresql

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tongban demo

test: $(STAMP) postgresql
	$(BIN)/python -m pytest -q

# The tests start a real PostgreSQL server of their own (tests/postgres.py): Debian's
# package, installed here when this machine lacks it. Nothing is started or configured here.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	|| { echo "installing PostgreSQL (Debian's postgresql package) for the tests"; \
	     if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq postgresql; \
	     else sudo apt-get update -qq && sudo apt-get install -y -qq postgresql; fi; }

lint: $(STAMP)
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy

# Figures A-F of docs/benchmarks.md (BENCH_QUICK=1: figure D with 200,000 certificates;
# BENCH_FIGURES=E: figure E alone; BENCH_REPLICAS=N: its replicas, default 2; BENCH_ONLY=F: SM2).
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
