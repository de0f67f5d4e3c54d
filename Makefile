# Everything from a fresh machine: `make demo` or `make test` create .venv, install torch if
# the environment has none (torch==2.13.0: a local CPU build on our machines), build gptcore
# and run. Set PYTHON to choose the interpreter (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
PYTEST_ARGS ?=

.PHONY: demo test build bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0
	$(BIN)/pip install setuptools wheel cmake ninja pybind11 numpy tqdm triton pytest pytest-benchmark hypothesis transformers safetensors tokenizers matplotlib
	touch $(DEPS)

build: $(DEPS)
	$(BIN)/pip install --no-build-isolation --no-deps -e .

test: build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The main job: train names-moe for two minutes, print its validation loss (the JSON line),
# 20 samples with the fraction not in the training set, then the quick benchmark table.
DEMO_RUN := build/demo/names-moe
demo: build
	$(BIN)/gptcore info
	rm -rf $(DEMO_RUN)
	$(BIN)/gptcore train --preset names-moe --time-budget 120 --out $(DEMO_RUN)
	$(BIN)/gptcore sample --ckpt $(DEMO_RUN) -n 20
	$(BIN)/gptcore bench --quick

bench: build
	$(BIN)/gptcore bench

clean:
	rm -rf build gptcore/_C*.so *.egg-info
