"""The engine on the Triton kernels (through the interpreter) scores like the engine on the torch path."""

import numpy as np
import pytest
import torch

from sie import Reranker
from sie.testing import make_random_checkpoint
from sie.testing.words import random_text


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_triton_backend_scores_like_torch_backend(arch, tmp_path, device, rng):
    path = make_random_checkpoint(tmp_path / arch, arch, shape="tiny", max_position_embeddings=128)
    query = random_text(rng, 5)
    # One-token to truncated documents, so sequences end inside and at the edges of the kernels' blocks.
    documents = [random_text(rng, int(words)) for words in (0, 1, 9, 30, 200)]
    scores = {}
    for backend in ("torch", "triton"):
        reranker = Reranker(str(path), device=device, dtype=torch.float32, backend=backend, max_length=96)
        assert reranker.backends == {"attention": backend, "layer_norm": backend, "gelu": backend}
        scores[backend] = reranker.logits(reranker.encode(query, documents))
    np.testing.assert_allclose(scores["triton"], scores["torch"], rtol=1e-5, atol=1e-5)
