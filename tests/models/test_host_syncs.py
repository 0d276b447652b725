"""The forward (a reranker's, and an embedding model's body with its pooling) never reads a device tensor back on
the host (no ``.item()``, ``.tolist()`` or shape that depends on values): on a GPU each such read would stall the
host until the device caught up.

Two stand-ins for a card: every family's module runs on the meta device, whose tensors have shapes and no values
(any read of a value fails there); and the whole engine on the Triton kernels (through the interpreter) calls no
op that turns a tensor into a Python number.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig

from sie import Encoder, Reranker
from sie.kernels import resolve_kernels
from sie.models import family_of
from sie.packing import PackedBatch
from sie.encoder import POOLERS
from sie.testing import make_random_checkpoint, random_text
from sie.testing.embedders import make_random_embedder

ARCHS = {"bert": ("bert", "tiny", None), "xlm-roberta": ("xlm-roberta", "tiny", None),
         "qwen2": ("qwen2", "tiny-gqa", "mxbai-rerank-v2"), "qwen3": ("qwen3", "tiny-gqa", "qwen3-reranker")}
# Embedding models: (arch, shape, pooling).
ENCODERS = {"bert": ("bert", "tiny", "cls"), "modernbert": ("modernbert", "tiny-modernbert", "mean"),
            "qwen3": ("qwen3", "tiny-gqa", "lasttoken")}


def _shape_only_attention(q, k, v, cu_seqlens, max_seqlen, cu_seqlens_q, max_seqlen_q, *, causal, softmax_scale,
                          window=(-1, -1)):
    """What a kernel launch is to the host: an output of the right shape, the values left to the device."""
    return torch.empty_like(q)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("host-syncs")
    return {name: make_random_checkpoint(root / name, arch, shape=shape) for name, (arch, shape, _) in ARCHS.items()}


@pytest.fixture(scope="module")
def embedders(tmp_path_factory):
    root = tmp_path_factory.mktemp("host-syncs-encoders")
    return {name: make_random_embedder(root / name, arch, shape=shape, pooling=pooling)
            for name, (arch, shape, pooling) in ENCODERS.items()}


def meta_batch(lengths: tuple[int, ...]) -> PackedBatch:
    """A packed batch on the current device (meta in these tests): shapes, no values."""
    total = sum(lengths)
    return PackedBatch(input_ids=torch.zeros(total, dtype=torch.long),
                       token_type_ids=torch.zeros(total, dtype=torch.long),
                       position_ids=torch.zeros(total, dtype=torch.long),
                       cu_seqlens=torch.zeros(len(lengths) + 1, dtype=torch.int32), max_seqlen=max(lengths))


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_family_runs_on_tensors_without_values(checkpoints, name):
    config = AutoConfig.from_pretrained(checkpoints[name])
    family = family_of(config)
    if family.prompted:
        config.score_token_ids = (5, 7)
    kernels = dataclasses.replace(resolve_kernels(torch.device("cpu"), torch.float32, "torch"),
                                  attention=_shape_only_attention)
    with torch.device("meta"), torch.inference_mode():
        model = family.module(config, kernels)
        lengths = (7, 1, 12)
        relevance = family.relevance(model(meta_batch(lengths)))
    assert relevance.device.type == "meta" and relevance.shape == (len(lengths),)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_encoding_family_runs_on_tensors_without_values(embedders, name):
    """The body, for every token and for the rows of its ``row_pooling`` alone, and every pooling mode."""
    config = AutoConfig.from_pretrained(embedders[name])
    family = family_of(config, task="encode")
    kernels = dataclasses.replace(resolve_kernels(torch.device("cpu"), torch.float32, "torch"),
                                  attention=_shape_only_attention)
    lengths = (7, 1, 12)
    with torch.device("meta"), torch.inference_mode():
        model = family.module(config, kernels)
        batch = meta_batch(lengths)
        states = model(batch)
        pooled = [POOLERS[mode](states, batch) for mode in POOLERS]
        alone = model(batch, pooled_only=True)
    assert states.device.type == "meta" and states.shape == (sum(lengths), config.hidden_size)
    assert all(vectors.shape == (len(lengths), config.hidden_size) for vectors in pooled + [alone])


class ScalarReads(TorchDispatchMode):
    """Records every op that turns a tensor into a Python number (``.item()``, ``int(t)``, ``bool(t)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["bert", "qwen3"])
def test_the_engine_on_triton_reads_no_number_back(checkpoints, name, device, rng):
    _, _, recipe = ARCHS[name]
    reranker = Reranker(str(checkpoints[name]), device=device, dtype=torch.float32, backend="triton", recipe=recipe)
    encoded = reranker.encode(random_text(rng, 4), [random_text(rng, int(n)) for n in (3, 20, 9)])
    # Under inference mode a Python dispatch mode does not see these reads: run the undecorated method.
    with torch.no_grad(), ScalarReads() as recorder:
        type(reranker).logits.__wrapped__(reranker, encoded)
    assert recorder.reads == []


@pytest.mark.parametrize("name", ["bert", "qwen3"])
def test_the_encoder_on_triton_reads_no_number_back(embedders, name, device, rng):
    """The Encoder's body and pooling on the Triton kernels; only the pooled vectors come back, as one copy."""
    encoder = Encoder(str(embedders[name]), device=device, dtype=torch.float32, backend="triton")
    encoded = encoder.tokenize([random_text(rng, int(n)) for n in (3, 20, 9)])
    with torch.no_grad(), ScalarReads() as recorder:
        raw = type(encoder).run.__wrapped__(encoder, encoded)
    assert recorder.reads == [] and len(raw) == 3
