"""sie-sdk 0.10.1 scoring a decoder reranker (a Qwen3-Reranker recipe) with and without an instruction.

Run by test_sdk_compat.py in the clients' virtual environment: ``python sdk_decoder_examples.py URL MODEL``.
Prints one JSON object, the score results by instruction, for the test to check against the engine.
"""

import json
import sys

from sie_sdk import SIEClient
from sie_sdk.types import Item

URL, MODEL = sys.argv[1], sys.argv[2]
client = SIEClient(URL)
query = Item(id="q1", text="what is python")
items = [Item(id="doc-1", text="python is a programming language"), Item(id="doc-2", text="snakes are reptiles"),
         Item(id="doc-3", text="python was created by guido van rossum")]
out = {
    "default": client.score(MODEL, query, items),
    "snakes": client.score(MODEL, query, items, instruction="Find documents about snakes"),
}
print(json.dumps(out))
