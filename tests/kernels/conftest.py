"""Kernel tests poison every output: while a test runs, torch.empty fills new memory with NaN (integers with
their maximum), so an element a kernel fails to write cannot pass as a value left behind by an earlier run."""

import pytest
import torch
import torch.utils.deterministic


@pytest.fixture(autouse=True)
def poison_uninitialized_memory():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    # fill_uninitialized_memory acts only in deterministic mode; warn_only keeps other ops running.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.utils.deterministic.fill_uninitialized_memory = saved[2]
