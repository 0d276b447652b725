"""The exceptions sie raises; the server maps each to a status and an error code (CONTRACT.md)."""

from __future__ import annotations


class SieError(Exception):
    """Base class of every error sie raises on purpose."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (empty for none): what sie quotes of another library's error."""
    return next(iter(str(error).strip().splitlines()), "")


class ModelNotFoundError(SieError, LookupError):
    """A model id or path resolved to no local folder; ``searched`` names every place looked at."""

    def __init__(self, model: str, searched: list[str]) -> None:
        self.model = model
        self.searched = list(searched)
        places = "\n".join(f"  - {place}" for place in self.searched)
        super().__init__(f"model {model!r} was not found; looked in:\n{places}")


class UnsupportedModelError(SieError, ValueError):
    """A checkpoint sie cannot run: an unknown architecture, or more than one output label."""


class BackendError(SieError, ValueError):
    """A kernel backend that does not exist, or cannot run on the device, dtype or head size asked for."""


class InvalidInputError(SieError, ValueError):
    """A caller's input is malformed; ``field`` is its path in the request, e.g. ``items[3].text``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class InputTooLongError(InvalidInputError):
    """A pair is longer than the model's limit and the caller asked for no truncation."""

    def __init__(self, field: str, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(field, f"input is {length} tokens, longer than the limit of {limit} (truncation disabled)")
