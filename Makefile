# One entry point: every target sets up what it needs from scratch (a fresh machine has Python 3.11).
#   make serve   set up, fetch the default model, serve the score API on :8080
#   make kernels build sie's C++ CPU kernels (`sie kernels build`); serve and test do it first
#   make test    set up, fetch the default model, prove the offline editable install (check-offline-install), run
#                the test suite, then the GPU check's CPU dry run and small runs of the benchmarks (the
#                end-to-end and server ones through the CPU check), so that none of them rots unnoticed
#   make check-offline-install   `pip install --no-index --no-build-isolation -e .` into a fresh environment that
#                reuses $(VENV)'s packages, as on the GPU machine (no network); a few seconds
#   make bench   the end-to-end benchmark recorded in benchmarks/RESULTS.md
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: this version's CPU wheel is local here, and any looser spec may pull a CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup model kernels serve test check-offline-install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $@

setup: $(VENV)/.installed

model: setup
	$(BIN)/sie models fetch-default

# sie's C++ CPU kernels, compiled once into torch's extension cache, so that no test, server worker or Ray actor
# waits on the compiler; where they cannot run, PyTorch's ops do (the `-`: not an error for make).
kernels: setup
	-$(BIN)/sie kernels build

serve: model kernels
	$(BIN)/sie serve --model cross-encoder/ms-marco-MiniLM-L-12-v2

test: model kernels check-offline-install
	$(BIN)/python -m pytest
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh --cpu
	$(BIN)/python benchmarks/bench_rerank.py --model-shape tiny-gqa --documents 4 --repeats 1
	$(BIN)/python benchmarks/bench_score_file.py --pairs 128 --chunk-rows 32 --repeats 1
	$(BIN)/python benchmarks/bench_encode.py --sentences 16 --repeats 1
	$(BIN)/python benchmarks/bench_load.py --shape tiny-gqa --dtypes int8 --repeats 1
	$(BIN)/python benchmarks/cpu_check.py --quick --no-onnx

check-offline-install: setup
	bash .ci/check-offline-install $(VENV)

bench: model
	$(BIN)/python benchmarks/bench_rerank.py

clean:
	rm -rf $(VENV) build *.egg-info
