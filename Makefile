# One entry point: every target sets up what it needs from scratch (a fresh machine has Python 3.11).
#   make serve   set up, fetch the default model, serve the score API on :8080
#   make test    set up, fetch the default model, run the test suite, the GPU check's CPU dry run and
#                the benchmarks' smoke runs
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: this version's CPU wheel is local here, and any looser spec may pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup model serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

model: setup
	$(BIN)/sie models fetch-default

serve: model
	$(BIN)/sie serve --model cross-encoder/ms-marco-MiniLM-L-12-v2

test: model
	$(BIN)/python -m pytest
	bash benchmarks/gpu_check.sh --cpu

bench: model
	$(BIN)/python benchmarks/bench_rerank.py

clean:
	rm -rf $(VENV) build *.egg-info
