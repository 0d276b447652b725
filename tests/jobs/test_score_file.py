"""``score_file`` in process: scores equal predict's in input order for every format, bad rows are reported and
set aside or fatal, a job resumes only with the arguments it was started with, and memory stays flat."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sie.errors import InvalidInputError
from sie.jobs.manifest import JobBusyError, ResumeError, job_lock
from sie.jobs.score_file import ScoreFileOptions, score_file
from tests.jobs.files import pairs_table, predict_by_chunks, read_output, write_input


@pytest.mark.parametrize("source, target", [("parquet", "parquet"), ("jsonl", "jsonl"), ("csv", "jsonl")])
def test_5000_pairs_score_as_predict_does_in_input_order(tiny_reranker, seed, tmp_path, source, target):
    table = pairs_table(seed, 5000)
    written = write_input(tmp_path / f"pairs.{source}", table)
    options = ScoreFileOptions(chunk_rows=2048)
    result = score_file(written, tmp_path / f"scores.{target}", tiny_reranker, options)

    out = read_output(result.output)
    assert (result.rows, result.scored, result.rejected, result.rejects) == (5000, 5000, 0, None)
    assert out.column_names == ["id", "query", "document", "score"]
    # Every input value comes back unchanged, in input order (CSV keeps its text: the id as written).
    ids = table.column("id").to_pylist()
    assert out.column("id").to_pylist() == ([str(i) for i in ids] if source == "csv" else ids)
    for name in ("query", "document"):
        assert out.column(name).to_pylist() == table.column(name).to_pylist()
    queries, documents = table.column("query").to_pylist(), table.column("document").to_pylist()
    expected = predict_by_chunks(tiny_reranker, queries, documents, options.chunk_rows)
    scores = np.asarray(out.column("score").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(scores, expected, err_msg="the same pairs in the same call score bit for bit alike")
    if source == "parquet":
        assert out.schema.field("score").type == pa.float32()
        whole = tiny_reranker.predict(list(zip(queries, documents, strict=True)))
        np.testing.assert_allclose(scores, whole, rtol=0, atol=1e-6,
                                   err_msg="another batch composition changes only the float rounding")
    assert not (tmp_path / f"scores.{target}.parts").exists(), "the parts are removed once the output is whole"


def _with_bad_rows(rng: np.random.Generator, rows: int) -> tuple[list[str], dict[int, str]]:
    """JSONL lines of ``rows`` rows, some of them bad: {row number: the start of the error it must get}."""
    records = pairs_table(int(rng.integers(2**31)), rows).to_pylist()
    lines = [json.dumps(record) for record in records]
    bad_rows = rng.choice(rows, size=5, replace=False)
    breakages = [
        ("document: must be a string, got int", lambda r: {**r, "document": 7}),
        ("query: is missing", lambda r: {k: v for k, v in r.items() if k != "query"}),
        ("document: is missing", lambda r: {**r, "document": None}),
        ("is not valid JSON", None),
        ("is not a JSON object, got list", None),
    ]
    expected = {}
    for row, (error, break_record) in zip(bad_rows.tolist(), breakages, strict=True):
        if break_record is not None:
            lines[row] = json.dumps(break_record(records[row]))
        else:
            lines[row] = "{not json" if error.startswith("is not valid") else json.dumps([1, 2])
        expected[row] = error
    return lines, expected


def test_bad_rows_are_set_aside_with_their_row_and_line(tiny_reranker, rng, tmp_path):
    lines, bad = _with_bad_rows(rng, 300)
    # A blank line is no row: the rows after it keep their numbers and their real line numbers.
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n", encoding="utf-8")
    result = score_file(path, tmp_path / "scores.jsonl", tiny_reranker,
                        ScoreFileOptions(chunk_rows=128, on_error="skip"))

    assert (result.rows, result.scored, result.rejected) == (300, 295, 5)
    rejects = [json.loads(line) for line in result.rejects.read_text(encoding="utf-8").splitlines()]
    assert [reject["row"] for reject in rejects] == sorted(bad)
    for reject in rejects:
        assert reject["error"].startswith(bad[reject["row"]]), reject
        assert reject["line"] == reject["row"] + 1 + (reject["row"] >= 10)
    out = read_output(result.output)
    good = [row for row in range(300) if row not in bad]
    assert out.column("id").to_pylist() == good
    scores = np.asarray(out.column("score").to_pylist(), dtype=np.float32)
    for start in range(0, 300, 128):  # the good rows of each chunk were scored together
        in_chunk = [i for i, row in enumerate(good) if start <= row < start + 128]
        pairs = [(out.column("query")[i].as_py(), out.column("document")[i].as_py()) for i in in_chunk]
        np.testing.assert_array_equal(scores[in_chunk], tiny_reranker.predict(pairs))


def test_a_bad_row_fails_the_run_by_default_naming_its_row(tiny_reranker, rng, tmp_path):
    lines, bad = _with_bad_rows(rng, 300)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = min(bad)
    with pytest.raises(InvalidInputError, match=rf"row {first} \(line {first + 1}\)") as raised:
        score_file(path, tmp_path / "scores.parquet", tiny_reranker, ScoreFileOptions(chunk_rows=128))
    assert bad[first] in str(raised.value) and "--on-error skip" in str(raised.value)
    assert not (tmp_path / "scores.parquet").exists()


def test_parquet_nulls_and_csv_rows_of_the_wrong_width_are_bad_rows(tiny_reranker, seed, tmp_path):
    table = pairs_table(seed, 50)
    documents = table.column("document").to_pylist()
    documents[7] = None
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(table.set_column(2, "document", pa.array(documents, pa.string())), parquet)
    result = score_file(parquet, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(on_error="skip"))
    (reject,) = [json.loads(line) for line in result.rejects.read_text().splitlines()]
    assert reject == {"row": 7, "error": "document: is missing or null",
                      "record": {"id": 7, "query": table.column("query")[7].as_py(), "document": None}}
    with pytest.raises(InvalidInputError, match="row 7: document: is missing"):
        score_file(parquet, tmp_path / "b.parquet", tiny_reranker)

    # A quoted field may span lines: a row's line number is the line it starts on.
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text('id,query,document\n0,q,"two\nlines"\n1,q,d,extra\n2,q,d\n', encoding="utf-8")
    result = score_file(csv_path, tmp_path / "c.jsonl", tiny_reranker, ScoreFileOptions(on_error="skip"))
    (reject,) = [json.loads(line) for line in result.rejects.read_text().splitlines()]
    assert reject == {"row": 1, "line": 4, "error": "has 4 fields where the header has 3",
                      "record": ["1", "q", "d", "extra"]}
    assert read_output(result.output).column("id").to_pylist() == ["0", "2"]


def test_wrong_columns_are_refused_before_any_work(tiny_reranker, seed, tmp_path):
    path = write_input(tmp_path / "pairs.parquet", pairs_table(seed, 10))
    with pytest.raises(InvalidInputError, match="has no column 'text'; it has id, query, document"):
        score_file(path, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(document_column="text"))
    with pytest.raises(InvalidInputError, match="column 'id' holds int64, not text"):
        score_file(path, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(query_column="id"))
    with pytest.raises(InvalidInputError, match="already has a column 'query'"):
        score_file(path, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(score_column="query"))
    with pytest.raises(InvalidInputError, match="unknown extension '.txt'"):
        score_file(path, tmp_path / "a.txt", tiny_reranker)
    with pytest.raises(InvalidInputError, match="id column: 'id' is named twice"):  # Parquet failed after scoring
        score_file(path, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(id_columns=("id", "query", "id")))
    with pytest.raises(InvalidInputError, match="score column: must be a name"):  # a column named "" was written
        score_file(path, tmp_path / "a.parquet", tiny_reranker, ScoreFileOptions(score_column=""))
    assert not list(tmp_path.glob("a.*"))


def test_id_columns_alone_are_written_with_the_score(tiny_reranker, seed, tmp_path):
    table = pairs_table(seed, 20)
    path = write_input(tmp_path / "pairs.jsonl", table)
    result = score_file(path, tmp_path / "scores.parquet", tiny_reranker, ScoreFileOptions(id_columns=("id",)))
    out = read_output(result.output)
    assert out.column_names == ["id", "score"] and out.column("id").to_pylist() == list(range(20))


def test_jsonl_records_of_differing_keys_become_one_parquet_schema(tiny_reranker, tmp_path):
    # A key that only a later chunk has, and a column null throughout the first chunk.
    records = [{"query": "q", "document": f"d{i}", "tag": None} for i in range(4)]
    records += [{"query": "q", "document": "d4", "tag": "x", "extra": 1.5}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    out = read_output(score_file(path, tmp_path / "s.parquet", tiny_reranker, ScoreFileOptions(chunk_rows=2)).output)
    assert out.column_names == ["query", "document", "tag", "extra", "score"]
    assert out.column("tag").to_pylist() == [None] * 4 + ["x"]
    assert out.column("extra").to_pylist() == [None] * 4 + [1.5]


def test_a_job_resumes_only_with_its_own_arguments(tiny_reranker, seed, tmp_path):
    path = write_input(tmp_path / "pairs.parquet", pairs_table(seed, 300))
    output = tmp_path / "scores.parquet"
    options = ScoreFileOptions(chunk_rows=100, keep_parts=True)
    assert score_file(path, output, tiny_reranker, options).resumed_rows == 0
    again = score_file(path, output, tiny_reranker, options)
    assert (again.resumed_rows, again.scored) == (300, 300), "a finished job with its parts kept is not redone"

    with pytest.raises(ResumeError, match=r"other arguments \(chunk_rows: 100 -> 150\).*--overwrite"):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=150))
    redone = score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=150, overwrite=True))
    assert redone.resumed_rows == 0 and read_output(output).num_rows == 300
    assert not (tmp_path / "scores.parquet.parts").exists()

    with pytest.raises(ResumeError, match="scores.parquet already exists: pass --overwrite"):
        score_file(path, output, tiny_reranker, options)


def test_a_text_that_is_not_utf8_is_a_bad_row_like_any_other(tiny_reranker, tmp_path):
    """A JSON escape of half an emoji ("\\ud83d") is valid JSON and no UTF-8 text: the run stopped on it with a
    bare TypeError, and with ``skip`` it was not set aside. Now it fails the run naming the row, or goes to the
    rejects file as the input spelled it while the other rows are scored."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "document": "fine"}\n{"query": "q", "document": "cut emoji \\ud83d"}\n'
                    '{"query": "q", "document": "also fine"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="row 1 \\(line 2\\): document: is not valid UTF-8 text"):
        score_file(path, tmp_path / "scores.jsonl", tiny_reranker)
    result = score_file(path, tmp_path / "scores.jsonl", tiny_reranker,
                        ScoreFileOptions(on_error="skip", overwrite=True))
    assert (result.scored, result.rejected) == (2, 1)
    assert read_output(result.output).column("document").to_pylist() == ["fine", "also fine"]
    (reject,) = result.rejects.read_text(encoding="utf-8").splitlines()
    assert '"record": {"query": "q", "document": "cut emoji \\ud83d"}' in reject


