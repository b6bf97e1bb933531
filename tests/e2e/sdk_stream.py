"""Streams one chat completion with the official openai SDK and reports how it ended.

Run by the end-to-end suite: `python sdk_stream.py BASE_URL API_KEY MODEL`. Prints one line:
`completed N` or `APIError after N chunks: <class>: <message>`.
"""

import sys

import openai

base_url, api_key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=20)
chunks = 0
try:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
    print(f"completed {chunks}")
except openai.APIError as e:
    print(f"APIError after {chunks} chunks: {type(e).__name__}: {e}")
