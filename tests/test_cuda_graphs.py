"""CUDA graph buckets, on any device: every bucket holds its batch, dummy sequences stay within their bounds, and
padding a batch with them changes no real score. The capture and replay themselves need a card
(benchmarks/gpu_check.sh checks that replay equals eager there)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sie import Reranker
from sie.cuda_graphs import SEQUENCE_BUCKETS, TOKEN_BUCKETS, bucket_for, dummy_lengths
from sie.packing import pack
from sie.testing import make_random_checkpoint, random_text


def test_every_bucket_holds_its_batch_with_dummies_of_one_token_to_max_seqlen(rng):
    for _ in range(300):
        count = int(rng.integers(1, 300))
        lengths = rng.integers(1, 513, size=count)
        bucket = bucket_for(lengths, max_length=512)
        if bucket is None:
            assert lengths.sum() + 1 > TOKEN_BUCKETS[-1] or count + 1 > SEQUENCE_BUCKETS[-1] or \
                lengths.sum() > TOKEN_BUCKETS[-1] // 2, "a batch well inside the ladders got no bucket"
            continue
        dummies = dummy_lengths(lengths, bucket)
        assert bucket.max_seqlen >= lengths.max() and bucket.max_seqlen <= 512
        assert bucket.tokens in TOKEN_BUCKETS and bucket.sequences in SEQUENCE_BUCKETS
        assert len(dummies) == bucket.sequences - count >= 1
        assert dummies.min() >= 1 and dummies.max() <= bucket.max_seqlen
        assert lengths.sum() + dummies.sum() == bucket.tokens


def test_max_seqlen_is_capped_by_the_model_length_and_huge_batches_run_eagerly():
    assert bucket_for(np.array([90, 100]), max_length=100).max_seqlen == 100
    assert bucket_for(np.array([600] * 200), max_length=1024) is None  # 120,000 tokens: off the ladder
    assert bucket_for(np.array([], dtype=np.int64), max_length=512) is None


@pytest.mark.parametrize(("arch", "shape", "recipe"), [("bert", "tiny", None), ("xlm-roberta", "tiny", None),
                                                       ("qwen3", "tiny-gqa", "qwen3-reranker")])
def test_dummy_sequences_change_no_real_score(arch, shape, recipe, tmp_path, rng):
    path = make_random_checkpoint(tmp_path / arch, arch, shape=shape)
    reranker = Reranker(str(path), device="cpu", dtype=torch.float32, recipe=recipe)
    encoded = reranker.encode(random_text(rng, 4), [random_text(rng, int(n)) for n in rng.integers(0, 60, size=9)])
    indices = np.arange(encoded.num_pairs)
    bucket = bucket_for(encoded.lengths, reranker.model_max_length)
    offset = reranker.model.position_offset
    with torch.inference_mode():
        plain = reranker._forward(pack(encoded, indices, offset, reranker.device))
        padded = reranker._forward(pack(encoded, indices, offset, reranker.device,
                                        dummy_lengths(encoded.lengths, bucket), bucket.max_seqlen))
    assert padded.shape == (bucket.sequences,) and torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:encoded.num_pairs], plain, rtol=0, atol=1e-5)


def test_graphs_are_off_on_the_cpu_by_default(random_bert_path):
    assert Reranker(str(random_bert_path), device="cpu")._graphed is None
