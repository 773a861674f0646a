# One command each on a fresh machine: the venv is created or refreshed as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo needs the runtime dependencies only; tests, lint and benchmarks add the dev extra.
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# setuptools' editable-install notice is a warning in pip's build process: not ours to show.
PIP := PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench bench-gpu chaos lint format model clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	$(BIN)/python -c "import streams.cli"
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(PIP) -e '.[dev]'
	$(BIN)/python -c "import pytest, hypothesis"
	touch $(STAMP)

demo: $(RUNTIME)
	$(BIN)/retention demo --seconds $${SECONDS_TO_RUN:-60}

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The bench extra adds the peers measured beside our worker (Quix Streams) and the cdnow baselines.
$(BENCH_STAMP): $(STAMP)
	$(PIP) -e '.[dev,bench]'
	$(BIN)/python -c "import quixstreams"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q tests/benchmarks -p no:cacheprovider --override-ini addopts=

# The model on a GPU, for a session lent one (issue 15): scoring at every batch size and a short
# end-to-end run, JSON to $$BENCH_GPU_JSON (bench-gpu.json). One line and exit 2 where no GPU is
# visible. GPU_PYTHON: the interpreter that has the project's dependencies (default the venv's).
GPU_PYTHON ?= $(BIN)/python
bench-gpu:
	$(GPU_PYTHON) -m tests.benchmarks.gpu_bench

# Fault injection: two workers killed -9 at random, a third joining midway (rebalances); figures to $$CHAOS_JSON (chaos-results.json).
chaos: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/chaos -p no:cacheprovider --override-ini addopts=

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Rebuild the bundled model exactly as shipped (see README).
model: $(STAMP)
	rm -rf retention_model/bundled
	$(BIN)/retention simulate --users 3000 --days 240 --seed 7 --out data/sim-train.jsonl --treatment-log data/sim-campaign.jsonl
	$(BIN)/retention train --events data/sim-train.jsonl --treatment-log data/sim-campaign.jsonl --registry retention_model/bundled --seed 42

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
