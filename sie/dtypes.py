"""The dtypes sie runs models in, by the names the command line, the server's settings and the Python API take."""

from __future__ import annotations

import torch

from sie.errors import InvalidInputError

# ``int8`` is the int8 mode (CPU): int8 linear layers, the rest in fp32 (``sie.quantization``). float64 runs too
# (the parity tests' reference precision), slowly.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8,
          "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``dtype`` as a torch dtype: one of ``DTYPES`` by name (``"bfloat16"``, or ``"torch.bfloat16"`` as
    ``str(torch.bfloat16)`` spells it) or as itself; None stays None (the engine's default). Anything else raises
    InvalidInputError (field ``dtype``) naming the dtypes that run."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        resolved = DTYPES.get(dtype.strip().removeprefix("torch."))
    else:
        resolved = dtype if dtype in DTYPES.values() else None
    if resolved is None:
        raise InvalidInputError("dtype", f"must be one of {', '.join(DTYPES)} (a name or a torch dtype), not "
                                         f"{dtype!r:.80}")
    return resolved
