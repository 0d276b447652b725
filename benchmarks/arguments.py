"""Command-line argument types shared by the benchmarks."""

from __future__ import annotations

import argparse


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
