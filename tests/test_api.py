"""The module-level API's model caches."""

from __future__ import annotations

import torch

import sie
import sie.api


def test_a_blank_model_name_loads_and_caches_the_default_model(monkeypatch):
    """``sie.load("")`` is cached under the default model's key: it must load the default model, not the folder
    ``""`` names (the working directory), which ``sie.load()`` and ``sie.rerank`` would then be given."""
    loads = []

    class Loaded:
        def __init__(self, model, **kwargs):
            loads.append(model)

    monkeypatch.setattr(sie.api, "Reranker", Loaded)
    monkeypatch.setattr(sie.api, "_loaded", {})
    assert sie.load("") is sie.load() is sie.load(None)
    assert loads == [sie.DEFAULT_MODEL]


def test_one_model_as_loaded_is_one_cache_entry(monkeypatch, tmp_path):
    """A path and its string, a torch dtype and its name: one copy in memory, not one per spelling."""
    loads = []

    class Loaded:
        def __init__(self, model, **kwargs):
            loads.append((model, kwargs))

    for engine, cache, load in (("Reranker", "_loaded", sie.load), ("Encoder", "_encoders", sie.load_encoder)):
        monkeypatch.setattr(sie.api, engine, Loaded)
        monkeypatch.setattr(sie.api, cache, {})
        loads.clear()
        first = load(tmp_path, dtype=torch.bfloat16)
        assert load(str(tmp_path), dtype="bfloat16") is first and load(str(tmp_path), dtype="torch.bfloat16") is first
        assert load(tmp_path, dtype="float32") is not first and len(loads) == 2, engine
