"""The model registry: the families sie runs, looked up by the ``architectures`` name in a checkpoint's config.

Adding an architecture is a new file under ``sie/models/`` that defines its ``FAMILY``, plus one line below.
"""

from __future__ import annotations

from typing import Any

from sie.errors import UnsupportedModelError
from sie.models import bert, qwen2, qwen3, xlm_roberta
from sie.models.family import ModelFamily

FAMILIES: tuple[ModelFamily, ...] = (
    bert.FAMILY,
    xlm_roberta.FAMILY,
    qwen2.CAUSAL_LM,
    qwen2.CLASSIFIER,
    qwen3.CAUSAL_LM,
    qwen3.CLASSIFIER,
)

_BY_ARCHITECTURE = {architecture: family for family in FAMILIES for architecture in family.architectures}


def supported_architectures() -> list[str]:
    """Every ``config.architectures`` name some family runs, sorted."""
    return sorted(_BY_ARCHITECTURE)


def family_of(config: Any) -> ModelFamily:
    """The family that runs ``config`` (a transformers config), after its ``check_config``.

    Raises UnsupportedModelError naming the supported architectures, or the family's reason to refuse.
    """
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        family = _BY_ARCHITECTURE.get(name)
        if family is not None:
            family.check_config(config)
            return family
    raise UnsupportedModelError(f"architecture {names or config.model_type!r} is not supported; "
                                f"sie runs {', '.join(supported_architectures())}")
