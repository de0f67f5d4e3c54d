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
	hypothesis transformers safetensors tokenizers matplotlib gguf

.PHONY: demo test build bench clean test-gpu-configs gpu-check test-latest wheel-smoke

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

# Early warning: the suite in .venv-latest with the newest release of every package (torch
# stays at constraints.txt's: other releases are multi-GB CUDA downloads here), then one line
# saying which packages moved and what broke. When it passes, move constraints.txt forward.
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q -c $(CONSTRAINTS) torch
	$(LATEST)/bin/pip install -q --upgrade $(PACKAGES)
	$(LATEST)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(LATEST)/bin/python scripts/test_latest.py $(PYTEST_ARGS)

# The package as users install it: a wheel, a clean venv with only it and its dependencies
# (pinned), and scripts/wheel_smoke.py run from outside the repository.
WHEEL_DIR  := build/wheel
WHEEL_VENV := build/wheel-venv
wheel-smoke: build
	rm -rf $(WHEEL_DIR) $(WHEEL_VENV)
	$(BIN)/pip wheel -q --no-build-isolation --no-deps -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q -c $(CONSTRAINTS) torch
	$(WHEEL_VENV)/bin/pip install -q -c $(CONSTRAINTS) "$$(ls $(WHEEL_DIR)/gptcore-*.whl)[hf]"
	cd $$(mktemp -d) && PATH=$(abspath $(WHEEL_VENV))/bin:$$PATH \
		$(abspath $(WHEEL_VENV))/bin/python $(abspath scripts/wheel_smoke.py)

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

# On a machine with a CUDA GPU, the first thing to run (bench/gpu_check.py): the Triton suites
# compiled and run on the GPU, then the kernels timed against torch SDPA / FlexAttention and a
# torch experts loop (vLLM's fused_moe if installed), each stage time-boxed, in 10 minutes on
# one H100/H200 (QUICK=1: 3 minutes), into one results file bench/results/gpu-check*.json.
gpu-check: build
	$(BIN)/python bench/gpu_check.py $(if $(QUICK),--quick)

bench: build
	$(BIN)/gptcore bench

clean:
	rm -rf build gptcore/_C*.so *.egg-info
