#!/usr/bin/env bash
# The one script to run on a CUDA machine. Installs nothing from the network; needs torch, triton and
# transformers (with its tokenizers, safetensors, numpy). Runs, in order:
#   1. makes sie importable: `pip install --no-deps --no-build-isolation -e .` (offline: see pyproject.toml)
#   2. the kernel tests on CUDA (pytest tests/kernels with SIE_TEST_DEVICE=cuda), when pytest is installed
#   3. benchmarks/gpu_check.py: kernel accuracy at realistic shapes, engine parity with transformers on random
#      MiniLM-L12 / BERT-base / XLM-R-large shaped models (fp32, fp16, bf16), the kernel benchmark and the
#      end-to-end benchmark, then a summary table, printed last.
# Results (logs, JSON, kernels.png, summary.txt) go to $OUT when set, else benchmarks/out/gpu_check.
#
#   benchmarks/gpu_check.sh          # on the GPU machine: under 8 minutes on an H100
#   benchmarks/gpu_check.sh --cpu    # dry run on CPU: Triton's interpreter, tiny shapes, the same code paths
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# $PYTHON, else the checkout's virtual environment (make setup), else the python on PATH (the GPU machine's).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python || command -v python3); fi
fi
DEVICE=cuda
TINY=()
# test_compile (marked slow) compiles for sm_90 without a GPU: redundant where the kernels run for real.
PYTEST_TARGETS=(tests/kernels -m "not slow")
if [[ "${1:-}" == "--cpu" ]]; then
    DEVICE=cpu
    TINY=(--tiny)
    export TRITON_INTERPRET=1
    # CI's test job runs the whole kernel suite on CPU; the dry run only proves this step works.
    PYTEST_TARGETS=(tests/kernels/test_gelu.py tests/kernels/test_dispatch.py)
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--cpu]" >&2
    exit 2
fi
RESULTS=${OUT:-$ROOT/benchmarks/out/gpu_check}
mkdir -p "$RESULTS"
export SIE_TEST_DEVICE=$DEVICE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== install"
if ! "$PYTHON" -c "import sie.kernels" 2>/dev/null; then
    # pyproject.toml names the build backend, so this editable install (PEP 660) needs no network.
    if ! "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . >"$RESULTS/install.log" 2>&1; then
        # The checkout is the installed layout (every module under sie/), so the path is enough.
        echo "pip install -e . failed (see install.log): importing sie from $ROOT instead"
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
"$PYTHON" -c "import sie.kernels" || { echo "sie is not importable" >&2; exit 1; }

echo "== kernel tests on $DEVICE"
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_TARGETS[@]}" 2>&1 | tee "$RESULTS/pytest.log"
    PYTEST_RC=${PIPESTATUS[0]}
    PYTEST_LAST=$(tail -n 1 "$RESULTS/pytest.log" | tr -d '=' | sed 's/^ *//')
    if [[ $PYTEST_RC -eq 0 ]]; then PYTEST_STATUS="ok $PYTEST_LAST"; else PYTEST_STATUS="FAIL $PYTEST_LAST"; fi
else
    PYTEST_STATUS="skipped pytest is not installed (the accuracy stage still checks every kernel)"
    echo "$PYTEST_STATUS"
fi

"$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --results "$RESULTS" --pytest-status "$PYTEST_STATUS" \
    "${TINY[@]}" 2>&1 | tee "$RESULTS/gpu_check.log"
exit "${PIPESTATUS[0]}"