def test_a_job_another_run_holds_is_refused_and_a_dead_runs_lock_file_is_not(tiny_reranker, seed, tmp_path):
    path = write_input(tmp_path / "pairs.parquet", pairs_table(seed, 100))
    output = tmp_path / "scores.parquet"
    lock = tmp_path / ".scores.parquet.lock"
    with job_lock(lock, "the other run's job"):  # held through another open file, as another process holds it
        with pytest.raises(JobBusyError, match=f"another run is writing {output} "):
            score_file(path, output, tiny_reranker)
    assert not output.exists() and not (tmp_path / "scores.parquet.parts").exists()
    lock.touch()  # a killed run's file: the kernel released its lock with the process
    assert score_file(path, output, tiny_reranker).scored == 100
    assert not lock.exists()


def test_a_job_stopped_by_a_bad_row_goes_on_with_skip(tiny_reranker, rng, tmp_path):
    lines, bad = _with_bad_rows(rng, 300)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "scores.jsonl"
    with pytest.raises(InvalidInputError):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=32))
    result = score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=32, on_error="skip", keep_parts=True))
    assert result.resumed_rows == min(bad) // 32 * 32
    assert (result.scored, result.rejected) == (295, 5)
    # Back to failing on bad rows: the parts that set rows aside are not taken over, except by starting over.
    with pytest.raises(ResumeError, match="set bad rows aside"):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=32))
    with pytest.raises(InvalidInputError, match=f"row {min(bad)} "):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=32, overwrite=True))


