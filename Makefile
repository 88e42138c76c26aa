# Every target sets itself up on first use: the virtual environment is (re)built whenever
# pyproject.toml changes, so `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KWSBENCH_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: run test bench lint venv clean bundled

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default: the quickstart experiment on the synthetic keyword set (generated
# offline on first use), then its report. Needs no dataset and no network; a second run reuses every trial.
run: $(STAMP)
	$(BIN)/kwsbench run experiments/quickstart.yaml --out results/quickstart
	$(BIN)/kwsbench report results/quickstart/results.jsonl --out reports/quickstart
	@echo "report: reports/quickstart/README.md (plots beside it); mlflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///results/quickstart/mlflow.db"

# Retrain the checkpoints bundled in the package (kwsbench/checkpoints) on the real audio of ../shared/data.
bundled: $(STAMP)
	$(BIN)/kwsbench run experiments/bundled.yaml --out results/bundled
	$(BIN)/kwsbench bundle results/bundled/results.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-json=benchmarks/results.json

lint: $(STAMP)
	$(BIN)/ruff check kwsbench tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
