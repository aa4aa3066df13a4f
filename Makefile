# posgen: `make data` generates the default benchmark, `make validate` checks it,
# `make test` runs the suite, `make cards` re-renders the official data cards in data_cards/
# (checked for drift by the tests), `make results` trains the reference baselines (a long job:
# every built-in encoding x 3 tasks x posgen-v1 and paper x 3 seeds, cpu preset; see the time
# estimate above the target) and writes RESULTS.md; `make results-all` adds posgen-v2 and
# every registered position encoding (plugins too); `make results-gpu` trains
# grids/paper-gpu.toml (the paper preset on cot, RoPE and Resonance RoPE) on one GPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= out/posgen-v1
CARDS_DIR ?= out/cards
OFFICIAL_CARDS := paper posgen-v1 posgen-v2

.PHONY: install install-train results results-all results-gpu results-data probe-check data paper validate cards test harden lint format clean bench bench-big bench-parquet bench-train search far-read

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,plot]"
	touch $@

# the train and slurm extras (torch, transformers, submitit) for `make test` and `make results`;
# `make data` stays light
install-train: $(VENV)/.installed-train

$(VENV)/.installed-train: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,plot,train,slurm]"
	touch $@

data: install
	$(BIN)/posgen generate --spec task_specs/posgen-v1.toml --out $(DATA_DIR) --overwrite

paper: install
	$(BIN)/posgen generate --spec task_specs/paper.toml --out out/paper --overwrite

cards: install
	mkdir -p data_cards
	for name in $(OFFICIAL_CARDS); do \
	  $(BIN)/posgen publish task_specs/$$name.toml --out $(CARDS_DIR)/$$name --overwrite --baselines -q && \
	  cp $(CARDS_DIR)/$$name/README.md data_cards/$$name.md || exit 1; \
	done

validate: install
	$(BIN)/posgen validate $(DATA_DIR) --json $(DATA_DIR).report.json

# two pytest workers (pytest-xdist, work stealing: the long sweep tests do not hold up the rest),
# one per core of the CI machine; PYTEST_WORKERS=0 runs serially
PYTEST_WORKERS ?= 2
test: install-train
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

# bad input, kill points, disk full and damaged files only; counts in the summary
harden: install
	$(BIN)/python -m pytest -q tests/cli/test_bad_specs.py tests/cli/test_interrupts.py \
		tests/dataset/test_failed_writes_leave_nothing.py \
		tests/dataset/test_damage_is_named.py tests/cli/test_hostile_inputs.py \
		tests/train/test_train_guarantees.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out build *.egg-info

# Reference baselines (not a test): regenerate the official datasets, sweep $(RESULTS_GRID)
# (grids/results.toml: posgen-v1 x 3 tasks x every built-in position encoding x one seed, then
# grids/results-paper.toml: paper x 3 tasks x the rope and resonance families; cpu preset; 2 workers of one torch thread) into $(SWEEP_DIR), aggregate. Finished runs
# in $(SWEEP_DIR) are kept and interrupted ones resume from their checkpoints: a rerun trains
# only what is missing.
# Time: one cpu-preset training (posgen-v1, cot, rope, one torch thread) took 92.5 s of CPU
# time (measured; 4.6 min of wall time on this 2-core machine under a load of about 5).
# Encodings that train alike share a training (rope, yarn, linear and llama3; resonance and its
# variants): the 24 built-ins of this writing make 18 trainings per task and seed, so both
# datasets with three seeds are 324 trainings, about 6 hours on two idle cores; `make results`
# runs one seed, with paper only for the rope and resonance families: 54 + 6 = 60 trainings
# (96 runs), about 1.5 hours (the grids say what was cut). posgen-v2 and every encoding on
# paper: `make results-all`.
RESULTS_GRID ?= grids/results.toml
RESULTS_GRID2 ?= grids/results-paper.toml
RESULTS_NOTE := Grids: $(RESULTS_GRID) (posgen-v1, every built-in encoding), then \
  $(RESULTS_GRID2) (paper, the rope and resonance families), one seed. Three seeds and every \
  encoding on paper did not fit the 3-hour budget on 2 cores; the grid files say what was cut.
SWEEP_DIR ?= runs/results
RESULTS_DATA := out/results
RESULTS_SETS := posgen-v1 posgen-v2 paper

# `make results-all`: every registered PE (built in and plugins), in a sweep folder of its own
results-all: RESULTS_GRID = grids/results-all.toml
results-all: RESULTS_GRID2 =
results-all: SWEEP_DIR = runs/results-all
results-all: results

results-data: install
	for name in $(RESULTS_SETS); do \
	  $(BIN)/posgen generate --spec task_specs/$$name.toml --out $(RESULTS_DATA)/$$name --overwrite -q \
	  || exit 1; \
	done

