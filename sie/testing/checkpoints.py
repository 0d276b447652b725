"""Random checkpoints of real architectures, for tests, benchmarks and the GPU check.

They need no download: the tokenizer is built from the word list of ``sie.testing.words`` (WordPiece for BERT,
Unigram with the SentencePiece-style template for XLM-RoBERTa, byte-level BPE with ModernBERT's [CLS]/[SEP]
template, byte-level BPE with Qwen's pre-tokenizer and chat special tokens for the decoders), and the weights are transformers' own initialisation with norm
parameters and biases perturbed so that every parameter matters in a parity test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from sie.testing.words import WORDS


@dataclass(frozen=True)
class Shape:
    """Dimensions of a model: ``kv_heads`` (grouped-query attention) and ``head_dim`` matter to decoders only and
    default to ``heads`` and ``hidden // heads``."""

    num_layers: int
    hidden: int
    heads: int
    intermediate: int
    kv_heads: int | None = None
    head_dim: int | None = None


SHAPES = {
    "tiny": Shape(num_layers=2, hidden=32, heads=2, intermediate=64),
    "tiny-gqa": Shape(num_layers=2, hidden=64, heads=4, intermediate=96, kv_heads=2, head_dim=16),
    "minilm-l6": Shape(num_layers=6, hidden=384, heads=12, intermediate=1536),
    "minilm-l12": Shape(num_layers=12, hidden=384, heads=12, intermediate=1536),
    "bert-base": Shape(num_layers=12, hidden=768, heads=12, intermediate=3072),
    "xlm-r-large": Shape(num_layers=24, hidden=1024, heads=16, intermediate=4096),
    # ModernBERT: four layers put a global layer first and last with two local ones between (every third global).
    "tiny-modernbert": Shape(num_layers=4, hidden=32, heads=2, intermediate=48),
    "modernbert-base": Shape(num_layers=22, hidden=768, heads=12, intermediate=1152),
    # Decoder rerankers: Qwen3-Reranker-0.6B/4B/8B, mxbai-rerank-base-v2 (Qwen2-0.5B) and -large-v2 (Qwen2-1.5B).
    "qwen3-0.6b": Shape(num_layers=28, hidden=1024, heads=16, intermediate=3072, kv_heads=8, head_dim=128),
    "qwen3-4b": Shape(num_layers=36, hidden=2560, heads=32, intermediate=9728, kv_heads=8, head_dim=128),
    "qwen3-8b": Shape(num_layers=36, hidden=4096, heads=32, intermediate=12288, kv_heads=8, head_dim=128),
    "qwen2-0.5b": Shape(num_layers=24, hidden=896, heads=14, intermediate=4864, kv_heads=2, head_dim=64),
    "qwen2-1.5b": Shape(num_layers=28, hidden=1536, heads=12, intermediate=8960, kv_heads=2, head_dim=128),
}
# Qwen2's pre-tokenizer: contractions, letters, single digits, punctuation runs, newlines, spaces.
_QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_ADDED_TOKENS = ("<think>", "</think>")

_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()"


