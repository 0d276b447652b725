"""The int8 mode on every family: the engine's logits against transformers run in float64 with each linear layer
doing the same quantized arithmetic (int8 weights per channel, int8 activations per token, exact integer sums).
What is checked is the exactness of the quantized path, not its closeness to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from sie import Reranker, UnsupportedModelError
from sie.quantization import QMAX, Int8Linear, quantize_rows
from sie.testing import make_random_checkpoint, random_pairs
from sie.models import build_model, family_of
from sie.testing.decoders import left_padded_logits

DOCUMENT_WORDS = (0, 1, 4, 12, 30, 80)
# (arch, shape, make_random_checkpoint options, recipe)
CHECKPOINTS = {
    "bert": ("bert", "tiny", {}, None),
    "xlm-roberta": ("xlm-roberta", "tiny", {}, None),
    "modernbert": ("modernbert", "tiny-modernbert", {"config": {"local_attention": 16}}, None),
    "qwen3-lm": ("qwen3", "tiny-gqa", {}, "qwen3-reranker"),
    # Quantized from its bf16 weights as stored (bf16 -> fp32 is exact, so the integers are fp32's).
    "qwen3-lm-bf16": ("qwen3", "tiny-gqa", {"dtype": torch.bfloat16}, "qwen3-reranker"),
    "qwen2-classifier": ("qwen2", "tiny-gqa", {"classifier": True}, "mxbai-rerank-v2"),
}


class QuantizedArithmetic(nn.Module):
    """A float64 linear layer computing what the int8 mode computes: ``x`` quantized per token, the weight per
    output channel (the engine's own integers), integer sums (exact in float64 at these sizes), then both scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight.detach().float())
        self.weight = weight.double()
        self.scale = scale.double()
        self.bias = None if linear.bias is None else linear.bias.detach().double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        amax = x.abs().amax(dim=-1, keepdim=True)
        x_scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
        quantized = torch.round(x / x_scale).clamp(-QMAX, QMAX)
        out = (quantized @ self.weight.T) * x_scale * self.scale
        return out if self.bias is None else out + self.bias


def with_quantized_arithmetic(model: nn.Module) -> nn.Module:
    """``model`` in float64 with every ``nn.Linear`` replaced by QuantizedArithmetic."""
    model = model.double().eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, QuantizedArithmetic(module))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    return {name: make_random_checkpoint(root / name, arch, shape=shape, seed=index, **options)
            for index, (name, (arch, shape, options, _)) in enumerate(CHECKPOINTS.items())}


def reference_logits(name: str, path, reranker: Reranker, pairs) -> np.ndarray:
    _, _, options, recipe = CHECKPOINTS[name]
    if recipe is None:
        model = with_quantized_arithmetic(AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32))
        queries, documents = (list(texts) for texts in zip(*pairs, strict=True))
        inputs = AutoTokenizer.from_pretrained(path)(queries, documents, truncation="only_second", padding=True,
                                                     max_length=reranker.max_length, return_tensors="pt")
        with torch.inference_mode():
            return model(**inputs).logits[:, 0].float().numpy()
    queries, documents = (list(texts) for texts in zip(*pairs, strict=True))
    encoded = reranker.encode(queries, documents)
    sequences = [ids.tolist() for ids in np.split(encoded.input_ids, np.cumsum(encoded.lengths)[:-1])]
    model_class = AutoModelForSequenceClassification if options.get("classifier") else AutoModelForCausalLM
    model = with_quantized_arithmetic(model_class.from_pretrained(path, dtype=torch.float32))
    score_ids = None if options.get("classifier") else reranker.tokenizer.score_token_ids
    pad_id = AutoTokenizer.from_pretrained(path).pad_token_id
    return left_padded_logits(model, sequences, pad_id, score_ids, batch_size=len(pairs))


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_int8_logits_equal_the_same_quantized_arithmetic_in_float64(checkpoints, name, seed):
    recipe = CHECKPOINTS[name][3]
    path = checkpoints[name]
    pairs = random_pairs(seed, DOCUMENT_WORDS)
    reranker = Reranker(str(path), device="cpu", dtype=torch.int8, recipe=recipe, max_length=256,
                        max_batch_tokens=400)
    assert any(isinstance(module, Int8Linear) for module in reranker.model.modules())
    assert not any(isinstance(module, nn.Linear) for module in reranker.model.modules())
    ours = reranker.predict(pairs, activation_fn=nn.Identity())
    expected = reference_logits(name, path, reranker, pairs)
    float_logits = Reranker(str(path), device="cpu", dtype=torch.float32, recipe=recipe,
                            max_length=256).predict(pairs, activation_fn=nn.Identity())
    scale = np.abs(expected).max()
    errors, quantization_effects = np.abs(ours - expected) / scale, np.abs(float_logits - expected) / scale
    # A value within float rounding of a half step may round the other way in float64: one step of the last
    # projection's input moves a logit by ~1e-3 (about 1 pair in 100 here). The median pair is exact.
    assert np.median(errors) <= 1e-5, f"int8 vs its float64 arithmetic: {errors} (fp32 vs it {quantization_effects})"
    assert errors.max() <= 0.05, f"int8 vs its float64 arithmetic: {errors}"
    # The check tells the int8 path from the fp32 one: quantization moves the logits far more than the bar.
    assert np.median(quantization_effects) >= 1e-4, quantization_effects


