"""Random cross-encoder checkpoints of real architectures, for tests and the GPU check.

They need no download: the tokenizer is built from the word list of ``sie.testing.words`` (WordPiece for BERT,
Unigram with the SentencePiece-style template for XLM-RoBERTa), and the weights are transformers' own
initialisation with LayerNorm parameters perturbed so that every parameter matters in a parity test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from sie.testing.words import WORDS


@dataclass(frozen=True)
class Shape:
    """Encoder dimensions of a model family."""

    num_layers: int
    hidden: int
    heads: int
    intermediate: int


SHAPES = {
    "tiny": Shape(num_layers=2, hidden=32, heads=2, intermediate=64),
    "minilm-l6": Shape(num_layers=6, hidden=384, heads=12, intermediate=1536),
    "minilm-l12": Shape(num_layers=12, hidden=384, heads=12, intermediate=1536),
    "bert-base": Shape(num_layers=12, hidden=768, heads=12, intermediate=3072),
    "xlm-r-large": Shape(num_layers=24, hidden=1024, heads=16, intermediate=4096),
}

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


def make_random_checkpoint(
    path: str | Path,
    arch: str = "bert",
    *,
    shape: str | Shape = "tiny",
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Path:
    """Writes a random ``...ForSequenceClassification`` checkpoint (one logit) with its tokenizer to ``path``.

    ``arch`` is ``"bert"`` or ``"xlm-roberta"``; ``shape`` a name in ``SHAPES`` or a ``Shape``.
    The vocabulary is the tokenizer's (a few hundred tokens), so even large shapes stay small on disk
    apart from their encoder layers.
    """
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    dims = SHAPES[shape] if isinstance(shape, str) else shape
    common = dict(
        hidden_size=dims.hidden,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.heads,
        intermediate_size=dims.intermediate,
        num_labels=1,
    )
    if arch == "bert":
        tokenizer = _bert_tokenizer()
        specials = dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
        config = BertConfig(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=max_position_embeddings,
                            **common)
        model_class = BertForSequenceClassification
    elif arch == "xlm-roberta":
        tokenizer = _xlm_roberta_tokenizer()
        specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", pad_token="<pad>",
                        cls_token="<s>", mask_token="<mask>")
        config = XLMRobertaConfig(vocab_size=tokenizer.get_vocab_size(), pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5,
                                  max_position_embeddings=max_position_embeddings + 2, **common)
        model_class = XLMRobertaForSequenceClassification
    else:
        raise ValueError(f"unknown arch {arch!r}; expected 'bert' or 'xlm-roberta'")

    path = Path(path)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith("bias"):
                parameter.normal_(0.0, 0.05, generator=generator)
    model.save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_position_embeddings,
                            **specials).save_pretrained(path)
    return path
