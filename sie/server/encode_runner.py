"""An Encoder behind a model's batcher (``EncodeRunner``), loaded for the server, and what ``/v1/models`` says about
it. The endpoints are ``encode_routes``.

A batch computes the outputs that the requests admitted at that moment want: dense-only traffic runs the last
layer for CLS rows alone and no token-level head, whatever other clients asked before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from sie.encoder import Encoder
from sie.server.errors import ModelNotServedError, ServerError
from sie.tokenization import EncodedPairs


class NoEncoderError(ModelNotServedError):
    """An endpoint that names no model (TEI's ``/embed``) found no configured model that encodes (404)."""

    def __init__(self, available: list[str]) -> None:
        ServerError.__init__(self, "no model on this server encodes; configure an embedding model "
                                   f"(sie serve --model ...); available: {', '.join(available) or 'none'}")
        self.model = None
        self.available = available


class EncodeRunner:
    """An Encoder as a batcher's ``run``: a packed batch of inputs -> their raw outputs.

    Each request holds ``wanting(output_types)`` from before it is submitted until its outputs are back, so every
    batch that holds it computes what it asked for; a batch computes the union over the requests waiting then.
    """

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self._wanted: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def wanting(self, output_types: Collection[str]) -> Iterator[None]:
        with self._lock:
            self._wanted.update(output_types)
        try:
            yield
        finally:
            with self._lock:
                self._wanted.subtract(output_types)

    def run(self, encoded: EncodedPairs) -> np.ndarray:
        """Raw outputs of every input, an object array ``(num_inputs,)`` of dicts (``Encoder.run``'s), in order."""
        with self._lock:
            wanted = {kind for kind, count in self._wanted.items() if count > 0} or {"dense"}
        outputs = np.empty(encoded.num_pairs, dtype=object)
        for index, raw in enumerate(self.encoder.run(encoded, wanted)):
            outputs[index] = raw
        return outputs


def describe_encoder(encoder: Encoder) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a loaded embedding model."""
    return {"outputs": list(encoder.output_types), "dims": dict(encoder.dimensions),
            "max_sequence_length": encoder.max_length, "architecture": encoder.architecture,
            "pooling": list(encoder.settings.pooling), "normalize": encoder.settings.normalize,
            "prompts": sorted(encoder.settings.prompts), "device": str(encoder.device),
            "dtype": str(encoder.dtype).removeprefix("torch."), "backends": encoder.backends,
            "max_batch_tokens": encoder.max_batch_tokens}


def served_encoder(name: str, device: str, dtype: Any, backend: str, max_batch_tokens: int | None) -> EncodeRunner:
    """``name`` loaded as an Encoder and warmed up (the first batch pays for lazy initialisation)."""
    encoder = Encoder(name, device=device, dtype=dtype, backend=backend, max_batch_tokens=max_batch_tokens)
    runner = EncodeRunner(encoder)
    runner.run(encoder.tokenize(["warm up"]))
    return runner
