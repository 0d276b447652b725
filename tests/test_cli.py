"""The ``sie`` command, run as a user would: a real subprocess of the installed entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SIE = [sys.executable, "-m", "sie.cli"]


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SIE, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_rerank_prints_a_ranked_table_from_stdin(default_model_path):
    documents = "Snakes are reptiles.\nPython is a programming language.\n\nPython was created by Guido van Rossum.\n"
    result = run("rerank", "--query", "What is Python?", "--top-k", "2", "-", stdin=documents)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["rank", "score", "line", "text"]
    assert len(rows) == 2
    assert "Snakes" not in result.stdout, "the snake sentence ranks last and top-k 2 drops it"
    assert rows[0].split()[0] == "0"


def test_rerank_reads_a_file(default_model_path, tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text("Paris is the capital of France.\nBananas are yellow.\n", encoding="utf-8")
    result = run("rerank", "-q", "capital of France", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[2] == "1", "line 1 (Paris) ranks first"


def test_rerank_numbers_lines_as_typed_and_reads_crlf_and_a_bom_as_plain_text(random_bert_path):
    # Blank lines count; CRLF endings and a byte-order mark are no part of a document.
    documents = "\ufeff\r\n\r\nfirst document\r\n\r\nsecond document\r\n".encode()
    result = subprocess.run([*SIE, "rerank", "-q", "q", "--model", str(random_bert_path), "--device", "cpu", "-"],
                            input=documents, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {int(line.split()[2]): line.split(maxsplit=3)[3] for line in result.stdout.decode().splitlines()[1:]}
    assert rows == {3: "first document", 5: "second document"}


@pytest.mark.parametrize(("args", "words"), [
    (["missing.txt"], "No such file or directory"),
    (["not-utf8.txt"], "not-utf8.txt: is not UTF-8 text"),
    (["--device", "toaster", "-"], "device: 'toaster' is not a device"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(random_bert_path, tmp_path, args, words):
    (tmp_path / "not-utf8.txt").write_bytes(b"caf\xe9\n")
    result = subprocess.run([*SIE, "rerank", "-q", "q", "--model", str(random_bert_path), *args], input="doc\n",
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_models_list_shows_the_models_directory(default_model_path):
    result = run("models", "list")
    assert result.returncode == 0, result.stderr
    assert "cross-encoder/ms-marco-MiniLM-L-12-v2  (default)" in result.stdout


def test_an_unknown_model_fails_with_the_places_looked_at(tmp_path):
    result = run("rerank", "-q", "x", "-m", "nobody/absent", "-", stdin="doc\n", env={"SIE_MODELS_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "nobody/absent" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr, "a user error must not print a traceback"


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["kernels", "--help"], ["serve", "--help"]])
def test_help_works(args):
    assert run(*args).returncode == 0


def test_python_m_sie_is_the_sie_command():
    result = subprocess.run([sys.executable, "-m", "sie", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("sie "), result.stderr


def test_rerank_with_a_decoder_recipe_and_an_instruction(tmp_path: Path):
    from sie.testing import make_random_checkpoint

    path = make_random_checkpoint(tmp_path / "tiny-qwen3", "qwen3", shape="tiny-gqa", seed=11)
    documents = "python is a programming language\nsnakes are reptiles\n"
    scores = {}
    for instruction in (None, "Find documents about snakes"):
        extra = () if instruction is None else ("--instruction", instruction)
        result = run("rerank", "-q", "what is python", "--model", str(path), "--recipe", "qwen3-reranker",
                     "--raw-scores", *extra, "-", stdin=documents)
        assert result.returncode == 0, result.stderr
        rows = [line.split() for line in result.stdout.strip().splitlines()[1:]]
        scores[instruction] = {int(row[2]): float(row[1]) for row in rows}
    assert sorted(scores[None]) == [1, 2]
    assert scores[None] != scores["Find documents about snakes"], "the instruction did not reach the recipe"
    refused = run("rerank", "-q", "what is python", "--model", str(path), "-", stdin=documents)
    assert refused.returncode == 2 and "recipe" in refused.stderr


def test_kernels_build_builds_or_loads_them(sie_cpu_ops):
    """Where they run (CI), the command exits 0 and names the folder torch keeps them in."""
    from sie.kernels.cpu_extension import extensions_dir

    result = subprocess.run([sys.executable, "-m", "sie.cli", "kernels", "build"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"sie's C++ CPU kernels are built, in {extensions_dir()}" in result.stdout
    assert any(Path(extensions_dir()).rglob("sie_cpu_kernels_*/*.so"))


def test_rerank_into_a_reader_that_stops_early_exits_quietly(random_bert_path):
    """`sie rerank ... | head`: the pipe closing is no error to report ("sie: [Errno 32] Broken pipe", exit 2)."""
    documents = "".join(f"document {number} {'word ' * 150}\n" for number in range(400))  # rows past a pipe's buffer
    with subprocess.Popen([*SIE, "rerank", "-q", "q", "--model", str(random_bert_path), "--device", "cpu",
                           "--width", "800", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        process.stdin.write(documents)
        process.stdin.close()
        assert process.stdout.readline().split() == ["rank", "score", "line", "text"]
        process.stdout.close()  # as head does after its lines
        stderr = process.stderr.read()
        assert process.wait(timeout=300) == 141, stderr  # 128 + SIGPIPE, as a shell reports `yes | head`
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr


def test_dtype_and_device_are_spelled_as_sie_serve_reads_them():
    """score-file and rerank took only exact names where `sie serve` also takes torch's spelling and any case."""
    from sie.cli import build_parser

    args = build_parser().parse_args(["score-file", "in.parquet", "-o", "out.parquet", "--dtype", "torch.bfloat16",
                                      "--device", " CPU"])
    assert (args.dtype, args.device) == ("bfloat16", "cpu")
    assert build_parser().parse_args(["rerank", "-q", "q", "--device", "Cuda:1", "-"]).device == "cuda:1"
