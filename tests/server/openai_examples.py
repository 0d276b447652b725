"""OpenAI's Python client against our server's /v1/embeddings, as users point it at a custom base URL. Run by
test_sdk_compat.py in the clients' virtual environment: ``python openai_examples.py URL MODEL``. Prints one JSON
object with what each call got back.
"""

import json
import sys

import openai

URL, MODEL = sys.argv[1], sys.argv[2]
client = openai.OpenAI(api_key="unused", base_url=f"{URL}/v1")
out = {}

# The client's default: it asks for base64 and decodes it into floats itself.
response = client.embeddings.create(model=MODEL, input=["What is machine learning?", "rain in paris"])
out["default"] = {"model": response.model, "vectors": [item.embedding for item in response.data],
                  "indices": [item.index for item in response.data],
                  "usage": {"prompt_tokens": response.usage.prompt_tokens,
                            "total_tokens": response.usage.total_tokens}}
response = client.embeddings.create(model=MODEL, input="What is machine learning?", encoding_format="float")
out["float"] = [item.embedding for item in response.data]
response = client.embeddings.create(model=MODEL, input="What is machine learning?", dimensions=8)
out["dimensions"] = [item.embedding for item in response.data]
try:
    client.embeddings.create(model="text-embedding-3-small", input="a")
except openai.APIStatusError as error:
    out["unknown_model"] = {"type": type(error).__name__, "status": error.status_code}
print(json.dumps(out))
