"""Test and benchmark support, shared by ``tests/`` and ``benchmarks/`` (neither imports the other).

- ``checkpoints``: random checkpoints of real architectures with their tokenizers, no download needed.
- ``references``: float64 kernel references and tolerances; transformers' padded forward.
- ``words``: the word list, random text and random (query, document) pairs.
- ``server``: ``sie serve`` as a child process on a free port, and a small HTTP client for it.
"""

from sie.testing.checkpoints import SHAPES, Shape, make_random_checkpoint
from sie.testing.references import padded_logits
from sie.testing.words import WORDS, random_pairs, random_text

__all__ = ["SHAPES", "WORDS", "Shape", "make_random_checkpoint", "padded_logits", "random_pairs", "random_text"]
