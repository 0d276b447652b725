"""The user guide's score examples under the published client, sie-sdk 0.10.1 (Python >= 3.12, no sie import).

Run by test_sdk_compat.py in its own virtual environment: ``python sdk_examples.py URL MODEL``. The examples are
the guide's (how-to-rerank-with-sie.txt) word for word, except that the server address and the model id come
from the command line (the guide's BAAI/bge-reranker-v2-m3 is not installed here). Prints one JSON object
with what each step got back, for the test to check.
"""

import json
import re
import sys
import threading
import time

import httpx
from sdk_log import ClientLog
from sie_sdk import InputTooLongError, RequestError, SIEClient
from sie_sdk.types import Item

URL, MODEL = sys.argv[1], sys.argv[2]
out = {}


retries = ClientLog()  # the client's log lines about retrying and about version skew

# --- The guide: "SIE's score primitive wraps this in a single API call"
client = SIEClient(URL)
query = Item(text="What is machine learning?")
items = [
    Item(text="Machine learning is a subset of AI that learns from data."),
    Item(text="The weather forecast predicts rain tomorrow."),
    Item(text="Deep neural networks power modern ML systems."),
]
result = client.score(MODEL, query, items)
for entry in result["scores"]:
    print(f"Rank {entry['rank']}: {entry['score']:.3f}", file=sys.stderr)
out["basic"] = result

# --- The guide: "Stage 2: accurate reranking of those candidates" (stage 1's vector search replaced by a list)
query_text = "What is machine learning?"
top_100_docs = [{"text": f"Document {i}: machine learning learns patterns from data."} if i % 7 == 0
                else {"text": f"Document {i}: a recipe for bread with flour, water and salt."} for i in range(100)]
result = client.score(
    MODEL,
    query=Item(text=query_text),
    items=[Item(id=f"doc-{i}", text=doc["text"]) for i, doc in enumerate(top_100_docs)]
)
top_10_ids = [entry["item_id"] for entry in result["scores"][:10]]
out["stage2"] = {"result": result, "top_10_ids": top_10_ids}

# --- The guide: "Assign IDs to your items"
query = Item(id="q1", text="What is Python?")
items = [
    Item(id="doc-1", text="Python is a programming language."),
    Item(id="doc-2", text="Snakes are reptiles."),
    Item(id="doc-3", text="Python was created by Guido van Rossum."),
]
result = client.score(MODEL, query, items)
for entry in result["scores"]:
    print(f"{entry['item_id']}: rank={entry['rank']}, score={entry['score']:.3f}", file=sys.stderr)
out["ids"] = result

# --- The client's model lookups: the list, and one model by name
out["models"] = {"listed": [model["name"] for model in client.list_models()], "one": client.get_model(MODEL)}


# --- Errors arrive as the client's typed exceptions.
def error_of(call):
    try:
        call()
    except InputTooLongError as error:
        return {"type": "InputTooLongError", "is_request_error": True, "status": error.status_code,
                "code": error.code, "message": str(error)}
    except RequestError as error:
        return {"type": "RequestError", "is_request_error": True, "status": error.status_code, "code": error.code,
                "message": str(error)}
    return None


out["errors"] = {
    "unknown_option": error_of(lambda: client.score(MODEL, Item(text="q"), [Item(text="a")], options={"beam": 2})),
    "too_long": error_of(lambda: client.score(MODEL, Item(text="q"), [Item(text="word " * 1000)],
                                              options={"truncate": False})),
    "guide_model_not_installed": error_of(lambda: client.score("BAAI/bge-reranker-v2-m3", Item(text="q"),
                                                               [Item(text="a")])),
    "too_many_items": error_of(lambda: client.score(MODEL, Item(text="q"), [Item(text="a")] * 1001)),
    "bad_item": error_of(lambda: client.score(MODEL, Item(text="q"), [Item(text="a"), Item(id="x")])),
}

# --- 503 QUEUE_FULL: the server under test admits one waiting request. Two long requests fill it (one runs,
# one waits, as its queue-depth metric shows); the guide's call then gets 503 QUEUE_FULL, and the client
# retries until it is served.
def queue_depth():
    metrics = httpx.get(f"{URL}/metrics").text
    found = re.search(rf'^sie_queue_depth{{model="{re.escape(MODEL)}"[^}}]*}} (\S+)', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# 200 pairs of ~62 tokens: about 1 s of work at 200 pairs/s (bf16 with sie's CPU attention kernel on a 2-core EPYC),
# where 64 pairs finished before the second request arrived.
heavy = [Item(text="machine learning " * 30) for _ in range(200)]
background = [threading.Thread(target=lambda: SIEClient(URL).score(MODEL, Item(text="q"), heavy)) for _ in range(2)]
background[0].start()
time.sleep(0.1)
background[1].start()
deadline = time.monotonic() + 60
while queue_depth() < 1:
    if time.monotonic() > deadline:
        sys.exit("the queue never filled: the long requests finished before the test could use them")
    time.sleep(0.005)
out["skew_warnings"] = [m for m in retries.messages if "version" in m.lower()]
retries.messages.clear()
started = time.monotonic()
result = client.score(MODEL, Item(text="What is machine learning?"), [Item(text="ML learns from data.")])
out["queue_full"] = {"result": result, "seconds": time.monotonic() - started,
                     "retries": [m for m in retries.messages if "backpressure" in m.lower()]}
for thread in background:
    thread.join()
print(json.dumps(out))
