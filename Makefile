# Quarry — every entry point a developer, CI or an operator needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install test test-fast lint format demo migrate bench bench-api bench-sandbox services clean

help:
	@echo "make demo      run Quarry on this machine (embedded mode)"
	@echo "make test      the whole test suite with coverage (needs PostgreSQL + Redis; starts them)"
	@echo "make lint      ruff + mypy"
	@echo "make bench     every benchmark (prints numbers)"
	@echo "make migrate   alembic upgrade head on DATABASE_URL (or the embedded SQLite file)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv \
		&& $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]' \
		|| $(BIN)/python -m pip install -q -e '.[dev]'
	@# Bytecode ahead of time: a sandbox sees the libraries read-only and a fresh
	@# interpreter would compile pandas from source on every cold start (~0.8 s).
	@$(BIN)/python -m compileall -q api worker runner >/dev/null
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

services:
	@.ci/services.sh

test: install services
	$(BIN)/python -m pytest -q --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

test-fast: install services
	$(BIN)/python -m pytest -q -x -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install
	$(BIN)/python -m api.prestart

demo: install
	@echo "Quarry (embedded mode): SQLite database and files under $${DATA_DIR:-.data}/"
	@echo "  API and its docs: http://$(HOST):$(PORT)/docs"
	@echo "  agent worker: Celery over a local file transport (log: $${DATA_DIR:-.data}/worker.log)"
	@echo "  (the chat UI is not part of this build yet)"
	$(BIN)/python -m api.prestart
	@mkdir -p $${DATA_DIR:-.data}
	@$(BIN)/celery -A worker.celery_app worker --beat -Q analysis,datasets,maintenance \
		--concurrency 1 --without-gossip --without-mingle -l INFO \
		> $${DATA_DIR:-.data}/worker.log 2>&1 & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/uvicorn api.main:app --host $(HOST) --port $(PORT) --no-access-log

bench: bench-api bench-sandbox

bench-api: install services
	@command -v wrk >/dev/null || (echo "installing wrk (load generator)"; \
		apt-get install -y -q wrk >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null) || \
		{ echo "wrk is needed: apt-get install wrk"; exit 1; })
	$(BIN)/python -m tests.bench.bench_api $(BENCH_ARGS)

bench-sandbox: install
	$(BIN)/python -m tests.bench.bench_sandbox $(BENCH_SANDBOX_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov
