# posgen: `make data` generates the default benchmark, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= out/posgen-v1

.PHONY: install data paper test lint format clean bench bench-big bench-parquet

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

data: install
	$(BIN)/posgen generate --spec task_specs/posgen-v1.toml --out $(DATA_DIR) --overwrite

paper: install
	$(BIN)/posgen generate --spec task_specs/paper.toml --out out/paper --overwrite

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out build *.egg-info

# Benchmarks (not tests): `make bench` prints the table, `make bench BENCH_ARGS=--write` also
# saves it to BENCHMARKS.md; `make bench-big` is the 2-billion-token peak-memory run.
BENCH_ARGS ?=
BIG_TOKENS ?= 2e9

bench: install
	$(BIN)/python -m posgen.bench $(BENCH_ARGS)

bench-big: install
	$(BIN)/python -m posgen.bench --big $(BIG_TOKENS) $(BENCH_ARGS)

bench-parquet: install
	$(BIN)/python -m posgen.bench --parquet-settings $(BENCH_ARGS)
