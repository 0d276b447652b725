"""``sie score-file``: score every (query, document) row of a file, streaming, resumable and lossless.

The input (Parquet, JSONL or CSV) is read in chunks of ``chunk_rows`` rows; each chunk is scored with
``Reranker.predict`` (token-budget micro-batches) and written as a numbered part under ``OUTPUT.parts/``, whose
manifest lists the complete parts. Memory holds one chunk at a time whatever the file's size. When every part is
done they are joined, one at a time, into OUTPUT (Parquet or JSONL): the input's columns (or only ``id_columns``)
plus ``score``, in input order. A run killed at any point and started again with the same arguments goes on after
the last complete part; one started with other arguments is refused unless ``overwrite``. One run at a time writes
a given OUTPUT: a second one, while the first runs, is refused (``.OUTPUT.lock`` beside it holds the lock).

A row whose query or document is missing or not a string (or a line that is not a JSON object) fails the run
(``on_error="fail"``), or goes to the rejects file with its row number and the reason (``"skip"``): every input
row ends either scored in OUTPUT or listed in the rejects file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from sie.errors import InvalidInputError
from sie.jobs.formats import (
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    PART_FORMATS,
    Chunk,
    PartFormat,
    RecordRows,
    Reject,
    Rows,
    columns_of,
    concatenate,
    count_rows,
    file_format,
    is_text_type,
    read_chunks,
)
from sie.jobs.manifest import Manifest, Part, ResumeError, commit, differences, job_lock, write_atomically
from sie.jobs.scoring import DEFAULT_CHUNK_ROWS, score_pairs, text_problem
from sie.models.checkpoint import weight_files
from sie.reranker import Reranker

ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class ScoreFileOptions:
    """How ``score_file`` reads, scores and writes.

    id_columns: when given, OUTPUT holds only these columns and the score (not every input column).
    chunk_rows: input rows per part: what memory holds at once and what a killed run loses at most.
    rejects: where bad rows go with ``on_error="skip"``; default ``<OUTPUT without its extension>.rejects.jsonl``.
    keep_parts: keep ``OUTPUT.parts/`` after OUTPUT is written (a rerun then finds the job finished).
    """

    query_column: str = "query"
    document_column: str = "document"
    id_columns: tuple[str, ...] = ()
    score_column: str = "score"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    on_error: str = "fail"
    rejects: str | os.PathLike[str] | None = None
    overwrite: bool = False
    keep_parts: bool = False


@dataclass(frozen=True)
class ScoreFileResult:
    """What a finished job wrote: ``rows`` input rows, ``scored`` of them in ``output``, ``rejected`` in ``rejects``
    (None when there were none); ``resumed_rows`` were done by an earlier run; ``seconds`` is this run's time."""

    output: Path
    rejects: Path | None
    rows: int
    scored: int
    rejected: int
    resumed_rows: int
    seconds: float


class Progress(Protocol):
    """Told when scoring starts (``total_rows`` None when unknown before reading) and as each part completes."""

    def start(self, total_rows: int | None, done_rows: int) -> None: ...
    def part_done(self, part: Part, seconds: float) -> None: ...


@dataclass(frozen=True)
class _Paths:
    output: Path
    parts: Path
    rejects: Path

    @classmethod
    def beside(cls, output: Path, rejects: str | os.PathLike[str] | None) -> _Paths:
        return cls(output, output.with_name(output.name + ".parts"),
                   Path(rejects).resolve() if rejects is not None else output.with_name(output.stem + ".rejects.jsonl"))

    @property
    def lock(self) -> Path:
        return self.output.with_name(f".{self.output.name}.lock")

    @property
    def manifest(self) -> Path:
        return self.parts / "manifest.json"

    def part(self, index: int, suffix: str) -> Path:
        return self.parts / f"part-{index:05d}{suffix}"

    def rejects_part(self, index: int) -> Path:
        return self.parts / f"part-{index:05d}.rejects.jsonl"


def score_file(
    input: str | os.PathLike[str], output: str | os.PathLike[str], reranker: Reranker,
    options: ScoreFileOptions = ScoreFileOptions(), progress: Progress | None = None,
) -> ScoreFileResult:
    """Scores every row of ``input`` into ``output``, resuming the job a killed run left (see the module)."""
    began = time.perf_counter()
    input_path, output_path = Path(input).resolve(), Path(output).resolve()
    input_format, output_format = check_arguments(input_path, output_path, options)
    paths = _Paths.beside(output_path, options.rejects)
    paths.output.parent.mkdir(parents=True, exist_ok=True)
    with job_lock(paths.lock, str(paths.output)):
        manifest, resumed_rows = _run(input_path, input_format, output_format, reranker, paths, options, progress)
    rejected = sum(part.rejected for part in manifest.parts)
    return ScoreFileResult(paths.output, paths.rejects if rejected else None, manifest.next_row,
                           sum(part.scored for part in manifest.parts), rejected, resumed_rows,
                           time.perf_counter() - began)


