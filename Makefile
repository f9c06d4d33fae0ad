# make demo   CAS of five generators on the embedded digits data (creates .venv on first use)
# make test   the linter (ruff), then the whole test suite, S3 and Prefect-server tests included (what CI runs)
# make test-fast   the unit tests of tasks/ and storage/, no servers: the edit loop
# make s3     a SeaweedFS S3 server on 127.0.0.1 for trying the S3 path by hand
# make bench  storage throughput benchmark (local folder vs SeaweedFS)
# make server / make deploy / make worker   the nightly Prefect deployment (README)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test test-fast s3 bench server deploy worker gpu-worker clean

$(BIN)/cas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/cas
	$(BIN)/cas demo

# Test processes (pytest-xdist). Much of the suite waits on servers and subprocesses, so more processes
# than cores still pays on 2 cores; they share one Prefect server and one SeaweedFS server (tests/conftest.py).
TEST_WORKERS ?= 3

test: $(BIN)/cas
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations 15 -m "not timing"
	$(BIN)/python -m pytest -m timing

# tasks/ and storage/ without the slow, S3, Prefect-server and GPU tests
test-fast: $(BIN)/cas
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow and not s3 and not deployment and not gpu" tests/tasks tests/storage tests/test_layering.py

s3: $(BIN)/cas
	$(BIN)/python -m casflow.storage.local_s3

bench: $(BIN)/cas
	$(BIN)/python benchmarks/storage_throughput.py

# the Prefect server `make server` starts; export PREFECT_API_URL yourself to use another
deploy worker gpu-worker: export PREFECT_API_URL ?= http://127.0.0.1:4200/api

server: $(BIN)/cas
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

deploy: $(BIN)/cas
	$(BIN)/prefect work-pool create casflow-local --type process --overwrite
	$(BIN)/prefect work-pool create casflow-gpu --type process --overwrite
	CASFLOW_PROJECT_DIR=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

worker: $(BIN)/cas
	$(BIN)/prefect worker start --pool casflow-local --type process

# on each GPU machine, one per GPU: CUDA_VISIBLE_DEVICES=0 CASFLOW_WORKER=gpu0 make gpu-worker
gpu-worker: $(BIN)/cas
	$(BIN)/prefect worker start --pool casflow-gpu --type process --limit 1

clean:
	rm -rf casflow-store .pytest_cache
