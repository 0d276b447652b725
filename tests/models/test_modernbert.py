"""ModernBERT: checkpoint keys, logits equal to transformers' ModernBertForSequenceClassification (fp32) on pairs
shorter and longer than the local window, embeddings equal to ModernBertModel + pooling, packing invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from sie import Encoder, Reranker
from sie.models.modernbert import ENCODER, FAMILY
from sie.testing import make_random_checkpoint
from sie.testing.checkpoints import Shape
from sie.testing.embedders import make_random_embedder
from sie.testing.words import random_pairs, random_text
from tests.models.test_bert import ShapeRecorder

# The random checkpoints' window: 16 tokens, 8 on each side. Documents from empty to far past it.
WINDOW = 16
DOCUMENT_WORDS = (0, 1, 3, 6, 12, 30, 70, 160)
VARIANTS = {
    # four layers: global, local, local, global (the CLS rows alone run the last layer)
    "cls": dict(shape="tiny-modernbert", config={}),
    "mean": dict(shape="tiny-modernbert", config={"classifier_pooling": "mean"}),
    # two layers: global, local (a local last layer runs every row)
    "local-last": dict(shape="tiny", config={}),
    "biases": dict(shape="tiny-modernbert", config={"norm_bias": True, "attention_bias": True, "mlp_bias": True,
                                                   "classifier_bias": True, "classifier_activation": "silu"}),
    # five layers, every other one global; an odd window (8 keys on each side, as transformers halves it); rotary
    # bases other than the defaults, one per kind of layer (the older config keys, which transformers converts)
    "every-other": dict(shape=Shape(num_layers=5, hidden=32, heads=2, intermediate=48),
                        config={"global_attn_every_n_layers": 2, "local_attention": WINDOW + 1,
                                "global_rope_theta": 500.0, "local_rope_theta": 40.0}),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def modernbert_path(request, tmp_path_factory):
    variant = VARIANTS[request.param]
    return make_random_checkpoint(tmp_path_factory.mktemp(f"modernbert-{request.param}"), "modernbert",
                                  shape=variant["shape"], seed=11, config={"local_attention": WINDOW,
                                                                           **variant["config"]})


def transformers_logits(path, pairs, max_length: int) -> np.ndarray:
    """transformers on one padded batch (its sliding-window and padding masks): the reference."""
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    queries, documents = zip(*pairs, strict=True)
    inputs = tokenizer(list(queries), list(documents), truncation="only_second", max_length=max_length,
                       padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode():
        return model(**inputs).logits[:, 0].numpy()


def test_logits_match_transformers(modernbert_path, seed):
    reranker = Reranker(str(modernbert_path), device="cpu", dtype=torch.float32, max_length=128,
                        max_batch_tokens=300)
    pairs = [("python", ""), ("what", "snake"), *random_pairs(seed, DOCUMENT_WORDS)]
    lengths = reranker.encode([q for q, _ in pairs], [d for _, d in pairs]).lengths
    assert lengths.min() <= WINDOW // 2 and lengths.max() == 128, "pairs must fall inside and far outside the window"

    ours = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours, transformers_logits(modernbert_path, pairs, 128), rtol=0, atol=1e-4)


def test_checkpoint_keys_and_shapes_map_onto_the_module(modernbert_path):
    reranker = Reranker(str(modernbert_path), device="cpu", dtype=torch.float32)
    ours = {key: tuple(value.shape) for key, value in reranker.model.state_dict().items()}
    converted = FAMILY.convert_checkpoint(load_file(modernbert_path / "model.safetensors").items(), None)
    assert {key: tuple(value.shape) for key, value in converted.items()} == ours
    assert reranker.architecture == "ModernBertForSequenceClassification"


def test_a_pair_scores_the_same_alone_batched_and_reordered(modernbert_path, rng):
    reranker = Reranker(str(modernbert_path), device="cpu", dtype=torch.float32, max_batch_tokens=200)
    pairs = [(random_text(rng, 3), random_text(rng, int(words))) for words in rng.integers(0, 60, size=10)]
    together = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    alone = np.array([reranker.predict([pair], activation_fn=torch.nn.Identity())[0] for pair in pairs])
    order = rng.permutation(len(pairs))
    reordered = reranker.predict([pairs[i] for i in order], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, together[order], rtol=0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embeddings_match_modernbert_model_with_pooling(pooling, tmp_path, rng):
    path = make_random_embedder(tmp_path / "embedder", "modernbert", shape="tiny-modernbert", pooling=pooling,
                                normalize=False, seed=12, config={"local_attention": WINDOW})
    encoder = Encoder(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=300)
    assert encoder.architecture == "ModernBertModel" and encoder.family is ENCODER
    texts = [random_text(rng, int(words)) for words in (1, 4, 9, 25, 80, 200)]
    ours = encoder.encode(texts)

    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt",
                       return_token_type_ids=False)
    assert int(inputs["attention_mask"].sum(1).max()) > WINDOW
    with torch.inference_mode():
        states = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"][:, :, None].float()
    expected = states[:, 0] if pooling == "cls" else (states * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=1e-5)


def test_the_engine_never_builds_a_padded_batch(rng, tmp_path):
    path = make_random_checkpoint(tmp_path / "modernbert", "modernbert", shape="tiny-modernbert", seed=13,
                                  config={"local_attention": WINDOW, "classifier_pooling": "mean"})
    reranker = Reranker(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=1000)
    documents = [random_text(rng, words) for words in (3, 40, 9, 17, 1, 26)]
    model_dims = {size for parameter in reranker.model.parameters() for size in parameter.shape}
    encoded = reranker.encode("what is the capital of france", documents)
    while int(encoded.lengths.max()) in model_dims:
        documents[int(encoded.lengths.argmax())] += " python"
        encoded = reranker.encode("what is the capital of france", documents)
    with ShapeRecorder() as recorder:
        reranker.logits(encoded)
    shape = (encoded.num_pairs, int(encoded.lengths.max()))
    padded = [(op, s) for op, s in recorder.shapes if any(s[i:i + 2] == shape for i in range(len(s) - 1))]
    assert not padded, f"padded [batch, max_len] tensors were built: {padded[:5]}"
