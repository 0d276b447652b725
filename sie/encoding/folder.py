"""What a sentence-transformers model folder says about turning hidden states into embeddings.

``modules.json`` lists the modules (Transformer, Pooling, Normalize: the ones sie runs); ``1_Pooling/config.json``
the pooling modes (the legacy ``pooling_mode_*`` flags or the newer ``pooling_mode``); ``sentence_bert_config.json``
the length limit and lower-casing; ``config_sentence_transformers.json`` the query and document prompts. A folder
without ``modules.json`` is read as sentence-transformers reads a plain transformers checkpoint (mean pooling, no
normalisation), except a bge-m3-shaped one (``sparse_linear.pt`` and ``colbert_linear.pt`` beside it), which
FlagEmbedding reads with CLS pooling and normalisation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sie.errors import UnsupportedModelError

logger = logging.getLogger(__name__)

# Pooling modes in the order sentence-transformers concatenates them, by their names in both config formats.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
# sentence-transformers' encode_document looks for these prompt names, in this order.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


@dataclass(frozen=True)
class EmbedderConfig:
    """How an embedding model's hidden states become its dense vector, and the prompts around its inputs.

    Attributes:
        pooling: pooling modes, concatenated in this order (``POOLING_MODES``).
        normalize: whether the dense vector is L2-normalised (a Normalize module).
        prompts: prompt name -> text put before an input (``{"query": "query: "}``).
        default_prompt_name: the prompt used when the caller names none.
        max_seq_length: sentence-transformers' length limit, when the folder sets one.
        lowercase: whether inputs are lower-cased before tokenization (``do_lower_case``).
        truncate_dim: the width ``encode`` cuts dense vectors to by default (Matryoshka), when the folder sets one.
    """

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_seq_length: int | None = None
    lowercase: bool = False
    truncate_dim: int | None = None

    def prompt(self, is_query: bool | None) -> str | None:
        """The prompt for a query (``is_query``), a document (``is_query=False``), or neither (None: the default
        prompt), as sentence-transformers' ``encode_query``, ``encode_document`` and ``encode`` choose it."""
        if is_query is None:
            return self.prompts.get(self.default_prompt_name) if self.default_prompt_name else None
        if is_query:
            return self.prompts.get("query")
        return next((self.prompts[name] for name in DOCUMENT_PROMPT_NAMES if name in self.prompts), None)


def _json(path: Path) -> dict[str, Any] | list[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise UnsupportedModelError(f"{path.name} is not valid JSON: {error}") from None


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    modes = config.get("pooling_mode")
    if modes is None:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)) or ("mean",)
    elif isinstance(modes, str):
        modes = (modes,)
    unsupported = [mode for mode in modes if mode not in POOLING_MODES]
    if unsupported:
        raise UnsupportedModelError(f"pooling mode(s) {', '.join(map(str, unsupported))} are not supported; sie pools "
                                    f"by {', '.join(POOLING_MODES)}")
    if config.get("include_prompt", True) is False:
        raise UnsupportedModelError("pooling that leaves the prompt out (include_prompt: false) is not supported")
    return tuple(modes)


def read_embedder_config(folder: Path, m3_heads: bool = False) -> EmbedderConfig:
    """The EmbedderConfig of ``folder``; raises UnsupportedModelError for a module or pooling sie does not run."""
    folder = Path(folder)
    prompts_file = folder / "config_sentence_transformers.json"
    st_config = _json(prompts_file) if prompts_file.is_file() else {}
    # An empty prompt ({"passage": ""}) is a prompt still: sentence-transformers and TEI accept its name.
    prompts = {str(name): str(text) for name, text in (st_config.get("prompts") or {}).items() if text is not None}
    default_prompt_name = st_config.get("default_prompt_name") or None
    bert_file = folder / "sentence_bert_config.json"
    bert_config = _json(bert_file) if bert_file.is_file() else {}
    common = dict(prompts=prompts, default_prompt_name=default_prompt_name,
                  max_seq_length=bert_config.get("max_seq_length"), lowercase=bool(bert_config.get("do_lower_case")),
                  truncate_dim=st_config.get("truncate_dim"))

    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        if m3_heads:
            return EmbedderConfig(pooling=("cls",), normalize=True, **common)
        logger.warning("%s has no modules.json: pooling by the mean without normalisation, as sentence-transformers "
                       "does for a plain transformers checkpoint", folder)
        return EmbedderConfig(pooling=("mean",), normalize=False, **common)

    pooling: tuple[str, ...] | None = None
    normalize = False
    for module in _json(modules_file):
        kind = str(module.get("type", "")).rpartition(".")[2]
        path = module.get("path", "")
        if kind not in _SUPPORTED_MODULES:
            raise UnsupportedModelError(f"modules.json names a {module.get('type')} module; sie runs "
                                        f"{', '.join(_SUPPORTED_MODULES)}")
        if kind == "Transformer" and path not in ("", "."):
            raise UnsupportedModelError(f"the Transformer module lives in {path!r}; sie reads it from the model "
                                        "folder itself")
        if kind == "Pooling":
            pooling_file = folder / path / "config.json"
            pooling = _pooling_modes(_json(pooling_file) if pooling_file.is_file() else {})
        elif kind == "Normalize":
            normalize = True
    if pooling is None:
        if not m3_heads:
            raise UnsupportedModelError("modules.json has no Pooling module: the model gives no sentence embedding")
        pooling = ("cls",)
    return EmbedderConfig(pooling=pooling, normalize=normalize, **common)
