"""References for decoder rerankers: each recipe's token ids as its authors' code builds them, and
transformers' forward on a left-padded batch.

The token-id builders follow the reference implementations line by line (Qwen3-Reranker's model card code;
mixedbread's ``MxbaiRerankV2.prepare_inputs``) through transformers' tokenizer API, independently of
``sie.tokenization.prompts``, so that a test comparing the two compares two implementations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

QWEN3_PREFIX = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
                'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MXBAI_PREFIX = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n")
MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
MXBAI_TASK = ("You are a search relevance expert who evaluates how well documents match search queries. For each "
              "query-document pair, carefully analyze the semantic relationship between them, then provide your "
              "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")


def qwen3_reranker_ids(tokenizer, query: str, document: str, instruction: str | None, max_length: int) -> list[int]:
    """Qwen3-Reranker's ids for one pair: the formatted pair cut to fit between the prefix and suffix."""
    prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    # The model card's format_instruction: the default only for None; an empty instruction stays empty.
    instruction = QWEN3_DEFAULT_INSTRUCTION if instruction is None else instruction
    text = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
    middle = tokenizer(text, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=max_length - len(prefix) - len(suffix))["input_ids"]
    return prefix + middle + suffix


def mxbai_rerank_v2_ids(tokenizer, query: str, document: str, instruction: str | None, budget: int) -> list[int]:
    """mxbai-rerank-v2's ids for one pair; ``budget`` is its ``max_length``, the query and document's tokens."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, return_tensors=None, add_special_tokens=False)["input_ids"]

    sep = ids("\n")
    query_prompt = f"query: {query}"
    if instruction:
        query_prompt = f"instruction: {instruction}\n{query_prompt}"
    query_ids = tokenizer(query_prompt, return_tensors=None, add_special_tokens=False, max_length=budget * 3 // 4,
                          truncation=True)["input_ids"]
    document_ids = tokenizer(f"document: {document}", return_tensors=None, add_special_tokens=False,
                             max_length=budget, truncation=True)["input_ids"]
    # prepare_for_model(query_ids, sep + document_ids, truncation="only_second", max_length=budget), which
    # transformers 5 no longer has: the second sequence loses its end until the pair fits.
    second = (sep + document_ids)[:max(budget - len(query_ids), 0)]
    pair = query_ids + second
    return ids(MXBAI_PREFIX) + pair + sep + ids(MXBAI_TASK) + ids(MXBAI_SUFFIX)


def mxbai_template_length(tokenizer) -> int:
    """The static tokens mxbai-rerank-v2 adds around a pair's query and document (its ``predefined_length``)."""
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"])
               for text in (MXBAI_PREFIX, MXBAI_TASK, MXBAI_SUFFIX, "\n"))


def left_padded_logits(model, sequences: Sequence[Sequence[int]], pad_id: int, score_ids: tuple[int, int] | None,
                       batch_size: int) -> np.ndarray:
    """transformers' path for decoder rerankers: batches left-padded to their longest sequence.

    ``model`` is a ``...ForCausalLM`` (relevance = logit(positive) - logit(negative) of ``score_ids`` at the last
    position, computed for that position only) or a one-label ``...ForSequenceClassification`` (``score_ids``
    None). Returns float32 relevance logits, numpy ``(len(sequences),)``.
    """
    device = next(model.parameters()).device
    logits = []
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start:start + batch_size]
            longest = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([[pad_id] * (longest - len(ids)) + list(ids) for ids in chunk], device=device)
            mask = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids in chunk], device=device)
            if score_ids is None:
                logits.append(model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().cpu())
            else:
                last = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                logits.append((last[:, score_ids[1]] - last[:, score_ids[0]]).float().cpu())
    return torch.cat(logits).numpy()