CHILD = """
import json, os, sys, threading, time
import pyarrow as pa
from sie import Reranker
from sie.jobs.score_file import ScoreFileOptions, score_file

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

peak = 0
def sample():
    global peak
    while True:
        peak = max(peak, rss())
        time.sleep(0.002)

reranker = Reranker(sys.argv[1], device="cpu")
options = ScoreFileOptions(chunk_rows=int(sys.argv[2]))
threading.Thread(target=sample, daemon=True).start()
peaks = {}
for name in ("warm-up", "ten-chunks"):
    peak = rss()
    score_file(f"{sys.argv[3]}/{name}.parquet", f"{sys.argv[3]}/{name}-scores.parquet", reranker, options)
    peaks[name] = {"rss": peak, "arrow": pa.default_memory_pool().max_memory()}
print(json.dumps(peaks))
"""


def test_memory_stays_flat_on_a_file_ten_chunks_long(random_bert_path, rng, tmp_path):
    chunk_rows, payload_bytes = 1000, 16_000
    for name, chunks in (("warm-up", 3), ("ten-chunks", 10)):
        table = pairs_table(int(rng.integers(2**31)), chunk_rows * chunks, max_words=8)
        # Incompressible bytes that are carried, not scored: holding the file at once would show.
        payload = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(payload_bytes), table.num_rows, [None, pa.py_buffer(rng.bytes(table.num_rows * payload_bytes))])
        # Pages of about 1 MB, as most writers make them (pyarrow's default closes a page every 1024 rows).
        pq.write_table(table.append_column("payload", payload), tmp_path / f"{name}.parquet", write_batch_size=64)
    done = subprocess.run([sys.executable, "-c", CHILD, str(random_bert_path), str(chunk_rows), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    peaks = json.loads(done.stdout)
    chunk_mb = chunk_rows * payload_bytes / 1e6
    arrow_growth = (peaks["ten-chunks"]["arrow"] - peaks["warm-up"]["arrow"]) / 1e6
    rss_growth = (peaks["ten-chunks"]["rss"] - peaks["warm-up"]["rss"]) / 1e6
    # A run holds the chunk being scored, the next one being read and the part being written: the three-chunk
    # warm-up reaches that peak. Holding the file would add 7 more chunks (112 MB) to both measures.
    assert arrow_growth < 0.5 * chunk_mb, f"Arrow's peak allocation grew {arrow_growth:.1f} MB ({chunk_mb} MB chunks)"
    # RSS also counts what the allocators keep after freeing, which varies from run to run (up to 2.5 chunks seen).
    assert rss_growth < 5 * chunk_mb, f"peak RSS grew {rss_growth:.1f} MB ({chunk_mb:.0f} MB chunks)"
    assert pq.read_metadata(tmp_path / "ten-chunks-scores.parquet").num_rows == chunk_rows * 10


def test_overwrite_starts_over_and_weights_replaced_in_place_are_another_model(random_bert_path, seed, tmp_path):
    import shutil

    from sie import Reranker
    from sie.testing import make_random_checkpoint

    model = shutil.copytree(random_bert_path, tmp_path / "model")
    path = write_input(tmp_path / "pairs.parquet", pairs_table(seed, 60))
    output = tmp_path / "scores.parquet"
    options = ScoreFileOptions(chunk_rows=20, keep_parts=True)
    score_file(path, output, Reranker(str(model), device="cpu"), options)
    redone = score_file(path, output, Reranker(str(model), device="cpu"), ScoreFileOptions(
        chunk_rows=20, keep_parts=True, overwrite=True))
    assert redone.resumed_rows == 0, "--overwrite starts over, even where the job could resume"

    other = make_random_checkpoint(tmp_path / "other", "bert", seed=99)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    with pytest.raises(ResumeError, match="model_files"):
        score_file(path, output, Reranker(str(model), device="cpu"), options)


def test_a_decoder_reranker_job_resumes(tmp_path, seed):
    from sie import Reranker
    from sie.testing import make_random_checkpoint

    model = make_random_checkpoint(tmp_path / "qwen3", "qwen3", shape="tiny-gqa", seed=5)
    reranker = Reranker(str(model), device="cpu", recipe="qwen3-reranker")
    path = write_input(tmp_path / "pairs.jsonl", pairs_table(seed, 30))
    options = ScoreFileOptions(chunk_rows=10, keep_parts=True)
    score_file(path, tmp_path / "scores.jsonl", reranker, options)
    # The recipe's tuples come back from the manifest's JSON as lists: the job is still the same.
    assert score_file(path, tmp_path / "scores.jsonl", reranker, options).resumed_rows == 30


def test_csv_bytes_that_are_not_utf8_are_bad_rows_and_a_broken_quote_fails_naming_its_line(tiny_reranker, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"query,document\nq0,fine\nq1,caf\xe9\nq2,also fine\n")
    result = score_file(path, tmp_path / "a.jsonl", tiny_reranker, ScoreFileOptions(on_error="skip"))
    (reject,) = [json.loads(line) for line in result.rejects.read_text().splitlines()]
    assert reject == {"row": 1, "line": 3, "error": "is not valid UTF-8", "record": ["q1", "caf\ufffd"]}
    assert read_output(result.output).column("query").to_pylist() == ["q0", "q2"]

    path.write_bytes(b"query,caf\xe9\nq0,d\n")
    with pytest.raises(InvalidInputError, match="header is not valid UTF-8"):
        score_file(path, tmp_path / "b.jsonl", tiny_reranker)

    # Without the strict reader the quote swallowed the rows after it, silently.
    path.write_text('query,document\nq0,d0\nq1,"never closed\nq2,d2\nq3,d3\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="line 5: not valid CSV"):
        score_file(path, tmp_path / "c.jsonl", tiny_reranker)


def test_json_values_parquet_cannot_hold_ask_for_jsonl_output(tiny_reranker, tmp_path):
    path = tmp_path / "pairs.jsonl"
    for extra in ({"meta": {}}, {"big": 2**64}):
        path.write_text(json.dumps({"query": "q", "document": "d", **extra}) + "\n", encoding="utf-8")
        with pytest.raises(InvalidInputError, match="write JSONL output"):
            score_file(path, tmp_path / "s.parquet", tiny_reranker, ScoreFileOptions(overwrite=True))


def test_a_jsonl_record_without_an_id_column_is_a_bad_row(tiny_reranker, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"qid": 1, "query": "q", "document": "d"}\n{"id": 2, "query": "q", "document": "d"}\n',
                    encoding="utf-8")
    result = score_file(path, tmp_path / "s.jsonl", tiny_reranker, ScoreFileOptions(id_columns=("qid",),
                                                                                      on_error="skip"))
    (reject,) = [json.loads(line) for line in result.rejects.read_text().splitlines()]
    assert reject["row"] == 1 and reject["error"] == "qid: missing (an id column the record does not have)"
    assert read_output(result.output).to_pylist()[0]["qid"] == 1


@pytest.mark.parametrize("name", ["pairs.parquet", "pairs.csv"])
def test_an_input_without_rows_gives_an_output_with_its_columns(tiny_reranker, tmp_path, name):
    path = write_input(tmp_path / name, pairs_table(0, 0))
    result = score_file(path, tmp_path / "s.parquet", tiny_reranker)
    out = read_output(result.output)
    assert out.num_rows == 0 and out.column_names == ["id", "query", "document", "score"]


def test_a_parts_folder_holding_only_a_manifest_being_written_is_taken_over(tiny_reranker, seed, tmp_path):
    path = write_input(tmp_path / "pairs.parquet", pairs_table(seed, 10))
    parts = tmp_path / "s.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json.tmp").write_text('{"version": 1, "fing')  # killed while writing the first manifest
    assert read_output(score_file(path, tmp_path / "s.parquet", tiny_reranker).output).num_rows == 10


def test_floats_json_has_no_words_for_become_null_in_jsonl_output(tiny_reranker, tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"query": ["q"] * 3, "document": ["a", "b", "c"],
                             "weight": [float("nan"), float("inf"), 0.5], "tags": [[float("-inf")], [], [1.0]]}), path)
    lines = score_file(path, tmp_path / "s.jsonl", tiny_reranker).output.read_text().splitlines()
    records = [json.loads(line, parse_constant=lambda word: pytest.fail(f"{word} is not JSON")) for line in lines]
    assert [r["weight"] for r in records] == [None, None, 0.5] and [r["tags"] for r in records] == [[None], [], [1.0]]


