"""The environment variables the kernels obey, each read here and nowhere else.

``SIE_BACKEND`` names the backend ``"auto"`` stands for (``SIE_ATTENTION_BACKEND`` is its deprecated name);
``TRITON_INTERPRET=1`` runs Triton kernels on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import os
import warnings

ENV_BACKEND = "SIE_BACKEND"
DEPRECATED_ENV_BACKEND = "SIE_ATTENTION_BACKEND"


def requested_backend() -> str | None:
    """The backend ``"auto"`` stands for: ``$SIE_BACKEND``, else the deprecated ``$SIE_ATTENTION_BACKEND``
    (with a FutureWarning), else None."""
    value = os.environ.get(ENV_BACKEND, "").strip().lower()
    if value:
        return value
    deprecated = os.environ.get(DEPRECATED_ENV_BACKEND, "").strip().lower()
    if deprecated:
        warnings.warn(f"{DEPRECATED_ENV_BACKEND} is deprecated: set {ENV_BACKEND}={deprecated} instead",
                      FutureWarning, stacklevel=3)
        return deprecated
    return None


def triton_interpreted() -> bool:
    """Whether Triton runs through its interpreter: ``TRITON_INTERPRET`` true as Triton reads it (1, true, on, yes,
    y; any case). Triton reads the flag when ``@triton.jit`` functions are defined, so it must be set before sie's
    Triton modules are imported (tests set it in conftest.py)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes", "y")
