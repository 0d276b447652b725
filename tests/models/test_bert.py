"""The BERT module itself: checkpoint keys, the packed layout it runs, and packing invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from sie import Reranker, UnsupportedModelError
from sie.models.bert import FAMILY, fuse_qkv
from sie.testing.words import random_text


@pytest.fixture(scope="module")
def tiny(random_bert_path) -> Reranker:
    return Reranker(str(random_bert_path), device="cpu", dtype=torch.float32, max_batch_tokens=256)


def test_checkpoint_keys_and_shapes_map_onto_the_module(random_bert_path, tiny):
    ours = {key: tuple(value.shape) for key, value in tiny.model.state_dict().items()}
    converted = FAMILY.convert_checkpoint(load_file(random_bert_path / "model.safetensors").items(), None)
    renamed = {key: tuple(value.shape) for key, value in converted.items()}
    assert renamed == ours


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor each aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.shapes.append((str(func), tuple(tensor.shape)))
        return out


def test_engine_never_builds_a_padded_batch(random_bert_path, rng):
    # A budget far above what seven short pairs can reach, so they share one micro-batch whatever words are drawn.
    tiny = Reranker(str(random_bert_path), device="cpu", dtype=torch.float32, max_batch_tokens=4096)
    documents = [random_text(rng, words) for words in (3, 40, 9, 17, 1, 26, 30)]
    # A longest pair as long as a model dimension would make (batch, intermediate), the CLS rows' FFN, look padded.
    model_dims = {size for parameter in tiny.model.parameters() for size in parameter.shape}
    encoded = tiny.encode("what is the capital of france", documents)
    while int(encoded.lengths.max()) in model_dims:
        documents[int(encoded.lengths.argmax())] += " python"
        encoded = tiny.encode("what is the capital of france", documents)
    batch_size, max_seqlen = encoded.num_pairs, int(encoded.lengths.max())
    assert tiny.max_batch_tokens >= encoded.num_tokens, "the pairs must share one micro-batch for this test"

    with ShapeRecorder() as recorder:
        tiny.logits(encoded)

    padded = [(op, shape) for op, shape in recorder.shapes
              if any(shape[i:i + 2] == (batch_size, max_seqlen) for i in range(len(shape) - 1))]
    assert not padded, f"padded [batch, max_len] tensors were built: {padded[:5]}"
    assert any(shape[:1] == (encoded.num_tokens,) for _, shape in recorder.shapes), "the packed layout did not run"


def test_a_pair_scores_the_same_alone_batched_and_reordered(tiny, rng):
    pairs = [(random_text(rng, 4), random_text(rng, int(words))) for words in rng.integers(0, 80, size=12)]
    together = tiny.predict(pairs, activation_fn=torch.nn.Identity())
    alone = np.array([tiny.predict([pair], activation_fn=torch.nn.Identity())[0] for pair in pairs])
    order = rng.permutation(len(pairs))
    reordered = tiny.predict([pairs[i] for i in order], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, together[order], rtol=0, atol=1e-5)


def test_attention_weights_beyond_query_key_value_are_refused(random_bert_path):
    state = load_file(random_bert_path / "model.safetensors")
    state["bert.encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 4)
    with pytest.raises(UnsupportedModelError, match="distance_embedding"):
        fuse_qkv(state.items())