def _run(
    input_path: Path, input_format: str, output_format: str, reranker: Reranker, paths: _Paths,
    options: ScoreFileOptions, progress: Progress | None,
) -> tuple[Manifest, int]:
    """The job under its lock: resumed or started, scored part by part, joined; its manifest and the rows an
    earlier run had done."""
    manifest = _open(paths, _fingerprint(input_path, output_format, reranker, options), options)
    resumed_rows = manifest.next_row
    parts = PART_FORMATS[output_format]

    if not (manifest.finished and paths.output.exists()):
        if progress is not None:
            progress.start(count_rows(input_path, input_format), resumed_rows)
        schema = None  # the parts' so far, where the output needs one (Parquet)
        for done in manifest.parts:
            schema = parts.unify(schema, paths.part(done.index, parts.suffix))
        for chunk in read_chunks(input_path, input_format, options.chunk_rows, start=manifest.next_row):
            started = time.perf_counter()
            part = _score_part(chunk, len(manifest.parts), reranker, parts, paths, input_path, options)
            schema = parts.unify(schema, paths.part(part.index, parts.suffix))
            manifest.parts.append(part)
            manifest.save(paths.manifest)
            if progress is not None:
                progress.part_done(part, time.perf_counter() - started)
        _finish(paths, manifest, parts, options.score_column)

    if not options.keep_parts:
        _remove_parts(paths)
    return manifest, resumed_rows


def check_arguments(input: Path, output: Path, options: ScoreFileOptions) -> tuple[str, str]:
    """The input's and the output's formats, once the arguments that need no model are checked (the CLI checks them
    before it loads one): extensions, the input's existence and columns, three distinct files (input, output,
    rejects), ``on_error`` and ``chunk_rows``."""
    input_format = file_format(input, INPUT_FORMATS, "input")
    output_format = file_format(output, OUTPUT_FORMATS, "output")
    if input.is_dir():  # a data set written as a folder of files (Spark's, Ray's): one job per file
        files = sorted(path.name for path in input.iterdir() if path.suffix.lower() in INPUT_FORMATS)
        raise InvalidInputError("input", f"{input} is a folder: name one file"
                                + (f" of it, such as {files[0]} ({len(files)} there)" if files else ""))
    if not input.is_file():
        raise InvalidInputError("input", f"{input}: no such file")
    # A job replaces OUTPUT and (with --overwrite) replaces or deletes the rejects file: either one naming the input
    # destroys it, and rejects written where OUTPUT goes are lost under it.
    rejects = _Paths.beside(output, options.rejects).rejects.resolve()
    for field, path, others in (("output", output, (("input", input),)),
                                ("rejects", rejects, (("input", input), ("output", output)))):
        for name, other in others:
            if path == other:
                raise InvalidInputError(field, f"{path} is the {name} file too: choose another file")
    _check_writable(output, "output")
    if options.on_error == "skip":
        _check_writable(rejects, "rejects")
    if options.on_error not in ON_ERROR:
        raise InvalidInputError("on_error", f"must be one of {', '.join(ON_ERROR)}, got {options.on_error!r}")
    if isinstance(options.chunk_rows, bool) or not isinstance(options.chunk_rows, int) or options.chunk_rows < 1:
        raise InvalidInputError("chunk_rows", f"must be a positive integer, got {options.chunk_rows!r}")
    if not options.score_column:
        raise InvalidInputError("score column", "must be a name, got an empty one")
    # A column written twice: Parquet refuses it once every row is scored, JSON keeps one of the two keys.
    repeated = next((name for name in options.id_columns if options.id_columns.count(name) > 1), None)
    if repeated is not None:
        raise InvalidInputError("id column", f"{repeated!r} is named twice: name each column once")
    _check_columns(input, input_format, options)
    return input_format, output_format


