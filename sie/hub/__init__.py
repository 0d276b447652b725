"""Provisioning: where a model's folder is (``resolve``), and the default model's fetch and conversion.

``resolve_model`` turns a model id or path into a local folder; ``default_model`` downloads and converts
the default cross-encoder without a model hub; ``onnx_convert`` reads its int8 ONNX graph.
"""

from sie.hub.resolve import folder_state, is_model_dir, local_models, models_dir, offline, resolve_model

__all__ = ["folder_state", "is_model_dir", "local_models", "models_dir", "offline", "resolve_model"]
