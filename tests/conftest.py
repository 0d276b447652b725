"""Test set-up shared by every test module.

Triton runs on CPU tensors only through its interpreter, and the switch is read when ``@triton.jit``
modules are imported: set it here, before any test module imports ``sie.kernels``. On a CUDA machine
(benchmarks/gpu_check.sh) ``SIE_TEST_DEVICE=cuda`` keeps the real compiler.
"""

import os

if os.environ.get("SIE_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
# No model hub is reachable from tests: resolution must not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device kernel and engine tests run on: CPU (interpreter) unless SIE_TEST_DEVICE says otherwise."""
    return torch.device(os.environ.get("SIE_TEST_DEVICE", "cpu"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped with a reason on CPU")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