# `make probe-check`: do trained models read the far operand? (grids/probe-check.toml: one seed,
# RoPE and YaRN, every task of the official specs, scored on the probe splits; about 8 min on
# 2 cores.) Writes docs/probe-check.md and posgen/card/probe_check.json, from which the cards'
# "What each task measures" sentences are rendered (`make cards` after it).
PROBE_DIR ?= runs/probe-check
probe-check: install-train results-data
	$(BIN)/posgen sweep grids/probe-check.toml --out $(PROBE_DIR) --jobs 2
	$(BIN)/posgen results $(PROBE_DIR)/runs --out docs/probe-check.md \
	  --json posgen/card/probe_check.json --command "make probe-check"

# `make results-gpu`: grids/paper-gpu.toml (cot, RoPE and Resonance RoPE, one seed, the paper
# preset for 60 epochs in bf16) as two trainings sharing one GPU, into $(GPU_DIR); sized for
# 8 minutes on one H100 (the estimate is in the grid file). Writes results/paper-gpu.md.
GPU_DIR ?= runs/paper-gpu
results-gpu: install-train results-data
	$(BIN)/posgen sweep grids/paper-gpu.toml --out $(GPU_DIR) --jobs 2
	wall=$$($(BIN)/python -c "import json, sys; print(json.load(open(sys.argv[1]))['wall_seconds'])" \
	  $(GPU_DIR)/sweep.json) && \
	$(BIN)/posgen results $(GPU_DIR)/runs --out results/paper-gpu.md --command "make results-gpu" \
	  --wall-seconds $$wall

results: install-train results-data
	$(BIN)/posgen sweep $(RESULTS_GRID) --out $(SWEEP_DIR) --jobs 2
	$(if $(RESULTS_GRID2),$(BIN)/posgen sweep $(RESULTS_GRID2) --out $(SWEEP_DIR) --jobs 2)
	wall=$$($(BIN)/python -c "import json, sys; print(json.load(open(sys.argv[1]))['wall_seconds'])" \
	  $(SWEEP_DIR)/sweep.json) && \
	$(BIN)/posgen results $(SWEEP_DIR)/runs --out RESULTS.md --plot results/curves.png \
	  --json posgen/card/reference_results.json --command "make results" --wall-seconds $$wall \
	  $(if $(RESULTS_GRID2),--note "$(RESULTS_NOTE)")

# Benchmarks (benchmarks/, not in the wheel): `make bench` runs the timing checks (pytest marker
# `bench`, never part of `make test`) and prints the table; `make bench BENCH_ARGS=--write` also
# saves it to BENCHMARKS.md; `make bench-big` is the 2-billion-token peak-memory run.
BENCH_ARGS ?=
BENCH_TRAIN_ARGS ?=
BIG_TOKENS ?= 2e9

bench: install
	$(BIN)/python -m pytest -q -m bench benchmarks
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

bench-big: install
	$(BIN)/python -m benchmarks.bench --big $(BIG_TOKENS) $(BENCH_ARGS)

# posgen train's training steps/s against a plain torch loop over the same model and batches
bench-train: install-train
	$(BIN)/python benchmarks/train_overhead.py $(BENCH_TRAIN_ARGS)

bench-parquet: install
	$(BIN)/python -m benchmarks.bench --parquet-settings $(BENCH_ARGS)

# Issue 17's spec search (research, not a test): per candidate, generate its data, train the
# search model (2-layer Llama, hidden 128, RoPE, one torch thread) and score the test split and
# its counterfactual probe; one JSON line per run in docs/search/runs.jsonl. All candidates by
# default (about 3-8 minutes each on one idle core); `make search SEARCH="qperm-cot v1-cot"`
# runs some; `python -m benchmarks.probe_search --list` lists them.
SEARCH ?=

search: install-train
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.probe_search $(SEARCH)
	$(BIN)/python -m benchmarks.probe_search --table docs/search/runs.jsonl --out docs/validity.md

# Issue 28's far-read map (research, not a test): the sweeps of grids/far-read-*.toml (2-layer
# Llama at hidden 128, RoPE, weight decay 1.0 and 0.1, lr 2e-4 and 1e-3, 20 epochs, far-reliance
# on the probe split after every epoch) on posgen-v1 cot and semirecursive and far_perm cot with
# question ids; then one JSON line per run in docs/search/runs.jsonl and the map in
# docs/validity.md. About 20-25 minutes of one idle core per run (10 runs).
FAR_READ_DATA := out/map
far-read: install-train
	$(BIN)/posgen generate --spec task_specs/posgen-v1.toml --out $(FAR_READ_DATA)/posgen-v1 --overwrite -q
	$(BIN)/posgen generate --spec task_specs/posgen-v3-candidate-qperm.toml --out $(FAR_READ_DATA)/qperm --overwrite -q
	OMP_NUM_THREADS=1 $(BIN)/posgen sweep grids/far-read-cot.toml --out runs/far-read --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/posgen sweep grids/far-read-wd01.toml --out runs/far-read --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/posgen sweep grids/far-read-qperm.toml --out runs/far-read-qperm --jobs 2
	OMP_NUM_THREADS=1 $(BIN)/posgen sweep grids/far-read-semirecursive.toml --out runs/far-read-semirecursive --jobs 2
	$(BIN)/python -m benchmarks.far_read_map runs/far-read runs/far-read-qperm runs/far-read-semirecursive
