"""Command-line argument types shared by the benchmarks."""

from __future__ import annotations

import argparse
import math


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (documents, requests, clients, repeats, threads, tokens). A
    zero or a negative number is refused with a usage line, where it would otherwise end the run in a traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def positive(text: str) -> float:
    """An argparse type: a finite number above 0 (minutes, seconds). A zero, a negative number or nan is refused with
    a usage line, where it would otherwise end the run in a traceback once the run is over (soak.py --window 0)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value
