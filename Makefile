# mi-align: the two commands a fresh machine needs are `make demo` and `make test`.
# torch is installed first and pinned through constraints.txt: letting the resolver pick it pulls the newest
# build with several GB of CUDA wheels on a CPU-only box.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTEST_ARGS ?=
RUN_DIR ?= runs/demo
MODEL ?= gemma-3-1b-it

.PHONY: install test test-all demo reproduce gpu-check bench clean

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@echo "installing into $(VENV): torch $(TORCH_VERSION) first, then requirements.txt (first time: several minutes)"
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	@echo "torch installed; now requirements.txt"
	$(PYTHON) -m pip install -q -r requirements.txt -c constraints.txt
	touch $(STAMP)
	@echo "installed: $(VENV)"

# The default suite: everything but tests marked `slow` (CI budget: 30 min on 2 cores).
test: $(STAMP)
	$(OFFLINE) $(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(OFFLINE) $(PYTHON) -m pytest $(PYTEST_ARGS)

# The embedded demo tasks, or real MBPP when MBPP_PATH names an mbpp.jsonl (same sizes: first 24 train/test tasks).
DEMO_DATA = $(if $(MBPP_PATH),--set data.source=$(MBPP_PATH),)

demo: $(STAMP)
	$(OFFLINE) $(PYTHON) -m common run --config configs/demo.yaml --run-dir $(RUN_DIR) $(DEMO_DATA)

# On a CUDA machine: a few steps of every training method and sampling on the embedded 270M in bf16, offline.
gpu-check: $(STAMP)
	$(OFFLINE) $(PYTHON) -m common.gpu_check

# GPU box: the paper preset for one of the four paper models (needs the hub or a local model copy).
reproduce: $(STAMP)
	$(PYTHON) -m common run --config configs/paper.yaml --set model=$(MODEL) --run-dir runs/paper-$(MODEL)

bench: $(STAMP)
	$(OFFLINE) $(PYTHON) benchmarks/bench_sandbox.py
	$(OFFLINE) $(PYTHON) benchmarks/bench_generation.py

clean:
	rm -rf $(VENV) runs .pytest_cache
