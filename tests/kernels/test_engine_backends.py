"""The engine on the Triton kernels (through the interpreter) scores like the engine on the torch path."""

import numpy as np
import pytest
import torch

from sie import Reranker
from sie.testing import make_random_checkpoint
from sie.testing.words import random_text

# (arch, shape, recipe, max_length): the decoders' prompt alone is a hundred or more tokens.
MODELS = {
    "bert": ("bert", "tiny", None, 96),
    "xlm-roberta": ("xlm-roberta", "tiny", None, 96),
    "qwen3": ("qwen3", "tiny-gqa", "qwen3-reranker", 200),
    "qwen2": ("qwen2", "tiny-gqa", "mxbai-rerank-v2", 300),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_triton_backend_scores_like_torch_backend(name, tmp_path, device, rng):
    arch, shape, recipe, max_length = MODELS[name]
    path = make_random_checkpoint(tmp_path / name, arch, shape=shape, max_position_embeddings=512)
    query = random_text(rng, 5)
    # One-token to truncated documents, so sequences end inside and at the edges of the kernels' blocks.
    documents = [random_text(rng, int(words)) for words in (0, 1, 9, 30, 200)]
    scores = {}
    for backend in ("torch", "triton"):
        reranker = Reranker(str(path), device=device, dtype=torch.float32, backend=backend, max_length=max_length,
                            recipe=recipe)
        assert reranker.backends == {"attention": backend, "layer_norm": backend, "gelu": backend}
        scores[backend] = reranker.logits(reranker.encode(query, documents))
    np.testing.assert_allclose(scores["triton"], scores["torch"], rtol=1e-5, atol=1e-5)
