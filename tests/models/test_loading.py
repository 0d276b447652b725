"""Loading a model: it holds the checkpoint once, keeps none of its file's pages, and the module built on the meta
device runs no initialisation.

A bf16 decoder checkpoint loads in each dtype with a peak near what the loaded model holds. Before tensors were read
one at a time, fused as they arrived and quantized from their stored dtype, an int8 load peaked at the whole model in
fp32 (RESULTS.md, "Loading a model")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sie import Reranker
from sie.models.loading import SkipInitialisation
from sie.testing import make_random_checkpoint
from sie.testing.checkpoints import Shape
from sie.testing.loading import measure_load

# ~64M parameters in four layers (128 MB in bf16): large enough that the weights dwarf the allocator's noise.
SHAPE = Shape(num_layers=4, hidden=1024, heads=16, intermediate=4096, kv_heads=8, head_dim=64)


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    path = make_random_checkpoint(tmp_path_factory.mktemp("memory") / "qwen3", "qwen3", shape=SHAPE,
                                  tie_word_embeddings=False, dtype=torch.bfloat16)
    return path, (path / "model.safetensors").stat().st_size


# The bar on anonymous memory at the peak of the load, above the process before it, over the checkpoint's size. The
# model itself takes 0.5 of it in int8, 2.0 in fp32 and 1.0 in bf16, the tokenizer and the rest ~0.2. Measured:
# int8 1.5-1.6 (4.1 before: the whole model in fp32, then quantized), fp32 2.4 (4.1: a bf16 shard beside the fp32
# tensors, and fused copies beside their parts), bf16 1.3.
@pytest.mark.parametrize(("dtype", "bar"), [("int8", 2.5), ("float32", 3.0), ("bfloat16", 1.75)])
def test_loading_holds_the_checkpoint_once(bf16_checkpoint, dtype, bar):
    path, checkpoint_bytes = bf16_checkpoint
    load = measure_load(path, dtype, recipe="qwen3-reranker")
    peak = load.peak - load.before
    assert peak <= bar * checkpoint_bytes, (
        f"{dtype}: {peak / 1e6:.0f} MB at the peak ({load.kept / 1e6:.0f} MB once loaded) for a "
        f"{checkpoint_bytes / 1e6:.0f} MB checkpoint")
    # The model owns its tensors: none views the checkpoint's mapped file, whose pages would stay resident (0.7-1.3x
    # the checkpoint before). Counted on the file's own mappings: the resident set as a whole also moves with the
    # libraries mapped on the way (15-20 MB here, 33-37 MB in a CI run whose page cache held more of them).
    assert load.checkpoint_mapped == 0, f"{dtype}: {load.checkpoint_mapped / 1e6:.1f} MB of the checkpoint mapped"


def test_meta_modules_are_built_without_initialisation_and_real_tensors_are_untouched():
    with torch.device("meta"), SkipInitialisation():
        linear, embedding, norm = nn.Linear(8, 4), nn.Embedding(10, 4, padding_idx=0), nn.LayerNorm(4)
    assert linear.weight.is_meta and embedding.weight.shape == (10, 4) and norm.bias.shape == (4,)
    real = torch.zeros(3)
    with SkipInitialisation():
        nn.init.normal_(real)
        assert real.abs().sum() > 0
        real.fill_(2.0)
    assert torch.equal(real, torch.full((3,), 2.0))


def test_a_first_model_load_does_not_import_dynamo(random_bert_path):
    """Meta ``normal_`` imports torch._dynamo: 1.2-2.5 s of a fresh process's first load before SkipInitialisation."""
    load = measure_load(random_bert_path, "float32")
    if load.dynamo_before:
        pytest.skip("importing sie already imports torch._dynamo with this torch")
    assert not load.dynamo_after


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_the_loaded_model_owns_every_tensor(tmp_path, arch, dtype):
    """No parameter or buffer views the checkpoint's file (memory torch did not allocate, whose storage cannot be
    resized), whether the load dtype is the stored one or not: fused tensors are kept as made, the rest copied."""
    path = make_random_checkpoint(tmp_path / arch, arch, dtype=torch.bfloat16)
    recipe = "qwen3-reranker" if arch == "qwen3" else None
    reranker = Reranker(str(path), device="cpu", dtype=dtype, recipe=recipe)
    tensors = dict(reranker.model.named_parameters()) | dict(reranker.model.named_buffers())
    assert tensors and all(tensor.untyped_storage().resizable() for tensor in tensors.values()), \
        [name for name, tensor in tensors.items() if not tensor.untyped_storage().resizable()][:8]
