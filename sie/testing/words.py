"""Random natural-looking text for tests and benchmarks, and the word list the random checkpoints' tokenizers know."""

from __future__ import annotations

import numpy as np

WORDS = (
    "the a of and to in is was for on that with as by at from it an be are this or which python snake "
    "language program code data model search query document rank score learn machine deep neural network "
    "weather rain sun city river music history science water energy health food travel book film game "
    "sport market price year time people world life work study system paris london capital created guido "
    "van rossum reptiles what who where when how why café naïve 東京 😀 résumé"
).split()


def random_text(rng: np.random.Generator, num_words: int) -> str:
    """``num_words`` words drawn from a mixed English/unicode vocabulary."""
    return " ".join(rng.choice(WORDS, size=num_words))


def random_pairs(seed: int, document_words) -> list[tuple[str, str]]:
    """One pair per entry of ``document_words`` (document lengths in words), in random order, each with its own
    query of 1-11 words."""
    rng = np.random.default_rng(seed)
    return [(random_text(rng, int(rng.integers(1, 12))), random_text(rng, int(words)))
            for words in rng.permutation(np.asarray(document_words))]
