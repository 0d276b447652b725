"""The module-level API's model caches."""

from __future__ import annotations

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
