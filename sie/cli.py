"""The ``sie`` command: rerank documents from a file, manage models, build the CPU kernels, serve the score API."""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from sie.errors import InvalidInputError, SieError
from sie.reranker import DEFAULT_MODEL


def _read_documents(source: str) -> tuple[list[str], list[int]]:
    """The non-blank lines of ``source`` (a file, or ``-`` for stdin) and their line numbers, as typed: without a
    byte-order mark or CRLF endings, which decoder recipes would read as text."""
    binary = sys.stdin.buffer if source == "-" else open(source, "rb")
    documents, lines = [], []
    with io.TextIOWrapper(binary, encoding="utf-8-sig", newline=None) as stream:
        try:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    documents.append(line.rstrip("\n"))
                    lines.append(number)
        except UnicodeDecodeError as error:
            raise InvalidInputError(source, f"is not UTF-8 text ({error.reason})") from None
    return documents, lines


def _rerank(args: argparse.Namespace) -> int:
    from sie.api import load

    documents, lines = _read_documents(args.file)
    reranker = load(args.model, device=args.device, recipe=args.recipe)
    results = reranker.rerank(args.query, documents, top_k=args.top_k, raw_scores=args.raw_scores,
                              instruction=args.instruction)
    width = max(20, args.width - 24)
    print(f"{'rank':>4}  {'score':>8}  {'line':>5}  text")
    for result in results:
        text = textwrap.shorten(documents[result["index"]], width=width, placeholder="...")
        print(f"{result['rank']:>4}  {result['score']:>8.4f}  {lines[result['index']]:>5}  {text}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from sie.hub import local_models, models_dir

    print(f"models directory: {models_dir()}")
    models = local_models()
    for model in models:
        print(f"  {model}{'  (default)' if model == DEFAULT_MODEL else ''}")
    if DEFAULT_MODEL not in models:
        print(f"  the default model {DEFAULT_MODEL} is not installed: run `sie models fetch-default`")
    return 0


def _models_fetch_default(args: argparse.Namespace) -> int:
    from sie.hub.default_model import fetch_default_model

    print(fetch_default_model(force=args.force))
    return 0


def _kernels_build(args: argparse.Namespace) -> int:
    from sie.kernels.cpu_extension import cpu_can_run_kernels, cpu_extension, extensions_dir

    if cpu_extension() is None:
        why = ("could not be built here (the warning above says why)" if cpu_can_run_kernels()
               else "cannot run here: they need an x86 CPU with AVX512-BF16")
        print(f"sie's C++ CPU kernels {why}; PyTorch's ops will run instead")
        return 1
    print(f"sie's C++ CPU kernels are built, in {extensions_dir()}")
    return 0


def _score_file(args: argparse.Namespace) -> int:
    from sie.jobs.progress import progress_for
    from sie.jobs.score_file import ScoreFileOptions, check_arguments, resumable_job, score_file
    from sie.dtypes import resolve_dtype
    from sie.reranker import Reranker, resolve_device

    options = ScoreFileOptions(
        query_column=args.query_column, document_column=args.document_column, id_columns=tuple(args.id_column),
        score_column=args.score_column, chunk_rows=args.chunk_rows, on_error=args.on_error, rejects=args.rejects,
        overwrite=args.overwrite, keep_parts=args.keep_parts,
    )
    check_arguments(Path(args.input).resolve(), Path(args.output).resolve(), options)  # before the model loads
    dtype, max_batch_tokens = resolve_dtype(args.dtype), args.max_batch_tokens
    # A resume goes on in the job's dtype and token budget where it names none (the defaults may have changed since
    # the job started), on the job's device type only: another device is refused as another job.
    job = resumable_job(Path(args.output).resolve(), options)
    if job and job["device"] == resolve_device(args.device, dtype or resolve_dtype(job["dtype"])).type:
        dtype = dtype or resolve_dtype(job["dtype"])
        max_batch_tokens = job["max_batch_tokens"] if max_batch_tokens is None else max_batch_tokens
    reranker = Reranker(args.model, device=args.device, dtype=dtype, max_batch_tokens=max_batch_tokens,
                        recipe=args.recipe)
    try:
        with progress_for(sys.stderr) as progress:
            result = score_file(args.input, args.output, reranker, options, progress)
    except KeyboardInterrupt:
        # Not with --overwrite, which would delete the parts and start over.
        same = "the same command without --overwrite" if args.overwrite else "the same command"
        print(f"sie: interrupted; {same} goes on after the last complete part", file=sys.stderr)
        return 130
    resumed = f" ({result.resumed_rows:,} of them by an earlier run)" if result.resumed_rows else ""
    print(f"scored {result.scored:,} of {result.rows:,} rows{resumed} into {result.output} in {result.seconds:.1f} s")
    if result.rejects is not None:
        print(f"{result.rejected:,} bad rows set aside in {result.rejects}")
    return 0


def _dtype_name(value: str) -> str:
    """A dtype as ``sie serve --dtype`` reads it: ``bfloat16``, or ``torch.bfloat16`` as torch prints it."""
    return value.strip().removeprefix("torch.")


def _device_name(value: str) -> str:
    """A device as ``sie serve --device`` reads it: any case (``CPU``), spaces dropped."""
    return value.strip().lower()


def build_parser() -> argparse.ArgumentParser:
    from sie.dtypes import DTYPES
    from sie.jobs.scoring import DEFAULT_CHUNK_ROWS
    from sie.server.launch import add_serve_arguments, run_serve
    from sie.version import __version__

    parser = argparse.ArgumentParser(prog="sie", description="Unpadded cross-encoder reranking.")
    parser.add_argument("--version", action="version", version=f"sie {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    rerank = commands.add_parser("rerank", help="rank the lines of FILE (or stdin) by relevance to a query")
    rerank.add_argument("--query", "-q", required=True)
    rerank.add_argument("--model", "-m", default=None, help=f"model id or folder (default {DEFAULT_MODEL})")
    rerank.add_argument("--top-k", "-k", type=int, default=None)
    rerank.add_argument("--raw-scores", action="store_true", help="print logits instead of sigmoid scores")
    rerank.add_argument("--device", type=_device_name, default="auto")
    rerank.add_argument("--instruction", default=None,
                        help="the task's instruction: a decoder reranker's prompt takes it (its recipe's default "
                             "when left out); a cross-encoder reads '{instruction} {query}' as the query")
    rerank.add_argument("--recipe", default=None,
                        help="a decoder reranker's prompt recipe, when neither its folder nor its Hub id names one")
    rerank.add_argument("--width", type=int, default=100, help="table width in characters")
    rerank.add_argument("file", help="one document per line; - for stdin")
    rerank.set_defaults(run=_rerank)

    score = commands.add_parser(
        "score-file", help="score every (query, document) row of a Parquet, JSONL or CSV file, resumably",
        description="Writes the input's columns plus a score column to OUTPUT (.parquet or .jsonl), in input order, "
                    "streaming. Parts go to OUTPUT.parts/ as they complete: a killed run started again with the "
                    "same arguments goes on where it stopped.")
    score.add_argument("input", help="a .parquet, .jsonl (.ndjson) or .csv file")
    score.add_argument("--output", "-o", required=True, help="a .parquet or .jsonl file")
    score.add_argument("--model", "-m", default=None, help=f"model id or folder (default {DEFAULT_MODEL})")
    score.add_argument("--query-column", default="query")
    score.add_argument("--document-column", default="document")
    score.add_argument("--id-column", action="append", default=[], metavar="COLUMN",
                       help="write only this column (repeatable) and the score, instead of every input column")
    score.add_argument("--score-column", default="score", help="name of the new column (default score)")
    score.add_argument("--dtype", type=_dtype_name, choices=DTYPES, default=None,
                       help="default float16 on CUDA, bfloat16 on a CPU with native bf16 (the default model int8 "
                            "where that is faster), else float32")
    score.add_argument("--device", type=_device_name, default="auto", help="auto, cpu, cuda, cuda:N")
    score.add_argument("--max-batch-tokens", type=int, default=None, help="token budget of one packed batch")
    score.add_argument("--recipe", default=None,
                       help="a decoder reranker's prompt recipe (qwen3-reranker, mxbai-rerank-v2 or a recipe file) "
                            "when neither its folder nor its Hub id names one")
    score.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                       help="rows per part: what memory holds and the most a killed run redoes "
                            f"(default {DEFAULT_CHUNK_ROWS})")
    score.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                       help="a row without a text query and document: fail the run (default), or skip it into the "
                            "rejects file")
    score.add_argument("--rejects", type=Path, default=None,
                       help="where skipped rows go (default OUTPUT's name with .rejects.jsonl)")
    score.add_argument("--overwrite", action="store_true",
                       help="replace an existing OUTPUT, or parts left by a run with other arguments")
    score.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ once OUTPUT is written")
    score.set_defaults(run=_score_file)

    models = commands.add_parser("models", help="list or fetch models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    model_commands.add_parser("list", help="models in the sie models directory").set_defaults(run=_models_list)
    fetch = model_commands.add_parser("fetch-default", help=f"download and convert {DEFAULT_MODEL}")
    fetch.add_argument("--force", action="store_true", help="fetch and convert again even when present")
    fetch.set_defaults(run=_models_fetch_default)

    kernels = commands.add_parser("kernels", help="build sie's C++ CPU kernels ahead of their first use")
    kernel_commands = kernels.add_subparsers(dest="kernels_command", required=True)
    kernel_commands.add_parser(
        "build", help="compile them into torch's extension cache now (7-20 s, once per machine and torch version), "
                      "e.g. in a container image, instead of when a model first loads; exits 1 where they cannot run"
    ).set_defaults(run=_kernels_build)

    serve = commands.add_parser("serve", help="serve the score API with gunicorn")
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of stdout left early (`sie rerank ... | head`): not an error to report. Point stdout at
        # /dev/null so that the interpreter's last flush does not raise it again, and exit as SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (SieError, OSError) as error:  # OSError: a file that is missing, unreadable or not a folder
        print(f"sie: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
