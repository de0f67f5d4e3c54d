# Everything from a fresh machine: `make demo` or `make test` create .venv, install torch if
# the environment has none (torch==2.13.0: a local CPU build on our machines) and the exact
# package set of constraints.txt (the one the suite last passed with), build gptcore and run.
# Set PYTHON to choose the interpreter (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
PYTEST_ARGS ?=
CONSTRAINTS := constraints.txt
# What building and the test suites need beside torch: one list, pinned by constraints.txt.
PACKAGES := setuptools wheel cmake ninja pybind11 numpy tqdm triton pytest pytest-benchmark \
	hypothesis transformers safetensors tokenizers matplotlib

.PHONY: demo test build bench clean test-gpu-configs gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -c $(CONSTRAINTS) torch
	$(BIN)/pip install -c $(CONSTRAINTS) $(PACKAGES)
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

# Every Triton tile config computed under the interpreter at every head dim it serves, in
# fp32 and fp16 (`make test` runs each config once, in fp32).
test-gpu-configs: build
	GPTCORE_ALL_CONFIGS=1 $(BIN)/python -m pytest tests/test_triton_configs.py

# On a machine with a CUDA GPU: the Triton suites compiled and run on the GPU, then the
# kernels timed against torch SDPA / flash-attn and a plain-PyTorch experts loop.
gpu-check: build
	GPTCORE_TEST_DEVICE=cuda $(BIN)/python -m pytest tests/test_attention_triton.py \
		tests/test_moe_triton.py tests/test_triton_configs.py
	$(BIN)/python bench/gpu_check.py

bench: build
	$(BIN)/gptcore bench

clean:
	rm -rf build gptcore/_C*.so *.egg-info