def _bert_tokenizer() -> Tokenizer:
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_CHARS, *(f"##{c}" for c in _CHARS),
                                *WORDS]))
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _xlm_roberta_tokenizer() -> Tokenizer:
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{word}", -5.0 - i / 100) for i, word in enumerate(WORDS)]
    pieces += [(c, -10.0) for c in _CHARS] + [(f"\u2581{c}", -11.0) for c in _CHARS if c not in WORDS]
    pieces += [("\u2581", -12.0)]
    pieces += [("<mask>", 0.0)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.decoder = decoders.Metaspace()
    return tokenizer


def _qwen_tokenizer() -> Tokenizer:
    """Byte-level BPE learned on the word list, with Qwen's specials; "yes", "no", "0" and "1" are single tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=list(QWEN_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Whole words at the start of a text, so that bare "yes" and "no" (no leading space) are learned too.
    corpus = [" ".join(WORDS)] * 4 + [word for word in ("yes", "no", *WORDS) for _ in range(4)]
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.add_tokens(list(QWEN_ADDED_TOKENS))
    for token in ("yes", "no", "0", "1"):
        assert tokenizer.token_to_id(token) is not None, f"{token!r} is not a single token"
    return tokenizer


MODERNBERT_SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def _modernbert_tokenizer() -> Tokenizer:
    """Byte-level BPE learned on the word list (as ModernBERT's GPT-NeoX-style one), [CLS] $A [SEP] $B [SEP]."""
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=list(MODERNBERT_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(WORDS)] * 4 + list(WORDS) * 2, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


ARCHITECTURES = ("bert", "xlm-roberta", "modernbert", "qwen2", "qwen3")


def make_random_checkpoint(
    path: str | Path,
    arch: str = "bert",
    *,
    shape: str | Shape = "tiny",
    max_position_embeddings: int = 512,
    seed: int = 0,
    classifier: bool = False,
    tie_word_embeddings: bool = True,
    base_model: bool = False,
    config: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes a random checkpoint of ``arch`` (one of ``ARCHITECTURES``) with its tokenizer to ``path``.

    BERT, XLM-RoBERTa and ModernBERT are ``...ForSequenceClassification`` with one logit, or with ``base_model`` the
    body alone as embedding models save it (``BertModel``, ``XLMRobertaModel``, ``ModernBertModel``). ``config``
    overrides entries of the transformers config (ModernBERT's ``local_attention`` or biases, say). Qwen2 and Qwen3 are
    ``...ForCausalLM`` (with ``tie_word_embeddings`` as given), or ``...ForSequenceClassification`` with one
    label when ``classifier``, or with ``base_model`` the body alone (``Qwen3Model``: keys without ``model.``).
    ``shape`` is a name in ``SHAPES`` or a ``Shape``. The vocabulary is the tokenizer's (a few hundred tokens), so even
    large shapes stay small on disk apart from their layers. The weights are saved in ``dtype`` (real decoder
    checkpoints ship in bf16).
    """
    from transformers import PreTrainedTokenizerFast

    dims = SHAPES[shape] if isinstance(shape, str) else shape
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    if arch in ("bert", "xlm-roberta", "modernbert"):
        model, tokenizer, specials = _encoder(arch, dims, max_position_embeddings, base_model, config or {})
    else:
        model, tokenizer, specials = _decoder(arch, dims, max_position_embeddings, classifier, tie_word_embeddings,
                                              base_model)
    path = Path(path)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(_perturbed(name, parameter, generator))
    model.to(dtype).eval().save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_position_embeddings,
                            **specials).save_pretrained(path)
    return path


def _perturbed(name: str, parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """transformers' initialisation (normal weights, unit norms, zero biases), with norms and biases moved off
    their defaults so that a parity test notices any of them being ignored."""
    if "norm" in name.lower():
        return parameter + 0.1 * torch.randn(parameter.shape, generator=generator)
    if name.endswith("bias"):
        return 0.05 * torch.randn(parameter.shape, generator=generator)
    return 0.02 * torch.randn(parameter.shape, generator=generator)


def _encoder(arch: str, dims: Shape, max_position_embeddings: int, base_model: bool, overrides: dict):
    import transformers

    common = dict(hidden_size=dims.hidden, num_hidden_layers=dims.num_layers, num_attention_heads=dims.heads,
                  intermediate_size=dims.intermediate, num_labels=1)
    if arch == "bert":
        prefix, tokenizer = "Bert", _bert_tokenizer()
        # Segment ids as BertTokenizer gives them (the document's are 1): PreTrainedTokenizerFast alone leaves them
        # out, and a parity test would then never see the token type embeddings' second row.
        specials = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
        settings = dict(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=max_position_embeddings)
    elif arch == "xlm-roberta":
        prefix, tokenizer = "XLMRoberta", _xlm_roberta_tokenizer()
        specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", pad_token="<pad>",
                        cls_token="<s>", mask_token="<mask>")
        settings = dict(vocab_size=tokenizer.get_vocab_size(), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        type_vocab_size=1, layer_norm_eps=1e-5, max_position_embeddings=max_position_embeddings + 2)
    else:
        prefix, tokenizer = "ModernBert", _modernbert_tokenizer()
        specials = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
        ids = {name: tokenizer.token_to_id(token) for name, token in
               (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"))}
        settings = dict(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=max_position_embeddings,
                        pad_token_id=ids["pad"], cls_token_id=ids["cls"], bos_token_id=ids["cls"],
                        sep_token_id=ids["sep"], eos_token_id=ids["sep"], local_attention=16)
    config = getattr(transformers, f"{prefix}Config")(**{**common, **settings, **overrides})
    model_class = getattr(transformers, f"{prefix}Model" if base_model else f"{prefix}ForSequenceClassification")
    return model_class(config), tokenizer, specials


def _decoder(arch: str, dims: Shape, max_position_embeddings: int, classifier: bool, tie_word_embeddings: bool,
             base_model: bool):
    import transformers

    tokenizer = _qwen_tokenizer()
    pad_id = tokenizer.token_to_id("<|endoftext|>")
    prefix = "Qwen2" if arch == "qwen2" else "Qwen3"
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=dims.hidden, num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.heads, num_key_value_heads=dims.kv_heads or dims.heads,
        head_dim=dims.head_dim or dims.hidden // dims.heads, intermediate_size=dims.intermediate,
        max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=tie_word_embeddings and not classifier, num_labels=1, pad_token_id=pad_id,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )
    head = "Model" if base_model else "ForSequenceClassification" if classifier else "ForCausalLM"
    model = getattr(transformers, f"{prefix}{head}")(config)
    return model, tokenizer, dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