def test_int8_is_refused_off_the_cpu_before_anything_loads(checkpoints):
    path = checkpoints["bert"]
    config = AutoConfig.from_pretrained(path)
    with pytest.raises(UnsupportedModelError, match="int8 runs on the CPU only, not on cuda"):
        build_model(path, family_of(config), config, torch.device("cuda"), torch.int8, "auto", head_dim=16)


def test_auto_device_means_the_cpu_for_int8(monkeypatch):
    from sie.reranker import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", torch.int8).type == "cpu"
    assert resolve_device("auto", torch.float16).type == "cuda"


def test_a_default_model_folder_without_its_integers_says_how_to_add_them(checkpoints, tmp_path, caplog):
    import shutil

    folder = shutil.copytree(checkpoints["bert"], tmp_path / "converted-by-an-older-sie")
    (folder / "sie_source.json").write_text("{}", encoding="utf-8")
    with caplog.at_level("WARNING", logger="sie.models.loading"):
        Reranker(str(folder), device="cpu", dtype=torch.int8)
    assert "sie models fetch-default --force" in caplog.text


def test_int8_attention_runs_in_bf16_where_the_cpu_kernel_does(sie_cpu_ops, tmp_path, seed, monkeypatch):
    """With 32-wide heads (the C++ kernel's) the int8 mode's attention is the bf16 kernel unless the torch backend
    is asked for, and when "cpu" is (the argument or SIE_BACKEND); the logits then differ from fp32 attention's by
    bf16 rounding of q, k, v and the output only."""
    from sie.testing import Shape

    path = make_random_checkpoint(tmp_path / "bert", "bert", shape=Shape(num_layers=2, hidden=64, heads=2,
                                                                         intermediate=128), seed=seed % 1000)
    pairs = random_pairs(seed, DOCUMENT_WORDS * 4)
    logits = {}
    for backend in ("auto", "torch", "cpu"):
        reranker = Reranker(str(path), device="cpu", dtype=torch.int8, backend=backend, max_length=256)
        assert reranker.backends == {"attention": "torch" if backend == "torch" else "cpu", "layer_norm": "torch",
                                     "gelu": "torch"}
        logits[backend] = reranker.predict(pairs, activation_fn=nn.Identity())
    np.testing.assert_array_equal(logits["cpu"], logits["auto"])
    monkeypatch.setenv("SIE_BACKEND", "CPU")
    assert Reranker(str(path), device="cpu", dtype=torch.int8, max_length=256).backends["attention"] == "cpu"
    difference = np.abs(logits["auto"] - logits["torch"]) / np.abs(logits["torch"]).max()
    # A bf16 rounding can move a value across an int8 step, which the next layers carry: over 25 seeds the median
    # pair moved by 5e-7 to 2.9e-3 of the logit scale, but the largest by up to 0.43 (a bar of 0.1 on it failed CI
    # at 0.12). A broken kernel moves the median pair; the largest difference only shows the kernel ran.
    assert difference.max() > 0 and np.median(difference) <= 0.01, difference
