# Quarry — every entry point a developer, CI or an operator needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

HOST ?= 127.0.0.1
PORT ?= 8000
UI_PORT ?= 8501

.PHONY: help install test test-docker test-fast lint format demo migrate compose-env kind-up images kind-load helm-install smoke kind-down bench bench-api bench-sandbox bench-turn bench-load bench-soak bench-refusals eval services clean

help:
	@echo "make demo      run Quarry on this machine (embedded mode): UI, API, worker"
	@echo "make test      the whole test suite with coverage (needs PostgreSQL + Redis; starts them)"
	@echo "make lint      ruff + mypy"
	@echo "make bench     every benchmark (prints numbers)"
	@echo "make eval      ask the evaluation questions through the API (coverage, precision)"
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

# scripts/demo.py starts the API, a worker (with the reapers' schedule) and the UI, restarts
# any that stops, and appends their logs to $(DATA_DIR)/logs/; Ctrl-C stops everything
demo: install
	@HOST=$(HOST) PORT=$(PORT) UI_PORT=$(UI_PORT) $(BIN)/python scripts/demo.py $(DEMO_ARGS)

# --- a local Kubernetes cluster (kind): make kind-up images kind-load helm-install smoke ---
KIND_CLUSTER ?= quarry
TAG ?= 0.1.0
IMAGES := api worker frontend runner

kind-up:
	kind create cluster --config k8s/kind.yaml

# PYTHON_IMAGE: another base (e.g. the one scripts/local-base-image.sh builds where no registry
# answers); DOCKER_BUILD_FLAGS: more `docker build` flags (e.g. --network=host)
images:
	@for c in $(IMAGES); do docker build $(DOCKER_BUILD_FLAGS) \
		$(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
		-f $$c/Dockerfile -t quarry-$$c:$(TAG) . || exit 1; done

kind-load:
	@for c in $(IMAGES); do kind load docker-image quarry-$$c:$(TAG) --name $(KIND_CLUSTER) || exit 1; done

helm-install:
	helm upgrade --install quarry helm/quarry --namespace quarry --create-namespace \
		-f k8s/values-kind.yaml --set image.tag=$(TAG)
	kubectl -n quarry rollout status deploy/quarry-api --timeout 10m
	kubectl -n quarry rollout status deploy/quarry-worker --timeout 10m

smoke:
	helm test quarry --namespace quarry
	curl -fsS http://127.0.0.1:8000/readyz && echo && curl -fsS -o /dev/null http://127.0.0.1:8501/_stcore/health && echo "UI up"

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

# the whole test suite inside the compose stack (needs Docker, and .env: make compose-env)
test-docker:
	docker compose --profile test run --rm --build tests

# .env for docker compose: .env.example plus fresh secrets (never overwrites an existing .env)
compose-env:
	@test ! -e .env || { echo ".env exists: edit it, or move it away first"; exit 1; }
	@python3 -c "import re, secrets; t = open('.env.example').read(); \
	v = {'POSTGRES_PASSWORD': secrets.token_urlsafe(24), 'JWT_SECRET_KEY': secrets.token_urlsafe(48), \
	'FLOWER_BASIC_AUTH': 'admin:' + secrets.token_urlsafe(16)}; \
	t = re.sub(r'(?m)^#? ?(POSTGRES_PASSWORD|JWT_SECRET_KEY|FLOWER_BASIC_AUTH)=.*$$', lambda m: m.group(1) + '=' + v[m.group(1)], t); \
	open('.env', 'w').write(t)"
	@chmod 600 .env
	@echo "wrote .env with fresh secrets (Flower: $$(grep ^FLOWER_BASIC_AUTH .env | cut -d= -f2))"

bench: bench-api bench-sandbox bench-turn bench-refusals

bench-api: install services
	@command -v wrk >/dev/null || (echo "installing wrk (load generator)"; \
		apt-get install -y -q wrk >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null) || \
		{ echo "wrk is needed: apt-get install wrk"; exit 1; })
	$(BIN)/python -m tests.bench.bench_api $(BENCH_ARGS)

bench-sandbox: install
	$(BIN)/python -m tests.bench.bench_sandbox $(BENCH_SANDBOX_ARGS)

# the policy's false refusals of the libraries' own docstring examples (target <= 0.5 %)
# the assistant's answers to the public-data questions of tests/eval/ (coverage, precision)
eval: install services
	$(BIN)/python -m tests.eval $(EVAL_ARGS)

bench-refusals: install
	$(BIN)/python -m tests.bench.bench_refusals $(BENCH_REFUSALS_ARGS)

bench-turn: install services
	$(BIN)/python -m tests.bench.bench_turn $(BENCH_TURN_ARGS)

# 500 simulated users and 200 SSE followers on PostgreSQL, Redis, 2 API processes, 2 workers
bench-load: install services
	$(BIN)/python -m tests.bench.bench_load $(BENCH_LOAD_ARGS)

# embedded mode (make demo's supervisor) for hours: turns, uploads, forced worker restarts
bench-soak: install
	$(BIN)/python -m tests.bench.bench_soak $(BENCH_SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage* htmlcov
