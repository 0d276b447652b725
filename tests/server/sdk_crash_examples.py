"""50 sequential ``client.score`` calls with the published client, sie-sdk 0.10.1, while the test kills the worker.

Run by test_worker_crash.py in the clients' virtual environment: ``python sdk_crash_examples.py URL MODEL DOCUMENTS``.
Prints ``call N`` before each call (the test kills the worker after one of them), then one JSON line: every
call's scores by item id, and the client's retry log lines.
"""

import json
import sys

from sdk_log import ClientLog
from sie_sdk import SIEClient
from sie_sdk.types import Item

URL, MODEL, DOCUMENTS = sys.argv[1], sys.argv[2], int(sys.argv[3])
CALLS = 50


retries = ClientLog()  # the client's log lines about retrying and about version skew

client = SIEClient(URL)
results = []
for call in range(CALLS):
    print(f"call {call}", flush=True)
    query = Item(text=f"question {call} about rivers and the history of science")
    items = [Item(id=f"d{i}", text=f"document {i} of call {call}: " + "water energy river city history " * (1 + i % 9))
             for i in range(DOCUMENTS)]
    result = client.score(MODEL, query, items)
    results.append({entry["item_id"]: entry["score"] for entry in result["scores"]})
print(json.dumps({"results": results, "retries": retries.messages}), flush=True)
