"""``sie.integrations.ray.Scorer``: every batch format, bad rows, and a real Ray Data job on a local Ray instance.

Ray is an optional dependency (``sie[ray]``): without it these tests skip, except in CI
(``SIE_REQUIRE_RAY_TEST=1``), where they fail. The message for a missing Ray is tested either way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from sie import Reranker
from sie.errors import InvalidInputError
from sie.testing import random_pairs


def _ray_or_skip():
    try:
        import ray.data  # noqa: F401
    except ImportError as error:
        reason = f"Ray Data is not installed ({error}): pip install 'sie[ray]'"
        if os.environ.get("SIE_REQUIRE_RAY_TEST") == "1":
            pytest.fail(f"{reason} (SIE_REQUIRE_RAY_TEST=1 makes this a failure)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def scorer(random_bert_path):
    _ray_or_skip()
    from sie.integrations.ray import Scorer

    return Scorer(str(random_bert_path), dtype="float32", device="cpu")


def _pairs_table(seed: int, rows: int) -> pa.Table:
    pairs = random_pairs(seed, np.random.default_rng(seed).integers(0, 40, size=rows))
    return pa.table({"id": np.arange(rows), "query": [query for query, _ in pairs],
                     "document": [document for _, document in pairs]})


def _in_form(table: pa.Table, batch_format: str):
    """``table`` as Ray Data hands a batch of ``batch_format`` to ``map_batches``."""
    if batch_format == "numpy":
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return table if batch_format == "pyarrow" else table.to_pandas()


@pytest.mark.parametrize("batch_format", ["numpy", "pyarrow", "pandas"])
def test_every_batch_format_gets_predicts_scores_in_its_own_form(scorer, seed, batch_format):
    table = _pairs_table(seed, 64)
    pairs = list(zip(table.column("query").to_pylist(), table.column("document").to_pylist(), strict=True))
    expected = scorer.reranker.predict(pairs)
    batch = _in_form(table, batch_format)
    scored = scorer(batch)
    assert type(scored) is type(batch)
    scores = scored["score"].to_numpy() if batch_format == "pyarrow" else np.asarray(scored["score"])
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(scores, expected)
    ids = scored["id"].to_pylist() if batch_format == "pyarrow" else list(scored["id"])
    assert ids == list(range(64))


@pytest.mark.parametrize("batch_format", ["numpy", "pyarrow", "pandas"])
def test_a_score_column_already_there_is_replaced_in_every_batch_form(scorer, seed, batch_format):
    table = _pairs_table(seed, 8).append_column("score", pa.array(np.zeros(8, np.float32)))
    batch = _in_form(table, batch_format)
    scored = scorer(batch)
    columns = scored.column_names if batch_format == "pyarrow" else list(scored.keys())
    assert columns == ["id", "query", "document", "score"]
    pairs = list(zip(table.column("query").to_pylist(), table.column("document").to_pylist(), strict=True))
    np.testing.assert_array_equal(np.asarray(scored["score"]), scorer.reranker.predict(pairs))


def test_a_bad_row_raises_naming_its_column_and_row(scorer):
    batch = {"query": np.array(["q", "q"], dtype=object), "document": np.array(["d", None], dtype=object)}
    with pytest.raises(InvalidInputError, match=r"row 1 of the batch, column 'document': is missing"):
        scorer(batch)


def test_columns_are_configurable(random_bert_path):
    _ray_or_skip()
    from sie.integrations.ray import Scorer

    scorer = Scorer(str(random_bert_path), device="cpu", query_column="q", document_column="d", score_column="s")
    scored = scorer(pa.table({"q": ["what is python"], "d": ["python is a language"]}))
    assert scored.column_names == ["q", "d", "s"]
    assert scored["s"][0].as_py() == pytest.approx(float(scorer.reranker.predict([("what is python",
                                                                                   "python is a language")])[0]))


def test_map_batches_with_two_actors_scores_like_predict(random_bert_path, seed, tmp_path):
    _ray_or_skip()
    import ray

    from sie.integrations.ray import Scorer

    table = _pairs_table(seed, 2000)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        # Eight blocks, so that both actors get batches.
        dataset = ray.data.from_arrow([table.slice(start, 250) for start in range(0, 2000, 250)])
        scored = dataset.map_batches(
            Scorer, fn_constructor_kwargs={"model": str(random_bert_path), "dtype": "float32", "device": "cpu"},
            batch_size=250, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
        ).take_all()
    finally:
        ray.shutdown()

    assert sorted(row["id"] for row in scored) == list(range(2000)), "every row once"
    by_id = sorted(scored, key=lambda row: row["id"])
    assert [row["document"] for row in by_id] == table["document"].to_pylist()
    pairs = list(zip(table.column("query").to_pylist(), table.column("document").to_pylist(), strict=True))
    expected = Reranker(random_bert_path, device="cpu", dtype=torch.float32).predict(pairs)
    np.testing.assert_allclose([row["score"] for row in by_id], expected, rtol=0, atol=1e-6,
                               err_msg="other batches change only the float rounding")


def test_without_ray_the_import_names_the_extra_to_install():
    code = "import sys; sys.modules['ray'] = None; import sie.integrations.ray"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ImportError: sie.integrations.ray needs Ray Data" in done.stderr
    assert "pip install 'sie[ray]'" in done.stderr
