# posgen: `make data` generates the default benchmark, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= out/posgen-v1

.PHONY: install data paper test harden lint format clean

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

# bad input, kill points, disk full and damaged files only; counts in the summary
harden: install
	$(BIN)/python -m pytest -q tests/test_fuzz_inputs.py tests/test_interrupts.py \
		tests/test_disk.py tests/test_damage.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out build *.egg-info
