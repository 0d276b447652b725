"""The ``sie`` command: rerank documents from a file, manage models, serve the score API."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Sequence

from sie.errors import SieError
from sie.reranker import DEFAULT_MODEL


def _read_documents(source: str) -> list[str]:
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")
    with stream:
        return [line.rstrip("\n") for line in stream if line.strip()]


def _rerank(args: argparse.Namespace) -> int:
    from sie.api import load

    documents = _read_documents(args.file)
    reranker = load(args.model, device=args.device)
    results = reranker.rerank(args.query, documents, top_k=args.top_k, raw_scores=args.raw_scores)
    width = max(20, args.width - 24)
    print(f"{'rank':>4}  {'score':>8}  {'line':>5}  text")
    for result in results:
        text = textwrap.shorten(documents[result["index"]], width=width, placeholder="...")
        print(f"{result['rank']:>4}  {result['score']:>8.4f}  {result['index'] + 1:>5}  {text}")
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


def build_parser() -> argparse.ArgumentParser:
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
    rerank.add_argument("--device", default="auto")
    rerank.add_argument("--width", type=int, default=100, help="table width in characters")
    rerank.add_argument("file", help="one document per line; - for stdin")
    rerank.set_defaults(run=_rerank)

    models = commands.add_parser("models", help="list or fetch models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    model_commands.add_parser("list", help="models in the sie models directory").set_defaults(run=_models_list)
    fetch = model_commands.add_parser("fetch-default", help=f"download and convert {DEFAULT_MODEL}")
    fetch.add_argument("--force", action="store_true", help="fetch and convert again even when present")
    fetch.set_defaults(run=_models_fetch_default)

    serve = commands.add_parser("serve", help="serve the score API with gunicorn")
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except SieError as error:
        print(f"sie: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