def test_a_parquet_file_with_repeated_columns_or_cut_short_is_refused_naming_it(tiny_reranker, seed, tmp_path):
    table = pairs_table(seed, 4)
    repeated = tmp_path / "repeated.parquet"
    pq.write_table(pa.Table.from_arrays([*table.columns, table.column("id")], names=[*table.column_names, "id"]),
                   repeated)
    with pytest.raises(InvalidInputError, match="repeats column.*id"):
        score_file(repeated, tmp_path / "a.parquet", tiny_reranker)
    whole = write_input(tmp_path / "whole.parquet", table)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        score_file(cut, tmp_path / "b.parquet", tiny_reranker)


def test_an_output_or_rejects_file_naming_the_input_or_output_is_refused_before_any_work(tiny_reranker, seed,
                                                                                          tmp_path):
    """--overwrite replaced the input with the output, or deleted it as an earlier run's rejects file; rejects
    written where OUTPUT goes were lost under it."""
    path = write_input(tmp_path / "pairs.jsonl", pairs_table(seed, 10))
    before = path.read_bytes()
    for output, rejects, words in ((path, None, "output: .*pairs.jsonl is the input file too"),
                                   (tmp_path / "scores.jsonl", path, "rejects: .*pairs.jsonl is the input file too"),
                                   (tmp_path / "scores.jsonl", tmp_path / "scores.jsonl",
                                    "rejects: .*scores.jsonl is the output file too")):
        with pytest.raises(InvalidInputError, match=words):
            score_file(path, output, tiny_reranker, ScoreFileOptions(on_error="skip", rejects=rejects, overwrite=True))
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]


