"""The guide's standard pattern and the encode API under the published client, sie-sdk 0.10.1 (Python >= 3.12, no
sie import). Run by test_sdk_compat.py in its own virtual environment:
``python sdk_encode_examples.py URL ENCODER RERANKER``.

Stage 1 is the guide's ``client.encode(..., is_query=True)`` on a bge-m3-shaped model (ENCODER stands for
BAAI/bge-m3), the vector database replaced by a dot product over 20 encoded documents; stage 2 is the guide's
``client.score`` on the top 10 (RERANKER stands for BAAI/bge-reranker-v2-m3). Prints one JSON object with what
each step got back, arrays as lists.
"""

import json
import sys

import numpy as np
from sie_sdk import RequestError, SIEClient
from sie_sdk.encoding import dense_embedding, multivector_embedding, sparse_embedding
from sie_sdk.types import Item

URL, ENCODER, RERANKER = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
client = SIEClient(URL)


def plain(result):
    """An EncodeResult with its arrays as lists and their dtypes named."""
    converted = {}
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            converted[key] = {"dtype": value.dtype.str, "values": value.tolist()}
        elif key == "sparse":
            converted[key] = {"indices": value["indices"].tolist(), "values": value["values"].tolist(),
                              "dtypes": [value["indices"].dtype.str, value["values"].dtype.str]}
        elif key not in ("timing", "request"):
            converted[key] = value
    return converted


# --- The guide: "The standard pattern is to retrieve a broad set of candidates with embeddings, then rerank only
# the top candidates with a cross-encoder". Stage 1: fast retrieval (a dot product over 20 documents stands in for
# the vector database).
query_text = "What is machine learning?"
corpus = [{"text": f"Document {i}: machine learning learns patterns from data."} if i % 4 == 0
          else {"text": f"Document {i}: a recipe for bread with flour, water and salt."} for i in range(20)]
query_embedding = client.encode(
    ENCODER,
    Item(text=query_text),
    is_query=True,
)
documents = client.encode(ENCODER, [Item(id=f"doc-{i}", text=doc["text"]) for i, doc in enumerate(corpus)])
scores = np.stack([document["dense"] for document in documents]) @ query_embedding["dense"]
top = np.argsort(-scores, kind="stable")[:10]
top_10_docs = [corpus[i] for i in top]
# Stage 2: accurate reranking of those candidates
result = client.score(
    RERANKER,
    query=Item(text=query_text),
    items=[Item(id=f"doc-{i}", text=corpus[i]["text"]) for i in top]
)
top_10_ids = [entry["item_id"] for entry in result["scores"][:10]]
out["guide"] = {"query": plain(query_embedding), "document_ids": [document.get("id") for document in documents],
                "documents": [plain(document) for document in documents], "candidates": [int(i) for i in top],
                "top_10_ids": top_10_ids, "scores": result["scores"]}

# --- Each output type, alone and together; a single Item gives one result, a list gives a list.
out["outputs"] = {
    kind: plain(client.encode(ENCODER, Item(id="x", text="python is a language"), output_types=[kind]))
    for kind in ("dense", "sparse", "multivector")
}
together = client.encode(ENCODER, [Item(text="python is a language"), Item(id="b", text="rain in paris")],
                         output_types=["dense", "sparse", "multivector"])
out["together"] = [plain(item) for item in together]
out["helpers"] = {"dense": dense_embedding(together[0]), "sparse": sparse_embedding(together[0]),
                  "multivector": multivector_embedding(together[0]["multivector"])}
out["dtypes"] = {dtype: plain(client.encode(ENCODER, Item(text="python is a language"), output_types=["dense"],
                                            output_dtype=dtype))
                 for dtype in ("float32", "float16", "int8", "uint8", "binary", "ubinary")}
out["instruction"] = plain(client.encode(ENCODER, Item(text="python"), instruction="Represent: ", is_query=True))


def error_of(call):
    try:
        call()
    except RequestError as error:
        return {"type": type(error).__name__, "status": error.status_code, "code": error.code,
                "message": str(error)}
    return None


out["errors"] = {
    "unknown_output": error_of(lambda: client.encode(ENCODER, Item(text="a"), output_types=["colbert"])),
    "reranker_encodes": error_of(lambda: client.encode(RERANKER, Item(text="a"))),
    "bad_item": error_of(lambda: client.encode(ENCODER, [Item(text="a"), Item(id="x")])),
}
print(json.dumps(out))
