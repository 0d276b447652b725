"""The benchmarks refuse a count below 1 with a usage line and exit status 2, where a zero used to end a run in a
traceback after minutes of loading (bench_server.py --latency-requests 0: IndexError)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(("script", "argument", "value", "message"), [
    ("bench_server.py", "--latency-requests", "0", "0 is not a positive number"),
    ("bench_rerank.py", "--repeats", "-3", "-3 is not a positive number"),
    ("soak.py", "--clients", "many", "'many' is not a whole number"),
    ("soak.py", "--window", "0", "0 is not a positive number"),  # a ZeroDivisionError once the soak was over
    ("soak.py", "--minutes", "nan", "nan is not a positive number"),
])
def test_a_count_below_one_is_refused_naming_the_argument(script, argument, value, message):
    done = subprocess.run([sys.executable, script, argument, value], cwd=BENCHMARKS, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert f"argument {argument}: {message}" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize(("script", "arguments", "message"), [
    ("bench_rerank.py", ["--min-tokens", "300", "--max-tokens", "250"], "--min-tokens 300 is above --max-tokens 250"),
    ("bench_encode.py", ["--min-words", "50", "--max-words", "20"], "--min-words 50 is above --max-words 20"),
])
def test_a_range_whose_low_end_is_above_its_high_end_is_refused(script, arguments, message):
    """It used to load the models, then end in numpy's ValueError (low >= high)."""
    done = subprocess.run([sys.executable, script, *arguments], cwd=BENCHMARKS, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(f"error: {message}")
