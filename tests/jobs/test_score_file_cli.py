"""``sie score-file`` as a user runs it: a real subprocess, killed with SIGKILL mid-way and started again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import torch

from sie import Reranker
from sie.jobs.score_file import ScoreFileOptions, score_file
from tests.jobs.files import pairs_table, write_input

SIE = [sys.executable, "-m", "sie.cli"]


def started_past_part(command: list[str], part: int, stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    """``command`` running, once its progress says part ``part`` is written (not a terminal: one line per part on
    stderr, so the test knows how far the run got); AssertionError when it ends before. SIGINT acts as in a
    terminal even where the tests run as a background job, which inherits it ignored."""
    child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in child.stderr:
        if line.startswith(f"part {part}:"):
            return child
    raise AssertionError(f"the run ended before part {part} (exit {child.wait()})")


def test_a_run_killed_mid_way_and_started_again_writes_what_an_uninterrupted_run_does(
    tiny_reranker, random_bert_path, rng, tmp_path
):
    source = write_input(tmp_path / "pairs.parquet", pairs_table(int(rng.integers(2**31)), 5000, max_words=20))
    output = tmp_path / "scores.parquet"
    command = [*SIE, "score-file", str(source), "--output", str(output), "--model", str(random_bert_path),
               "--device", "cpu", "--chunk-rows", "250"]
    kill_after = int(rng.integers(1, 12))
    child = started_past_part(command, kill_after)
    try:
        time.sleep(float(rng.uniform(0, 0.05)))  # anywhere in the next part: reading, scoring or writing it
        child.kill()
    finally:
        child.wait()
        child.stderr.close()

    manifest = json.loads((tmp_path / "scores.parquet.parts" / "manifest.json").read_text())
    done = len(manifest["parts"])
    assert kill_after < done < 20 and not output.exists(), f"killed after {done} of 20 parts"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"({done * 250:,} of them by an earlier run)" in resumed.stdout

    uninterrupted = score_file(source, tmp_path / "reference.parquet", tiny_reranker, ScoreFileOptions(chunk_rows=250))
    assert pq.read_table(output).equals(pq.read_table(uninterrupted.output)), "exactly one score per row, in order"
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(random_bert_path, rng, tmp_path):
    """The first run is paused (SIGSTOP) after its first part, so the second surely meets it running; once resumed,
    it finishes as if alone."""
    source = write_input(tmp_path / "pairs.parquet", pairs_table(int(rng.integers(2**31)), 1000, max_words=20))
    output = tmp_path / "scores.parquet"
    command = [*SIE, "score-file", str(source), "--output", str(output), "--model", str(random_bert_path),
               "--device", "cpu", "--chunk-rows", "250"]
    first = started_past_part(command, 1, stdout=subprocess.PIPE)
    try:
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
        stdout, _ = first.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"sie: another run is writing {output} (it holds {tmp_path / '.scores.parquet.lock'})" in second.stderr
    assert first.returncode == 0 and "scored 1,000 of 1,000 rows" in stdout
    assert pq.read_table(output).num_rows == 1000
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pairs.parquet", "scores.parquet"]


def test_a_bad_row_exits_non_zero_naming_it_without_a_traceback(random_bert_path, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text('{"query": "q", "document": "d"}\n{"query": "q", "document": 3}\n', encoding="utf-8")
    done = subprocess.run([*SIE, "score-file", str(source), "-o", str(tmp_path / "s.jsonl"), "-m",
                           str(random_bert_path), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "sie: pairs.jsonl: row 1 (line 2): document: must be a string, got int" in done.stderr
    assert "Traceback" not in done.stderr


def test_importing_sie_or_its_command_loads_neither_pyarrow_nor_ray():
    code = "import sys, sie, sie.cli; print(sorted(m for m in ('pyarrow', 'ray') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_arguments_that_need_no_model_are_checked_before_it_loads(tmp_path):
    source = write_input(tmp_path / "pairs.parquet", pairs_table(0, 3))
    done = subprocess.run([*SIE, "score-file", str(source), "-o", str(tmp_path / "s.txt"), "-m", "nobody/absent"],
                          capture_output=True, text=True, timeout=300, env={**os.environ,
                                                                            "SIE_MODELS_DIR": str(tmp_path)})
    assert done.returncode == 2 and "unknown extension '.txt'" in done.stderr, done.stderr


def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path):
    """It failed once the model had loaded, naming a parent or the lock file (`sie: [Errno 17] File exists:
    '.../notes.txt'`), or, for a folder, once every row was scored."""
    source = write_input(tmp_path / "pairs.parquet", pairs_table(0, 3))
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    (tmp_path / "folder.jsonl").mkdir()
    for flags, words in ((["-o", str(tmp_path / "notes.txt" / "s.jsonl")],
                          "output: .*notes.txt is a file, not a folder"),
                         (["-o", str(tmp_path / "folder.jsonl"), "--overwrite"], "output: .*folder.jsonl is a folder"),
                         (["-o", str(tmp_path / "s.jsonl"), "--on-error", "skip", "--rejects",
                           str(tmp_path / "notes.txt" / "r.jsonl")], "rejects: .*notes.txt is a file, not a folder")):
        done = subprocess.run([*SIE, "score-file", str(source), *flags, "-m", "nobody/absent"], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "SIE_MODELS_DIR": str(tmp_path)})
        assert done.returncode == 2 and re.search(words, done.stderr), done.stderr
        assert "nobody/absent" not in done.stderr, "the model was looked for first"


def test_a_resume_that_names_no_dtype_or_budget_goes_on_with_the_jobs(random_bert_path, tmp_path):
    """A job started in another dtype or token budget than today's defaults (the default model's default dtype
    became int8 on some CPUs, the CPU budget 2048) was refused on resume (`dtype: 'bfloat16' -> 'int8'`) unless the
    user named the job's own; a resume that names neither now goes on with the job's. One that names another is
    still refused."""
    records = pairs_table(0, 300, max_words=10).to_pylist()
    records[250]["document"] = None  # stops the first run after part 1
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    output = tmp_path / "scores.parquet"
    command = [*SIE, "score-file", str(source), "-o", str(output), "-m", str(random_bert_path), "--device", "cpu",
               "--chunk-rows", "100"]
    first = subprocess.run([*command, "--dtype", "float64", "--max-batch-tokens", "512"], capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 2 and "row 250" in first.stderr, first.stderr

    other = subprocess.run([*command, "--dtype", "float32", "--on-error", "skip"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and "dtype: 'float64' -> 'float32'" in other.stderr, other.stderr
    resumed = subprocess.run([*command, "--on-error", "skip"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(200 of them by an earlier run)" in resumed.stdout

    reranker = Reranker(random_bert_path, device="cpu", dtype=torch.float64, max_batch_tokens=512)
    reference = score_file(source, tmp_path / "reference.parquet", reranker,
                           ScoreFileOptions(chunk_rows=100, on_error="skip"))
    assert pq.read_table(output).equals(pq.read_table(reference.output))


def test_an_interrupted_overwrite_says_how_to_go_on_without_starting_over(random_bert_path, tmp_path):
    """Ctrl-C said 'the same command goes on after the last complete part'; with --overwrite the same command
    deletes the parts and starts over."""
    source = write_input(tmp_path / "pairs.parquet", pairs_table(0, 1000, max_words=20))
    command = [*SIE, "score-file", str(source), "--output", str(tmp_path / "scores.parquet"), "--model",
               str(random_bert_path), "--device", "cpu", "--chunk-rows", "100"]
    child = started_past_part([*command, "--overwrite"], 1)
    try:
        child.send_signal(signal.SIGINT)
        stderr = child.stderr.read()
    finally:
        child.wait()
        child.stderr.close()
    assert child.returncode == 130, stderr
    assert "interrupted; the same command without --overwrite goes on after the last complete part" in stderr
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and "of them by an earlier run" in resumed.stdout, resumed.stderr[-3000:]