def resumable_job(output: Path, options: ScoreFileOptions) -> dict:
    """The fingerprint of the job that OUTPUT's parts folder holds, which a run goes on with unless ``overwrite``
    (empty when there is none): the CLI reads it before the model loads, so that a resume which names no dtype or
    token budget repeats the job's, not defaults that may have changed since it started."""
    manifest = None if options.overwrite else Manifest.load(_Paths.beside(output, options.rejects).manifest)
    return manifest.fingerprint if manifest is not None else {}


def _check_writable(path: Path, field: str) -> None:
    """Refuses a file ``path`` that could not be written: a folder, or one under a file or in a folder this process
    cannot write in; else that shows only once the model has loaded, as an error naming a lock file or a parent."""
    if path.is_dir():
        raise InvalidInputError(field, f"{path} is a folder: name a file")
    folder = next(parent for parent in path.parents if parent.exists())  # created when missing
    if not folder.is_dir():
        raise InvalidInputError(field, f"{path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(field, f"{path}: cannot write in {folder}")


def _score_part(
    chunk: Chunk, index: int, reranker: Reranker, parts: PartFormat, paths: _Paths, input_path: Path,
    options: ScoreFileOptions,
) -> Part:
    """Scores ``chunk`` into part ``index`` (and its bad rows into the part's rejects file), each file whole."""
    rows, queries, documents, rejects = _check_rows(chunk, input_path, options, paths.rejects)
    scores = score_pairs(reranker, queries, documents)
    temporary = paths.parts / "part.tmp"
    parts.write(temporary, rows.select(options.id_columns) if options.id_columns else rows, scores,
                options.score_column)
    commit(temporary, paths.part(index, parts.suffix))
    if rejects:
        lines = "".join(reject.to_json() + "\n" for reject in rejects).encode()
        write_atomically(paths.rejects_part(index), lambda stream: stream.write(lines))
    return Part(index, chunk.start, chunk.stop, len(rows), len(rejects))


def _check_columns(path: Path, fmt: str, options: ScoreFileOptions) -> None:
    """The named columns exist and hold text, and the score column is new; JSONL records are checked one by one."""
    columns = columns_of(path, fmt)
    if columns is None:
        return
    wanted = [("query", options.query_column), ("document", options.document_column),
              *(("id", name) for name in options.id_columns)]
    for role, name in wanted:
        if name not in columns:
            raise InvalidInputError(f"{role} column", f"{path} has no column {name!r}; it has {', '.join(columns)}")
    for role, name in wanted[:2]:
        if not is_text_type(columns[name]):
            raise InvalidInputError(f"{role} column", f"{path}: column {name!r} holds {columns[name]}, not text")
    if options.score_column in (options.id_columns or columns):
        raise InvalidInputError("score column", f"{path} already has a column {options.score_column!r}; "
                                "choose another name for the score (--score-column)")


def _fingerprint(input_path: Path, output_format: str, reranker: Reranker, options: ScoreFileOptions) -> dict:
    """Everything that decides the output's bytes: a resumed run must repeat it exactly. It is compared with the
    one a manifest read back from JSON holds, so it is made of what JSON gives back (lists, not tuples).

    ``on_error`` is left out so that a run stopped by a bad row can go on with ``skip``: the parts before the
    bad row hold no rejects, and are the same either way. The model's weight files count by size and time of
    change, as the input does: weights replaced in the same folder are another model.
    """
    stat = input_path.stat()
    fingerprint = {
        "input": str(input_path), "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "output_format": output_format, "model": reranker.model_id, "model_path": str(reranker.path),
        "model_files": {file.name: [file.stat().st_size, file.stat().st_mtime_ns]
                        for file in weight_files(Path(reranker.path))},
        "dtype": str(reranker.dtype).removeprefix("torch."), "device": reranker.device.type,
        "max_length": reranker.max_length, "max_batch_tokens": reranker.max_batch_tokens,
        "recipe": asdict(reranker.recipe) if reranker.recipe else None,
        "query_column": options.query_column, "document_column": options.document_column,
        "id_columns": list(options.id_columns), "score_column": options.score_column,
        "chunk_rows": options.chunk_rows,
    }
    return json.loads(json.dumps(fingerprint))


def _open(paths: _Paths, fingerprint: dict, options: ScoreFileOptions) -> Manifest:
    """The manifest to go on from: the job left in ``paths.parts`` when it has the same fingerprint, else a new one
    (only with ``overwrite`` when that would replace another job's parts or an existing output)."""
    manifest = Manifest.load(paths.manifest)
    if manifest is not None and manifest.fingerprint == fingerprint and not options.overwrite:
        if options.on_error == "skip" or not any(part.rejected for part in manifest.parts):
            return manifest
        raise ResumeError(f"{paths.parts} holds parts that set bad rows aside (--on-error skip); resume with "
                          "--on-error skip, or pass --overwrite to start over")
    if not options.overwrite:
        if manifest is not None:
            raise ResumeError(
                f"{paths.parts} holds a job started with other arguments "
                f"({'; '.join(differences(manifest.fingerprint, fingerprint))}): run it again with the same "
                f"arguments to resume it, or pass --overwrite to start over")
        # A manifest's temporary file alone: a run killed while writing its first manifest, which nothing lists.
        if paths.parts.exists() and any(path.suffix != ".tmp" for path in paths.parts.iterdir()):
            raise ResumeError(f"{paths.parts} exists without a sie manifest: remove it or choose another output")
        for existing in (paths.output, paths.rejects):
            if existing.exists():
                raise ResumeError(f"{existing} already exists: pass --overwrite to replace it")
    if paths.parts.exists():
        shutil.rmtree(paths.parts)
    paths.parts.mkdir(parents=True)
    manifest = Manifest(fingerprint)
    manifest.save(paths.manifest)
    return manifest


def _check_rows(
    chunk: Chunk, input_path: Path, options: ScoreFileOptions, rejects_path: Path
) -> tuple[Rows, list[str], list[str], list[Reject]]:
    """The chunk's scorable rows with their queries and documents, and its bad rows in row order.

    With ``on_error="fail"`` the first bad row raises InvalidInputError naming its row (and line) number.
    """
    queries = chunk.rows.column(options.query_column)
    documents = chunk.rows.column(options.document_column)
    # Parquet and CSV name their columns once (checked up front); a JSON record names its own.
    records = isinstance(chunk.rows, RecordRows)
    keep, rejects = [], list(chunk.rejects)
    for index, (query, document) in enumerate(zip(queries, documents, strict=True)):
        problems = [f"{column}: {problem}" for column, value in ((options.query_column, query),
                                                                 (options.document_column, document))
                    if (problem := text_problem(value)) is not None]
        if records:
            record = chunk.rows.record(index)
            problems += [f"{name}: missing (an id column the record does not have)"
                         for name in options.id_columns if name not in record]
            if not options.id_columns and options.score_column in record:
                problems.append(f"{options.score_column}: already present (choose another name with "
                                "--score-column)")
        if problems:
            line = chunk.lines[index] if chunk.lines is not None else None
            rejects.append(Reject(chunk.row_numbers[index], "; ".join(problems), line, chunk.rows.record(index)))
        else:
            keep.append(index)
    rejects.sort(key=lambda reject: reject.row)
    if rejects and options.on_error == "fail":
        first = rejects[0]
        where = f"{input_path.name}: row {first.row}" + (f" (line {first.line})" if first.line is not None else "")
        raise InvalidInputError(where, f"{first.error} (rows are numbered from 0; --on-error skip sets bad rows "
                                       f"aside in {rejects_path} and scores the others)")
    rows = chunk.rows if len(keep) == len(chunk.rows) else chunk.rows.take(keep)
    return rows, [queries[i] for i in keep], [documents[i] for i in keep], rejects


def _remove_parts(paths: _Paths) -> None:
    """Deletes OUTPUT.parts/ (files only), its manifest last: a run killed meanwhile still finds the finished job,
    not parts without a manifest, which it would refuse to touch."""
    for path in paths.parts.iterdir():
        if path != paths.manifest:
            path.unlink()
    paths.manifest.unlink(missing_ok=True)
    paths.parts.rmdir()


def _finish(paths: _Paths, manifest: Manifest, parts: PartFormat, score_column: str) -> None:
    """Joins the parts into OUTPUT and their rejects into the rejects file, each atomically, and marks the job
    finished. Run again after a kill, it writes the same files again."""
    rejected = [paths.rejects_part(part.index) for part in manifest.parts if part.rejected]
    if rejected:
        # Written beside itself: --rejects may name another file system, where a rename from the parts would fail.
        paths.rejects.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(paths.rejects, lambda stream: concatenate(rejected, stream))
    elif paths.rejects.exists():  # from an earlier job this one replaces (--overwrite)
        paths.rejects.unlink()
    temporary = paths.parts / "output.tmp"
    parts.combine([paths.part(part.index, parts.suffix) for part in manifest.parts], temporary, score_column)
    commit(temporary, paths.output)
    manifest.finished = True
    manifest.save(paths.manifest)
