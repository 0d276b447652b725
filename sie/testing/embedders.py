"""Random embedding models packaged as sentence-transformers saves them, optionally with bge-m3's heads.

A base checkpoint of ``make_random_checkpoint`` (``BertModel``, ``XLMRobertaModel``, ``ModernBertModel``, or Qwen3
packaged as Qwen3-Embedding is) with
``modules.json``, ``1_Pooling/config.json``, ``2_Normalize``, ``sentence_bert_config.json`` and
``config_sentence_transformers.json`` (prompts) beside it; with ``m3_heads``, random ``sparse_linear.pt`` and
``colbert_linear.pt`` as FlagEmbedding saves them (``{"weight", "bias"}`` of a linear layer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, processors

from sie.testing.checkpoints import SHAPES, Shape, make_random_checkpoint


def make_random_embedder(
    path: str | Path,
    arch: str = "bert",
    *,
    shape: str | Shape = "tiny",
    pooling: str | tuple[str, ...] = "mean",
    normalize: bool = True,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    max_seq_length: int | None = None,
    m3_heads: bool = False,
    multivector_dim: int | None = None,
    seed: int = 0,
    max_position_embeddings: int = 512,
    config: dict | None = None,
    causal_lm: bool = False,
) -> Path:
    """Writes a random embedding model of ``arch`` to ``path`` as a sentence-transformers folder.

    ``pooling`` names sentence-transformers' modes (``cls``, ``mean``, ``max``, ``mean_sqrt_len_tokens``,
    ``lasttoken``), written in the legacy ``pooling_mode_*`` form that most published folders use. ``m3_heads``
    adds bge-m3's sparse head and a multivector head of ``multivector_dim`` (default: the hidden size).

    ``qwen3`` is packaged as Qwen3-Embedding's folders are (``_as_qwen3_embedding``); its weights are the body alone
    (keys without ``model.``), or with ``causal_lm`` the whole causal LM's (``model.`` keys and an untied
    ``lm_head.weight``): the published folders come in both forms.
    """
    path = make_random_checkpoint(path, arch, shape=shape, seed=seed, base_model=not causal_lm,
                                  tie_word_embeddings=not causal_lm, max_position_embeddings=max_position_embeddings,
                                  config=config)
    if arch == "qwen3":
        _as_qwen3_embedding(path)
    hidden = (SHAPES[shape] if isinstance(shape, str) else shape).hidden
    modes = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    legacy = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
              "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens", "lasttoken": "pooling_mode_lasttoken"}
    pooling_config = {"word_embedding_dimension": hidden, **{key: mode in modes for mode, key in legacy.items()}}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": max_seq_length or max_position_embeddings, "do_lower_case": False}))
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts or {}, "default_prompt_name": default_prompt_name, "similarity_fn_name": "cosine"}))
    if m3_heads:
        generator = torch.Generator().manual_seed(seed + 1)
        width = multivector_dim or hidden
        torch.save({"weight": 0.2 * torch.randn(1, hidden, generator=generator),
                    "bias": 0.1 * torch.randn(1, generator=generator)}, path / "sparse_linear.pt")
        torch.save({"weight": 0.2 * torch.randn(width, hidden, generator=generator),
                    "bias": 0.1 * torch.randn(width, generator=generator)}, path / "colbert_linear.pt")
    return path


def _as_qwen3_embedding(path: Path) -> None:
    """Qwen3-Embedding's packaging of a Qwen3 checkpoint: the config names the causal LM whatever the weights
    hold, and the tokenizer (transformers' Qwen2Tokenizer, padding on the left) appends ``<|endoftext|>`` to every
    text in its post-processor: the row that last-token pooling reads."""
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = ["Qwen3ForCausalLM"]
    config_file.write_text(json.dumps(config, indent=2))
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    eos = "<|endoftext|>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1",
        special_tokens=[(eos, tokenizer.token_to_id(eos))],
    )
    tokenizer.save(str(path / "tokenizer.json"))
    tokenizer_config_file = path / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_file.read_text())
    tokenizer_config.update(padding_side="left", tokenizer_class="Qwen2Tokenizer")
    tokenizer_config_file.write_text(json.dumps(tokenizer_config, indent=2))
