# One entry point: every target sets up what it needs from scratch (a fresh machine has Python 3.11).
#   make serve   set up, fetch the default model, serve the score API on :8080
#   make test    set up, fetch the default model, run the test suite, then the GPU check's CPU dry run and
#                small runs of the end-to-end and server benchmarks, so that none of them rots unnoticed
#   make bench   the end-to-end benchmark recorded in benchmarks/RESULTS.md
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: this version's CPU wheel is local here, and any looser spec may pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup model serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py pyproject.toml | $(BIN)/python
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
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh --cpu
	$(BIN)/python benchmarks/bench_rerank.py --documents 8 --repeats 1
	$(BIN)/python benchmarks/bench_server.py --quick

bench: model
	$(BIN)/python benchmarks/bench_rerank.py

clean:
	rm -rf $(VENV) build *.egg-info
