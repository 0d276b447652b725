"""Prompt recipes: how a decoder LLM reads a (query, document) pair as a relevance judgement.

A recipe holds the template pieces around the pair, the tokens whose logits score it (or none, for checkpoints
converted to a one-label classifier), the default instruction, the length budget and the truncation rule.
Built in: ``qwen3-reranker`` (Qwen3-Reranker-0.6B/4B/8B) and ``mxbai-rerank-v2`` (mxbai-rerank-base/large-v2).
A model gets its recipe, in this order, from ``Reranker(model, recipe=...)`` (``sie serve --recipe MODEL=NAME``),
from a ``sie_reranker.json`` in its folder, or from its Hub id.

``sie_reranker.json`` holds a JSON object with the fields of ``Recipe`` (lists for ``prefix``, ``suffix`` and
``score_tokens``), all optional when ``"base"`` names a built-in recipe to start from, e.g. a fine-tuned Qwen3
reranker with its own instruction: ``{"base": "qwen3-reranker", "default_instruction": "Find the clause..."}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sie.errors import UnsupportedModelError

RECIPE_FILE = "sie_reranker.json"


@dataclass(frozen=True)
class Recipe:
    """A decoder reranker's prompt around one pair.

    The tokens of a pair are ``prefix + query part + separator + document part + suffix``. ``prefix`` and
    ``suffix`` are lists of static pieces, each tokenized on its own once per model. The query part is
    ``query_template`` (``{query}``, and ``{instruction}`` when it has that slot), or ``instruction_template``
    when an instruction is given and ``query_template`` has no slot for one; the document part is
    ``document_template`` (``{document}``).

    Attributes:
        joint: the query part, separator and document part are tokenized as one text and cut from its end
            to fit (Qwen3-Reranker's reference); else each is tokenized alone, the query part capped at
            ``query_share`` of the budget and the document part cut to what is left (mxbai-rerank-v2's).
        score_tokens: (negative, positive) single tokens: the relevance logit is logit(positive) -
            logit(negative) at the last position. Ignored by checkpoints with their own one-label head.
        max_length: the default length budget; ``max_length_counts_template`` says whether it counts the
            template's static tokens (Qwen3) or only the query and document parts (mxbai).
    """

    name: str
    prefix: tuple[str, ...]
    query_template: str
    document_template: str
    suffix: tuple[str, ...]
    score_tokens: tuple[str, str]
    separator: str = ""
    instruction_template: str | None = None
    default_instruction: str | None = None
    max_length: int = 8192
    max_length_counts_template: bool = True
    joint: bool = True
    query_share: float | None = None

    def query_text(self, query: str, instruction: str | None) -> str:
        """The query part for ``query`` under ``instruction`` (or the default instruction)."""
        instruction = instruction if instruction is not None else self.default_instruction
        if "{instruction}" in self.query_template:
            return self.query_template.format(query=query, instruction=instruction or "")
        # An empty instruction is none here, as mxbai-rerank-v2's reference reads it (``if instruction``).
        if instruction and self.instruction_template is not None:
            return self.instruction_template.format(query=query, instruction=instruction)
        return self.query_template.format(query=query)

    def document_text(self, document: str) -> str:
        return self.document_template.format(document=document)


QWEN3_RERANKER = Recipe(
    name="qwen3-reranker",
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    ),
    query_template="<Instruct>: {instruction}\n<Query>: {query}\n",
    document_template="<Document>: {document}",
    suffix=("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
    score_tokens=("no", "yes"),
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
    max_length=8192,
)

MXBAI_RERANK_V2 = Recipe(
    name="mxbai-rerank-v2",
    prefix=("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n",),
    query_template="query: {query}",
    instruction_template="instruction: {instruction}\nquery: {query}",
    separator="\n",
    document_template="document: {document}",
    suffix=(
        "\n",
        "You are a search relevance expert who evaluates how well documents match search queries. For each "
        "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
        "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    score_tokens=("0", "1"),
    max_length=8192,
    max_length_counts_template=False,
    joint=False,
    query_share=0.75,
)

BUILT_IN: dict[str, Recipe] = {recipe.name: recipe for recipe in (QWEN3_RERANKER, MXBAI_RERANK_V2)}

# Hub ids whose recipe is known: Qwen/Qwen3-Reranker-0.6B/4B/8B, mixedbread-ai/mxbai-rerank-base/large-v2.
_HUB_IDS = (
    (re.compile(r"^Qwen/Qwen3-Reranker-[\w.]+$", re.IGNORECASE), QWEN3_RERANKER),
    (re.compile(r"^mixedbread-ai/mxbai-rerank-[\w.-]+-v2$", re.IGNORECASE), MXBAI_RERANK_V2),
)


def recipe_from_mapping(data: Mapping[str, Any], source: str) -> Recipe:
    """A recipe from the fields of ``data`` over the built-in named by ``data["base"]`` (if any).

    Raises UnsupportedModelError naming ``source`` for unknown fields, a missing field or a bad template.
    """
    fields = {field.name: field for field in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - set(fields) - {"base"})
    if unknown:
        raise UnsupportedModelError(f"{source}: unknown recipe field(s) {', '.join(unknown)}; "
                                    f"known: base, {', '.join(fields)}")
    values: dict[str, Any] = {}
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str) or base not in BUILT_IN:
            raise UnsupportedModelError(f"{source}: base {base!r} is not a built-in recipe ({', '.join(BUILT_IN)})")
        values = dataclasses.asdict(BUILT_IN[base])
    values["name"] = data.get("name") or (f"{base}+{Path(source).name}" if base else Path(source).name)
    for key, value in data.items():
        if key == "base":
            continue
        if key in ("prefix", "suffix") and isinstance(value, str):
            value = (value,)
        elif key in ("prefix", "suffix", "score_tokens") and isinstance(value, list):
            value = tuple(value)
        values[key] = value
    missing = sorted(name for name, field in fields.items()
                     if name not in values and field.default is dataclasses.MISSING)
    if missing:
        raise UnsupportedModelError(f"{source}: recipe field(s) {', '.join(missing)} missing (or give a base)")
    recipe = Recipe(**values)
    _check(recipe, source)
    return recipe


def _check(recipe: Recipe, source: str) -> None:
    """Raises UnsupportedModelError naming ``source`` and the field for a recipe that would fail or mislead only
    once pairs are scored: a field of the wrong type (JSON's ``"false"`` is not false), a template that does not
    format."""
    def wrong(field: str, expected: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{source}: {field} must be {expected}, got {getattr(recipe, field)!r:.80}")

    for field in ("name", "query_template", "document_template", "separator"):
        if not isinstance(getattr(recipe, field), str):
            raise wrong(field, "a string")
    for field in ("instruction_template", "default_instruction"):
        if not isinstance(getattr(recipe, field), (str, type(None))):
            raise wrong(field, "a string or null")
    for field in ("prefix", "suffix"):
        if not isinstance(getattr(recipe, field), tuple) or not all(isinstance(piece, str)
                                                                     for piece in getattr(recipe, field)):
            raise wrong(field, "a string or a list of strings")
    tokens = recipe.score_tokens
    if not isinstance(tokens, tuple) or len(tokens) != 2 or not all(isinstance(token, str) for token in tokens):
        raise wrong("score_tokens", "[negative, positive], two strings")
    for field in ("max_length_counts_template", "joint"):
        if not isinstance(getattr(recipe, field), bool):
            raise wrong(field, "true or false")
    if isinstance(recipe.max_length, bool) or not isinstance(recipe.max_length, int) or recipe.max_length < 1:
        raise wrong("max_length", "a positive integer")
    share = recipe.query_share
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1):
        raise wrong("query_share", "a number in (0, 1] or null")
    if "{query}" not in recipe.query_template or "{document}" not in recipe.document_template:
        raise UnsupportedModelError(f"{source}: query_template needs {{query}} and document_template {{document}}")
    try:
        recipe.query_text("q", "i"), recipe.query_text("q", None), recipe.document_text("d")
    except (KeyError, ValueError, IndexError) as error:
        raise UnsupportedModelError(f"{source}: a template does not format ({type(error).__name__}: {error}); "
                                    "its only fields are {query}, {instruction} and {document}, and a literal "
                                    "brace is written twice") from None


def load_recipe_file(path: Path) -> Recipe:
    """The recipe in a ``sie_reranker.json``-style file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as error:
        raise UnsupportedModelError(f"{path}: not a readable recipe ({error})") from None
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{path}: a recipe is a JSON object, got {type(data).__name__}")
    return recipe_from_mapping(data, str(path))


def resolve_recipe(model_id: str, folder: Path, requested: str | Recipe | None) -> Recipe | None:
    """The recipe of a decoder reranker: ``requested`` (a built-in's name, a recipe file, or a Recipe), else the
    folder's ``sie_reranker.json``, else the one its Hub id implies; None when nothing says."""
    if isinstance(requested, Recipe):
        return requested
    if requested is not None:
        if requested in BUILT_IN:
            return BUILT_IN[requested]
        if Path(requested).expanduser().is_file():
            return load_recipe_file(Path(requested).expanduser())
        raise UnsupportedModelError(f"recipe {requested!r} is neither a built-in ({', '.join(BUILT_IN)}) "
                                    f"nor a recipe file")
    if (Path(folder) / RECIPE_FILE).is_file():
        return load_recipe_file(Path(folder) / RECIPE_FILE)
    for pattern, recipe in _HUB_IDS:
        if pattern.match(model_id.rstrip("/")):
            return recipe
    return None


def no_recipe_error(model_id: str, architecture: str) -> UnsupportedModelError:
    """The error for a decoder checkpoint whose recipe nothing names, saying how to give one."""
    return UnsupportedModelError(
        f"{model_id} is a {architecture}: sie reads it as a reranker through a prompt recipe, and none is known for "
        f"it. Give one: Reranker({model_id!r}, recipe=NAME), `--recipe NAME` to sie rerank or sie score-file, or "
        f"`sie serve --recipe {model_id}=NAME`, with NAME one of {', '.join(BUILT_IN)} (or a recipe file); or put "
        f"a {RECIPE_FILE} in the model folder"
    )
