"""Cohere's Python client (v1 ``Client`` and v2 ``ClientV2``) against our server, as users point it at a custom
base URL. Run by test_sdk_compat.py in the clients' virtual environment: ``python cohere_examples.py URL MODEL``.
Prints one JSON object with what each call got back.
"""

import json
import sys

import cohere

URL, MODEL = sys.argv[1], sys.argv[2]
documents = ["Python is a programming language.", "Snakes are reptiles.", "Python was created by Guido van Rossum."]
out = {}

v1 = cohere.Client(api_key="unused", base_url=URL)
response = v1.rerank(model=MODEL, query="What is Python?", documents=documents, top_n=2, return_documents=True)
out["v1"] = [{"index": r.index, "relevance_score": r.relevance_score, "document": r.document.text}
             for r in response.results]

v2 = cohere.ClientV2(api_key="unused", base_url=URL)
response = v2.rerank(model=MODEL, query="What is Python?", documents=documents, top_n=3)
out["v2"] = [{"index": r.index, "relevance_score": r.relevance_score} for r in response.results]

try:
    v2.rerank(model="rerank-english-v3.0", query="q", documents=["a"])
except cohere.core.ApiError as error:
    out["unknown_model"] = {"type": type(error).__name__, "status": error.status_code}
print(json.dumps(out))