def test_an_input_folder_is_refused_as_a_folder_not_as_missing(tiny_reranker, seed, tmp_path):
    """A Parquet data set written as a folder (Spark's, Ray's `pairs.parquet/`) was refused as 'no such file'."""
    folder = tmp_path / "pairs.parquet"
    folder.mkdir()
    write_input(folder / "part-0.parquet", pairs_table(seed, 10))
    with pytest.raises(InvalidInputError, match=r"pairs.parquet is a folder: name one file .*part-0.parquet"):
        score_file(folder, tmp_path / "scores.parquet", tiny_reranker)
    with pytest.raises(InvalidInputError, match="absent.parquet: no such file"):
        score_file(tmp_path / "absent.parquet", tmp_path / "scores.parquet", tiny_reranker)


def test_json_types_no_parquet_column_holds_fail_at_the_part_that_brings_them(tiny_reranker, tmp_path):
    """An id that is a number in one chunk and text in a later one failed only once every row was scored, when
    the parts were joined: hours of scoring for a file whose output must be JSONL anyway. Now the part that brings
    the second type stops the run, in a resumed run too (against the parts of the run before)."""
    path = tmp_path / "pairs.jsonl"
    output = tmp_path / "s.parquet"
    parts = tmp_path / "s.parquet.parts"

    def write(ids, bad_row=None):
        path.write_text("".join(json.dumps({"id": i, "query": "q", "document": 7 if row == bad_row else "d"}) + "\n"
                                for row, i in enumerate(ids)), encoding="utf-8")

    write([1, "b", 3, 4, 5, 6])
    with pytest.raises(InvalidInputError, match="Field id has incompatible types: int64 vs string.*write JSONL"):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=1))
    assert len(json.loads((parts / "manifest.json").read_text())["parts"]) == 1
    assert not (parts / "part-00002.parquet").exists(), "the run went on past the part that brought the conflict"

    write([1, 2, 3, "d", 5, 6], bad_row=2)  # stops at row 2 with parts 0 and 1, then goes on with skip
    with pytest.raises(InvalidInputError, match="row 2"):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=1, overwrite=True))
    with pytest.raises(InvalidInputError, match="Field id has incompatible types: int64 vs string"):
        score_file(path, output, tiny_reranker, ScoreFileOptions(chunk_rows=1, on_error="skip"))
    assert len(json.loads((parts / "manifest.json").read_text())["parts"]) == 3
    assert not (parts / "part-00004.parquet").exists(), "the resumed run went on past the conflict"


def test_a_rejects_file_may_be_named_by_a_string(tiny_reranker, tmp_path):
    """ScoreFileOptions(rejects="bad.jsonl") failed with AttributeError: 'str' object has no attribute 'resolve'."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "document": "d"}\n{"query": "q", "document": null}\n', encoding="utf-8")
    result = score_file(path, tmp_path / "s.jsonl", tiny_reranker,
                        ScoreFileOptions(on_error="skip", rejects=str(tmp_path / "bad.jsonl")))
    assert (result.scored, result.rejected, result.rejects) == (1, 1, tmp_path / "bad.jsonl")
