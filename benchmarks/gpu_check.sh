#!/usr/bin/env bash
# The one script to run on a CUDA machine. Installs nothing from the network; needs torch, triton and
# transformers (with its tokenizers, safetensors, numpy). Runs, in order:
#   1. makes sie importable: `pip install --no-index --no-deps --no-build-isolation -e .` (PEP 660, offline: see
#      pyproject.toml; CI proves it with .ci/check-offline-install)
#   2. the kernel tests on CUDA (pytest tests/kernels with SIE_TEST_DEVICE=cuda), when pytest is installed, stopped
#      after --pytest-timeout seconds (default 90); a test running over 60 s has its stacks dumped into pytest.log
#   3. benchmarks/gpu_check.py: kernel accuracy at realistic shapes, engine parity with transformers on random
#      MiniLM-L12 / BERT-base / XLM-R-large shaped models (fp32, fp16, bf16), the kernel benchmark and the
#      end-to-end benchmark, each stage under its own time limit (505 s in all on a GPU by default), then a summary
#      table, printed last. Every random input comes from one seed, printed first and in the summary.
#      On a GPU it is ended --budget seconds (default 585) after this script began, as the device call's 10 minutes
#      would end it: the kernel tests' 90 s, the stages' 505 s, the imports and a stall's --grace add up past them.
#      The summary as it stood is then printed from summary.txt. --budget 0: no limit (the --cpu default).
# Results (logs, JSON, kernels.png, summary.txt, <stage>.traceback.txt for a stage that failed) go to $OUT when
# set, else benchmarks/out/gpu_check. Other options are passed to gpu_check.py (see its --help), e.g.
# --seed N to replay a run, --limit parity=300 to give a stage more time.
#
#   benchmarks/gpu_check.sh          # on the GPU machine: about 10 minutes at most, even if every stage stalls
#   benchmarks/gpu_check.sh --cpu    # dry run on CPU: Triton's interpreter, tiny shapes, the same code paths
set -uo pipefail

usage="usage: $0 [--cpu] [--pytest-timeout SECONDS] [--budget SECONDS]
    [gpu_check.py options: --seed N, --limit [STAGE=]SECONDS, ...]"
cd "$(dirname "$0")/.."
ROOT=$PWD
# $PYTHON, else the checkout's virtual environment (make setup), else the python on PATH (the GPU machine's).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python || command -v python3); fi
fi
DEVICE=cuda
TINY=()
PYTEST_TIMEOUT=90
BUDGET=
CHECK_ARGS=()
# test_compile (marked slow) compiles for sm_90 without a GPU: redundant where the kernels run for real.
PYTEST_TARGETS=(tests/kernels -m "not slow")
while [[ $# -gt 0 ]]; do
    case $1 in
        --cpu)
            DEVICE=cpu
            TINY=(--tiny)
            export TRITON_INTERPRET=1
            # CI's test job runs the whole kernel suite on CPU; the dry run only proves this step works.
            PYTEST_TARGETS=(tests/kernels/test_gelu.py tests/kernels/test_dispatch.py) ;;
        --pytest-timeout)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
            PYTEST_TIMEOUT=$2
            shift ;;
        --budget)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "$usage" >&2; exit 2; }
            BUDGET=$2
            shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) CHECK_ARGS+=("$1") ;;
    esac
    shift
