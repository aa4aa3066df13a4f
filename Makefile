# posgen: `make data` generates the default benchmark, `make validate` checks it,
# `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= out/posgen-v1

.PHONY: install data paper validate test lint format clean

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

validate: install
	$(BIN)/posgen validate $(DATA_DIR) --json $(DATA_DIR).report.json

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
