"""Kernel tests poison every output: while a test runs, torch.empty fills new memory with NaN (integers with
their maximum), so an element a kernel fails to write cannot pass as a value left behind by an earlier run."""

import pytest

from sie.testing.references import poisoned_uninitialized_memory


@pytest.fixture(autouse=True)
def poison_uninitialized_memory():
    with poisoned_uninitialized_memory():
        yield