done
[[ -n $BUDGET ]] || { [[ $DEVICE == cuda ]] && BUDGET=585 || BUDGET=0; }
RESULTS=${OUT:-$ROOT/benchmarks/out/gpu_check}
mkdir -p "$RESULTS"
# What an earlier run left that this one might not rewrite.
rm -f "$RESULTS"/*.traceback.txt "$RESULTS/summary.txt" "$RESULTS/gpu_check.json"
export SIE_TEST_DEVICE=$DEVICE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

echo "== install"
# -P: not from the working directory, where the checkout's sie/ always imports, as it does not for gpu_check.py (a
# script in benchmarks/): on a machine without sie installed the check passed and every stage failed to import it.
if ! "$PYTHON" -P -c "import sie.kernels" 2>/dev/null; then
    # pyproject.toml names the build backend, so this editable install (PEP 660) needs no network; --no-index and no
    # version check make sure pip does not try.
    if ! timeout 120 "$PYTHON" -m pip install --quiet --no-index --disable-pip-version-check --no-deps \
            --no-build-isolation -e . >"$RESULTS/install.log" 2>&1; then
        # The checkout is the installed layout (every module under sie/), so the path is enough.
        echo "pip install -e . failed (see install.log): importing sie from $ROOT instead"
        export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
"$PYTHON" -P -c "import sie.kernels" || { echo "sie is not importable" >&2; exit 1; }
# The server stage's packages, when carried as wheels (benchmarks/gpu_wheels.sh) to a machine that lacks them.
if [[ -d .whl ]] && ! "$PYTHON" -c "import flask, gunicorn, prometheus_client" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target /tmp/site .whl/*.whl >>"$RESULTS/install.log" 2>&1 \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" \
        || echo "installing the carried wheels failed (see install.log): the server stage will be skipped"
fi

echo "== kernel tests on $DEVICE (limit $PYTEST_TIMEOUT s)"
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    START=$SECONDS
    timeout -k 10 "$PYTEST_TIMEOUT" "$PYTHON" -m pytest -q -p no:cacheprovider -o faulthandler_timeout=60 \
        "${PYTEST_TARGETS[@]}" 2>&1 | tee "$RESULTS/pytest.log"
    PYTEST_RC=${PIPESTATUS[0]}
    PYTEST_LAST=$(tail -n 1 "$RESULTS/pytest.log" | tr -d '=' | sed 's/^ *//')
    if [[ $PYTEST_RC -eq 0 ]]; then
        PYTEST_STATUS="ok $PYTEST_LAST"
    elif [[ $PYTEST_RC -eq 124 || $PYTEST_RC -eq 137 ]]; then
        PYTEST_STATUS="FAIL timed out after $((SECONDS - START)) s (limit $PYTEST_TIMEOUT s; see pytest.log)"
        echo "$PYTEST_STATUS"
    else
        PYTEST_STATUS="FAIL $PYTEST_LAST"
    fi
else
    PYTEST_STATUS="skipped pytest is not installed (the accuracy stage still checks every kernel)"
    echo "$PYTEST_STATUS"
fi

CHECK=("$PYTHON" benchmarks/gpu_check.py)
if [[ $BUDGET -gt 0 ]]; then
    # SIGTERM to gpu_check.py and its children (timeout signals its process group), 5 s later SIGKILL.
    CHECK=(timeout -k 5 $((BUDGET > SECONDS ? BUDGET - SECONDS : 1)) "${CHECK[@]}")
fi
"${CHECK[@]}" --device "$DEVICE" --results "$RESULTS" --pytest-status "$PYTEST_STATUS" \
    "${TINY[@]}" "${CHECK_ARGS[@]}" 2>&1 | tee "$RESULTS/gpu_check.log"
CHECK_RC=${PIPESTATUS[0]}
if ! grep -q '^== summary' "$RESULTS/gpu_check.log" && [[ -f "$RESULTS/summary.txt" ]]; then
    # Ended by a stage's hard time limit (or a crash): the summary as it stood, naming the stage.
    shopt -s nullglob
    STACKS=("$RESULTS"/*.traceback.txt)
    echo
    [[ $CHECK_RC -eq 124 || $CHECK_RC -eq 137 ]] && echo "gpu_check.py ended: --budget $BUDGET s ran out"
    echo "== summary (gpu_check.py stopped early, exit $CHECK_RC; stacks in: ${STACKS[*]##*/})"
    cat "$RESULTS/summary.txt"
fi
exit "$CHECK_RC"
