# Every target sets itself up on first use: the virtual environment is (re)built whenever
# pyproject.toml changes, so `make run` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KWSBENCH_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: run test bench lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default data: a summary of the official test set in ../shared/data.
run: $(STAMP)
	$(BIN)/kwsbench data summary --dataset speech_commands_test_set \
		--data-dir $(KWSBENCH_SHARED_DATA)/speech_commands_test_set_v0.02
	$(BIN)/kwsbench models 'bcresnet_*'

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-json=benchmarks/results.json

lint: $(STAMP)
	$(BIN)/ruff check kwsbench tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
