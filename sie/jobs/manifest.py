"""The manifest of a resumable job: what it was started with and which parts are complete.

Every file the job keeps is written under a temporary name, flushed to disk and renamed over its final name, so a
process killed at any instant (SIGKILL, power loss) leaves each file either whole or absent. A part is complete
once the manifest lists it; a part file the manifest does not list (killed between the two renames) is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sie.errors import SieError

FORMAT_VERSION = 1


class ResumeError(SieError):
    """A job's leftovers (parts, output) that a new run must not silently take over or overwrite."""


class JobBusyError(ResumeError):
    """Another run, in this process or another, is writing the same job."""


@contextlib.contextmanager
def job_lock(path: Path, job: str) -> Iterator[None]:
    """Holds an exclusive lock on the file ``path`` (created for it, removed after) while the block runs, so that
    two runs never write one job's files at once; JobBusyError, naming ``job``, when another run holds it.

    The lock is the kernel's (``flock``): it goes with the process that held it, so a killed run leaves a file
    that the next run takes over, never a stale lock."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise JobBusyError(f"another run is writing {job} (it holds {path}): wait for it to finish, or choose "
                               "another output") from None
        # The run before this one removes the file as it ends: locked after that, this is an orphan; start over.
        try:
            current = os.path.samestat(os.fstat(descriptor), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)


def commit(temporary: Path, final: Path) -> None:
    """Flushes ``temporary`` to disk and renames it to ``final`` atomically (then flushes the rename)."""
    with open(temporary, "rb+") as stream:
        os.fsync(stream.fileno())
    os.replace(temporary, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` through ``write(stream)`` so that it is whole or absent, never partial."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as stream:
        write(stream)
    commit(temporary, path)


@dataclass(frozen=True)
class Part:
    """Part ``index`` holds the scores of input rows ``[start, stop)``: ``scored`` rows, and ``rejected`` bad rows
    in its rejects file."""

    index: int
    start: int
    stop: int
    scored: int
    rejected: int


@dataclass
class Manifest:
    """``fingerprint``: the arguments that decide the scores, which a resumed run must repeat exactly;
    ``parts``: the complete parts in input order; ``finished``: the output file has been written."""

    fingerprint: dict[str, Any]
    parts: list[Part] = field(default_factory=list)
    finished: bool = False

    @property
    def next_row(self) -> int:
        """The first input row no complete part holds."""
        return self.parts[-1].stop if self.parts else 0

    def save(self, path: Path) -> None:
        body = {"version": FORMAT_VERSION, "fingerprint": self.fingerprint,
                "parts": [asdict(part) for part in self.parts], "finished": self.finished}
        write_atomically(path, lambda stream: stream.write(json.dumps(body, indent=1).encode()))

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, or None when there is none."""
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        if body.get("version") != FORMAT_VERSION:
            raise ResumeError(f"{path}: manifest version {body.get('version')!r}, expected {FORMAT_VERSION}")
        return cls(body["fingerprint"], [Part(**part) for part in body["parts"]], body["finished"])


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name: recorded -> current"`` for each fingerprint entry that changed."""
    return [f"{name}: {recorded.get(name)!r} -> {current.get(name)!r}"
            for name in sorted(recorded.keys() | current.keys()) if recorded.get(name) != current.get(name)]
