"""``Encoder``: a loaded embedding model that encodes texts into dense, sparse and multivector embeddings on packed
batches, the sibling of ``Reranker``.

The body is a model family's (task ``"encode"``: BERT, XLM-RoBERTa, ModernBERT, Qwen3 without any head); the folder's
sentence-transformers files say how its hidden states are pooled and normalised and which prompts go before
queries and documents (``sie.encoding.folder``); bge-m3's sparse and multivector heads are read from beside the
checkpoint (``sie.encoding.m3``). Texts are tokenized in one call, packed into token-budget micro-batches (the
scoring path's ``plan_micro_batches`` and ``pack``) and never padded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sie.dtypes import resolve_dtype
from sie.encoding.folder import read_embedder_config
from sie.encoding.m3 import M3Heads, has_m3_heads, sparse_vectors
from sie.encoding.params import (OUTPUT_DTYPES, EncodeParams, l2_normalize, parse_encode_params, parse_items,
                                 quantize)
from sie.errors import InvalidInputError, ModelNotFoundError, UnsupportedModelError
from sie.hub import resolve_model
from sie.inputs import check_utf8, is_integer, item_text, positive_int
from sie.models import (build_model, compute_dtype, family_of, folder_task, head_dim_of, read_config,
                        read_tokenizer)
from sie.models import pooling
from sie.packing import PackedBatch, pack, plan_micro_batches
from sie.reranker import (batch_token_budget, max_sequence_length, resolve_device,
                          warn_if_slower_than_fp32)
from sie.tokenization import EncodedPairs
from sie.tokenization.texts import TextTokenizer

logger = logging.getLogger(__name__)

POOLERS: dict[str, Callable[[torch.Tensor, PackedBatch], torch.Tensor]] = {
    "cls": pooling.cls_pool,
    "max": pooling.max_pool,
    "mean": pooling.mean_pool,
    "mean_sqrt_len_tokens": pooling.mean_sqrt_len_pool,
    "lasttoken": pooling.last_token_pool,
}
# What one input's raw outputs hold before normalisation and dtype conversion: "dense" float32 (dim,), "sparse"
# (ids int32, weights float32), "multivector" float32 (tokens - 1, multivector_dim).
RawOutputs = dict[str, Any]


def model_task(model: str | os.PathLike[str]) -> str:
    """What ``model`` does, ``"encode"`` (an Encoder) or ``"score"`` (a Reranker), by its config's ``architectures``;
    for a name both run (Qwen3ForCausalLM), ``"encode"`` when the folder is a sentence-transformers embedding one
    (``modules.json``, no CrossEncoder's: Qwen3-Embedding), else ``"score"`` (Qwen3-Reranker).

    A model that does not resolve, or whose architecture no family runs, counts as ``"score"``: loading it as a
    Reranker then fetches the default model or raises the error that says why.
    """
    try:
        folder = resolve_model(model)
    except ModelNotFoundError:
        return "score"
    try:
        architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError):
        return "score"
    if not isinstance(architectures, list):  # a hand-written config's 5 or {...}: nothing a family runs
        return "score"
    return folder_task([name for name in architectures if isinstance(name, str)], folder) or "score"


class Encoder:
    """An embedding model loaded for inference.

    Args:
        model: a model id (``org/name``) or a folder: a sentence-transformers folder, or a bge-m3-shaped one.
        device: ``"auto"`` (CUDA when available, the CPU for the int8 mode), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: activation and weight dtype, a torch dtype or its name (``"bfloat16"``); default fp32 on CPU, fp16
            on CUDA. ``torch.int8`` is the int8 mode (CPU): int8 linear layers with per-token activation scales, the
            rest in fp32 (``sie.quantization``).
        backend: kernel backend, as for ``Reranker``.
        max_length: tokens per input; default the model's limit (sentence-transformers' ``max_seq_length`` when the
            folder sets one).
        max_batch_tokens: token budget of one packed micro-batch.
        truncate_dim: the width ``encode`` cuts dense vectors to (Matryoshka), as sentence-transformers'
            ``truncate_dim``; default the folder's ``truncate_dim``, else the full width. ``embed`` gives full vectors.

    ``encode`` (with ``encode_query`` and ``encode_document``) behaves as sentence-transformers'; ``embed`` is the
    encode API (``sie.encode``, ``POST /v1/encode/{model}``): dense, sparse and multivector outputs per item.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        backend: str = "auto",
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        self.model_id = str(model)
        self.path = resolve_model(self.model_id)
        dtype = resolve_dtype(dtype)
        self.device = resolve_device(device, dtype)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        warn_if_slower_than_fp32(self.device, self.dtype)
        config = read_config(self.path)
        self.family = family_of(config, task="encode")
        self.architecture = next(name for name in config.architectures if name in self.family.architectures)
        # Qwen3ForCausalLM is Qwen3-Reranker's name too: outside a sentence-transformers embedding folder (a
        # CrossEncoder's is none) it is a reranker.
        if folder_task(config.architectures, self.path) == "score":
            raise UnsupportedModelError(f"{self.model_id} is a reranker (a folder of {self.architecture} that is no "
                                        "sentence-transformers embedding model's); it runs with sie.Reranker "
                                        "(POST /v1/score), not sie.Encoder (POST /v1/encode)")
        self.settings = read_embedder_config(self.path, m3_heads=has_m3_heads(self.path))
        hf_tokenizer = read_tokenizer(self.path, config)
        self.tokenizer = TextTokenizer(hf_tokenizer.backend_tokenizer, lowercase=self.settings.lowercase)
        # sentence-transformers' own limit, when the folder sets one, stands in for the tokenizer's (which it
        # overrides); the position table bounds both.
        family_limit = self.family.max_length(config)
        self.model_max_length = (min(family_limit, self.settings.max_seq_length) if self.settings.max_seq_length
                                 else max_sequence_length(family_limit, hf_tokenizer))
        # The arguments are checked before the weights load: a bad one costs no wait.
        self.max_length = (self.model_max_length if max_length is None
                           else self.check_max_length(max_length, "max_length"))
        self.max_batch_tokens = batch_token_budget(max_batch_tokens, self.device)
        self.dimensions = {"dense": config.hidden_size * len(self.settings.pooling)}
        self.truncate_dim = (self.check_truncate_dim(truncate_dim, "truncate_dim") if truncate_dim is not None
                             else self._folder_truncate_dim())
        self.model, self.kernels = build_model(self.path, self.family, config, self.device, self.dtype, backend,
                                               head_dim_of(config))
        self.heads = M3Heads.load(self.path, config.hidden_size, compute_dtype(self.dtype), self.device)
        self.vocab_size = config.vocab_size
        self._special_ids = sorted({token for token in (hf_tokenizer.cls_token_id, hf_tokenizer.eos_token_id,
                                                        hf_tokenizer.pad_token_id, hf_tokenizer.unk_token_id)
                                    if token is not None})
        if self.heads is not None:
            self.dimensions.update(sparse=self.vocab_size, multivector=self.heads.multivector_dim)
        self._lock = threading.Lock()
        logger.info("loaded %s (%s, %s pooling%s) on %s in %s, backends %s", self.model_id, self.architecture,
                    "+".join(self.settings.pooling), ", sparse and multivector heads" if self.heads else "",
                    self.device, self.dtype, self.backends)

    @property
    def output_types(self) -> tuple[str, ...]:
        """The outputs this model gives: ``("dense",)``, or ``("dense", "sparse", "multivector")`` for bge-m3."""
        return tuple(self.dimensions)

    @property
    def backends(self) -> dict[str, str]:
        """The kernels that run each op, as ``Reranker.backends``."""
        return self.kernels.backends.as_dict()

    def get_sentence_embedding_dimension(self) -> int:
        """The width of ``encode``'s vectors (sentence-transformers' name): the dense width, or ``truncate_dim``."""
        return self.truncate_dim or self.dimensions["dense"]

    def _folder_truncate_dim(self) -> int | None:
        """The folder's ``truncate_dim``; None where it sets none or one past the dense width, which cuts nothing
        in sentence-transformers."""
        width = self.settings.truncate_dim
        if width is None:
            return None
        if not (is_integer(width) and width >= 1):
            raise UnsupportedModelError(f"config_sentence_transformers.json's truncate_dim must be a positive integer, "
                                        f"got {width!r:.80}")
        return int(width) if width < self.dimensions["dense"] else None

    def check_truncate_dim(self, truncate_dim: int | None, field: str) -> int | None:
        """``truncate_dim`` when it is None or a width from 1 to the dense vector's; else InvalidInputError naming
        ``field``."""
        width = self.dimensions["dense"]
        if truncate_dim is not None and not (is_integer(truncate_dim) and 1 <= truncate_dim <= width):
            raise InvalidInputError(field, f"must be an integer from 1 to {width}, got {truncate_dim!r:.80}")
        return None if truncate_dim is None else int(truncate_dim)

    def __repr__(self) -> str:
        return (f"Encoder({self.model_id!r}, device={self.device}, dtype={self.dtype}, max_length={self.max_length}, "
                f"outputs={self.dimensions}, backends={self.backends})")

    def check_max_length(self, max_length: int, field: str) -> int:
        """``max_length`` when the model can read inputs that long and they leave room for a token; else
        InvalidInputError naming ``field``."""
        shortest = self.tokenizer.num_special_tokens + 1
        if not is_integer(max_length) or not shortest <= max_length <= self.model_max_length:
            raise InvalidInputError(field, f"must be an integer from {shortest} to {self.model_max_length}, "
                                           f"got {max_length!r:.80}")
        return int(max_length)

    def check_output_types(self, output_types: Collection[str], field: str = "output_types") -> None:
        """Raises InvalidInputError naming ``field`` for an output type this model does not give."""
        for index, kind in enumerate(output_types):
            if kind not in self.dimensions:
                raise InvalidInputError(f"{field}[{index}]", f"{self.model_id} has no {kind} output; it gives "
                                                             f"{', '.join(self.output_types)}")

    def tokenize(
        self, texts: Sequence[str], *, is_query: bool | None = None, instruction: str | None = None,
        max_length: int | None = None, truncate: bool = True, field: str = "items",
    ) -> EncodedPairs:
        """Token ids of ``texts`` behind their prompt: ``instruction`` when given, else the model's query
        (``is_query``), document (``is_query=False``) or default prompt. Each is cut to ``max_length`` tokens, or with
        ``truncate=False`` a longer one raises InputTooLongError naming ``{field}[i]``."""
        limit = self.max_length if max_length is None else self.check_max_length(max_length, "options.max_length")
        for index, text in enumerate(texts):
            check_utf8(text, f"{field}[{index}]")
        prompt = instruction if instruction is not None else self.settings.prompt(is_query)
        if prompt:
            texts = [prompt + text for text in texts]
        return self.tokenizer.encode_texts(texts, limit, truncate=truncate, field=field)

    @torch.inference_mode()
    def run(
        self, encoded: EncodedPairs, output_types: Collection[str] = ("dense",), *, batch_size: int | None = None,
        show_progress_bar: bool = False,
    ) -> list[RawOutputs]:
        """The raw outputs of every input of ``encoded``, in input order (before normalisation and dtypes).

        Inputs are packed into micro-batches of at most ``max_batch_tokens`` tokens (and ``batch_size`` inputs),
        longest first; calls from several threads run one after another.
        """
        wanted = frozenset(output_types)
        results: list[RawOutputs] = [{} for _ in range(encoded.num_pairs)]
        batches = plan_micro_batches(encoded.lengths, self.max_batch_tokens, batch_size)
        with self._lock:
            for indices in tqdm(batches, desc="Batches", disable=not show_progress_bar):
                batch = pack(encoded, indices, self.model.position_offset, self.device)
                for index, outputs in zip(indices, self._forward(batch, encoded.lengths[indices], wanted),
                                          strict=True):
                    results[index] = outputs
        return results

    def _forward(self, batch: PackedBatch, lengths: np.ndarray, wanted: frozenset[str]) -> list[RawOutputs]:
        """One packed micro-batch through the body, the pooling and the heads ``wanted`` needs."""
        # The dense vector alone, pooled from one row per text by the mode the body can compute alone ("cls" for
        # BERT-likes, "lasttoken" for a decoder): the last layer runs on those rows only.
        pooled_only = wanted <= {"dense"} and self.settings.pooling == (self.model.row_pooling,)
        states = self.model(batch, pooled_only=pooled_only)
        outputs: list[RawOutputs] = [{} for _ in range(batch.batch_size)]
        if "dense" in wanted:
            pooled = states if pooled_only else torch.cat([POOLERS[mode](states, batch)
                                                           for mode in self.settings.pooling], dim=1)
            for output, vector in zip(outputs, pooled.float().cpu().numpy(), strict=True):
                output["dense"] = vector
        if "sparse" in wanted:
            weights = self.heads.token_weights(states).cpu().numpy()
            vectors = sparse_vectors(batch.input_ids.cpu().numpy(), weights, lengths, self._special_ids,
                                     self.vocab_size)
            for output, vector in zip(outputs, vectors, strict=True):
                output["sparse"] = vector
        if "multivector" in wanted:
            rows = self.heads.token_vectors(states).cpu().numpy()
            starts = np.cumsum(lengths) - lengths
            for output, start, length in zip(outputs, starts, lengths, strict=True):
                output["multivector"] = rows[start + 1 : start + length]  # every token after CLS
        return outputs

    def finish(self, raw: RawOutputs, params: EncodeParams, item_id: str | None = None) -> dict[str, Any]:
        """One input's result in the encode API's shape: ``{"id"?, "dense"?, "sparse"?: {"indices", "values"},
        "multivector"?}``, normalised as the model (or ``params.normalize``) says and in ``params.output_dtype``."""
        result: dict[str, Any] = {} if item_id is None else {"id": item_id}
        for kind in params.output_types:
            if kind == "sparse":
                indices, values = raw["sparse"]
                result["sparse"] = {"indices": indices, "values": values}
                continue
            values = raw[kind]
            # The dense vector follows the folder's Normalize module; bge-m3 normalises its multivector rows.
            default = self.settings.normalize if kind == "dense" else True
            if default if params.normalize is None else params.normalize:
                values = l2_normalize(values)
            result[kind] = quantize(values, params.output_dtype)
        return result

    def embed(
        self, items: Sequence[Any], *, output_types: Sequence[str] = ("dense",), is_query: bool | None = None,
        instruction: str | None = None, output_dtype: str | None = None, options: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The encode API in process: one result per item (strings or Items ``{"id"?, "text"}``), in order,
        ``{"id"?, "dense"?, "sparse"?: {"indices", "values"}, "multivector"?}`` with numpy arrays.

        ``options``: ``is_query``, ``max_length``, ``truncate``, ``normalize`` (the keyword ``is_query`` wins).
        """
        merged = dict(options or {})
        if is_query is not None:
            merged["is_query"] = is_query
        params = parse_encode_params({"output_types": output_types, "instruction": instruction,
                                      "output_dtype": output_dtype, "options": merged}, field="")
        parsed = parse_items(items)
        self.check_output_types(params.output_types)
        encoded = self.tokenize(parsed.texts, is_query=params.is_query, instruction=params.instruction,
                                max_length=params.max_length, truncate=params.truncate)
        raw = self.run(encoded, params.output_types)
        return [self.finish(outputs, params, item_id) for outputs, item_id in zip(raw, parsed.ids, strict=True)]

    def encode(
        self, sentences: str | Sequence[str], batch_size: int | None = None, show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True, convert_to_tensor: bool = False, normalize_embeddings: bool = False,
        prompt_name: str | None = None, prompt: str | None = None, precision: str = "float32",
        is_query: bool | None = None, truncate_dim: int | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """sentence-transformers' ``SentenceTransformer.encode``: dense embeddings ``(len(sentences), dim)`` in input
        order (``(dim,)`` for one string or one Item ``{"id"?, "text"}``; a list may hold Items too).

        The folder's Normalize module applies, then the cut to ``truncate_dim`` (default the Encoder's), then
        ``normalize_embeddings=True`` normalises, in sentence-transformers' order.
        ``prompt`` (or a prompt of the model's by ``prompt_name``) goes before every sentence. ``batch_size`` caps the
        sentences of one micro-batch on top of the token budget (``max_batch_tokens``), which alone decides by
        default. ``precision``: ``float32``, ``float16``, ``int8``, ``uint8``, ``binary`` or ``ubinary``
        (``OUTPUT_DTYPES``).
        ``convert_to_tensor`` gives one tensor, ``convert_to_numpy=False`` a list of tensors.
        """
        single = isinstance(sentences, (str, Mapping))
        texts = [sentences] if single else list(sentences)
        for index, text in enumerate(texts):
            field = "sentences" if single else f"sentences[{index}]"
            if isinstance(text, Mapping):  # an Item {"id"?, "text"}, as sentence-transformers reads {"text": ...}
                texts[index] = item_text(text, field)
            elif not isinstance(text, str):
                raise InvalidInputError(field, f"must be a string, got {type(text).__name__}")
        batch_size = None if batch_size is None else positive_int(batch_size, "batch_size")
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.settings.prompts:
                raise InvalidInputError("prompt_name", f"{prompt_name!r} is not one of this model's prompts: "
                                                       f"{', '.join(self.settings.prompts) or 'none'}")
            prompt = self.settings.prompts[prompt_name]
        if precision not in OUTPUT_DTYPES:
            raise InvalidInputError("precision", f"must be one of {', '.join(OUTPUT_DTYPES)}, got {precision!r:.80}")
        width = self.check_truncate_dim(truncate_dim, "truncate_dim") or self.truncate_dim
        encoded = self.tokenize(texts, is_query=is_query, instruction=prompt, field="sentences")
        raw = self.run(encoded, ("dense",), batch_size=batch_size, show_progress_bar=bool(show_progress_bar))
        as_the_model_gives = parse_encode_params({}, field="")
        vectors = [self.finish(outputs, as_the_model_gives)["dense"][:width] for outputs in raw]
        dense = np.stack(vectors) if vectors else np.zeros((0, width or self.dimensions["dense"]), np.float32)
        embeddings = quantize(l2_normalize(dense) if normalize_embeddings else dense, precision)
        vectors = list(embeddings)
        if convert_to_tensor:
            embeddings = torch.from_numpy(embeddings)
        elif not convert_to_numpy:
            embeddings = [torch.from_numpy(vector) for vector in vectors]
        return embeddings[0] if single else embeddings

    def encode_query(self, sentences: str | Sequence[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """``encode`` with the model's query prompt (sentence-transformers' ``encode_query``)."""
        return self.encode(sentences, is_query=True, **kwargs)

    def encode_document(self, sentences: str | Sequence[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """``encode`` with the model's document prompt (sentence-transformers' ``encode_document``)."""
        return self.encode(sentences, is_query=False, **kwargs)
