"""Ray Data: score a Dataset's (query, document) columns with sie, one model per actor.

    import ray
    from sie.integrations.ray import Scorer

    ds = ray.data.read_parquet("s3://bucket/pairs/")
    ds = ds.map_batches(Scorer, fn_constructor_kwargs={"model": "BAAI/bge-reranker-base", "dtype": "float16"},
                        batch_size=4096, batch_format="pyarrow", num_gpus=1,
                        compute=ray.data.ActorPoolStrategy(size=8))  # a cluster of 8 GPUs: one actor on each
    ds.write_parquet("s3://bucket/scores/")

Each actor loads the model once, in its constructor; every batch is then scored like ``Reranker.predict``
(its pairs packed into token-budget micro-batches), and comes back with a ``score`` column added. Batches may be
pyarrow, numpy (Ray's default) or pandas; pyarrow keeps a null text null, where Ray's numpy conversion of a
dictionary-encoded column gives it another row's text (pyarrow 26), which no check here can tell from real text.
Reranker scores only: encoding models (embeddings) are not supported yet.

Needs ``pip install 'sie[ray]'`` (``ray[data]``) on the driver and on every node of the cluster.
"""

from __future__ import annotations

from typing import Any

try:
    import ray.data  # noqa: F401  (imported here so that a missing Ray fails at import, with the fix)
except ImportError as error:
    raise ImportError(f"sie.integrations.ray needs Ray Data ({error}): pip install 'sie[ray]'") from error

import numpy as np
import pyarrow as pa
import torch

from sie.dtypes import resolve_dtype
from sie.errors import InvalidInputError
from sie.jobs.scoring import score_pairs, text_problem
from sie.reranker import Reranker


class Scorer:
    """A callable class for ``Dataset.map_batches``: adds ``score_column`` to every batch (or replaces it, in every
    batch form, where the batch has one already).

    Args:
        model: a model id or folder, as ``sie.Reranker`` takes it (default: sie's default model). On a cluster the
            model must be installed on every node (the sie models directory, the Hugging Face cache or a shared
            path), or reachable on the Hub.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``, ``"int8"`` (or a torch dtype); default the Reranker's
            (``sie.reranker.default_dtype``: fp16 on CUDA, bf16 on a CPU with native bf16, the default model in
            int8 where that mode is faster, else fp32).
        device: ``"auto"`` picks the GPU Ray gave the actor (``num_gpus=1``), else the CPU.
        query_column, document_column: the text columns; a row whose text is missing or not a string raises
            ``sie.InvalidInputError`` naming the column and the row within the batch.
        score_column: the column added, float32 ``(batch,)``.
        max_length, max_batch_tokens, backend, recipe: as ``sie.Reranker`` takes them (``recipe`` for a decoder
            reranker whose folder or Hub id does not name one).
    """

    def __init__(
        self, model: str | None = None, *, dtype: str | torch.dtype | None = None, device: str = "auto",
        query_column: str = "query", document_column: str = "document", score_column: str = "score",
        max_length: int | None = None, max_batch_tokens: int | None = None, backend: str = "auto",
        recipe: str | None = None,
    ) -> None:
        self.reranker = Reranker(model, device=device, dtype=resolve_dtype(dtype), backend=backend,
                                 max_length=max_length, max_batch_tokens=max_batch_tokens, recipe=recipe)
        self.query_column = query_column
        self.document_column = document_column
        self.score_column = score_column

    def __call__(self, batch: Any) -> Any:
        """``batch`` (a dict of numpy arrays, a pyarrow Table or a pandas DataFrame) with the score of each row
        added, in the same form."""
        if isinstance(batch, pa.Table):
            scores = self._scores(batch.column(self.query_column).to_pylist(),
                                  batch.column(self.document_column).to_pylist())
            column = pa.array(scores, pa.float32())
            index = batch.schema.get_field_index(self.score_column)
            if index >= 0:
                return batch.set_column(index, self.score_column, column)
            return batch.append_column(self.score_column, column)
        if isinstance(batch, dict):
            scores = self._scores(batch[self.query_column].tolist(), batch[self.document_column].tolist())
            return {**batch, self.score_column: scores}
        # A pandas DataFrame (pandas comes with ray[data]; sie does not import it).
        scores = self._scores(batch[self.query_column].tolist(), batch[self.document_column].tolist())
        return batch.assign(**{self.score_column: scores})

    def _scores(self, queries: list[Any], documents: list[Any]) -> np.ndarray:
        for column, values in ((self.query_column, queries), (self.document_column, documents)):
            for row, value in enumerate(values):
                problem = text_problem(value)
                if problem is not None:
                    raise InvalidInputError(f"row {row} of the batch, column {column!r}", problem)
        return score_pairs(self.reranker, queries, documents)
