"""The official `openai` Python package against a cauce gateway, streaming and not.

Run by ops/tests/openai_python.rs with CAUCE_URL set to a running `cauce up`; the
package comes from ./ops/setup (PYTHONPATH=$CAUCE_HOME/python). Exits non-zero on the
first failed check; prints one JSON line with what the Rust test compares with the
stored results.
"""

import json
import os
import sys

import openai

QUESTION = (
    "Where does a retrieval worker keep its local index, and what is stored in meta.json?"
)


def check(condition, what):
    if not condition:
        sys.exit(f"check failed: {what}")


def main():
    base = os.environ["CAUCE_URL"].rstrip("/")
    # trust_env=False: no proxy from the environment may stand between us and 127.0.0.1
    client = openai.OpenAI(
        base_url=base + "/v1",
        api_key="unused",
        max_retries=0,
        timeout=600,
        http_client=openai.DefaultHttpxClient(trust_env=False),
    )
    messages = [{"role": "user", "content": QUESTION}]

    models = client.models.list()
    check(
        any(m.id == "smollm2-135m-instruct" for m in models.data),
        "models.list names the served model",
    )

    whole = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=messages, max_tokens=8, temperature=0
    )
    check(whole.object == "chat.completion", "a chat.completion object")
    check(whole.id.startswith("chatcmpl-"), "a chatcmpl- id")
    check(len(whole.choices) == 1, "one choice")
    choice = whole.choices[0]
    check(choice.message.role == "assistant", "an assistant message")
    check(bool(choice.message.content), "some content")
    check(choice.finish_reason in ("stop", "length"), "a finish reason")
    check(1 <= whole.usage.completion_tokens <= 8, "usage within max_tokens")
    check(
        whole.usage.total_tokens
        == whole.usage.prompt_tokens + whole.usage.completion_tokens,
        "usage adds up",
    )
    extension = (whole.model_extra or {}).get("cauce") or {}
    sources = extension.get("sources") or []
    check(
        sources and sources[0]["doc_id"] == "guide-operations",
        f"the operations guide is the first source: {sources}",
    )

    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    check(len(chunks) >= 3, "several chunks")
    check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects")
    check(len({c.id for c in chunks}) == 1, "one id for every chunk")
    check(chunks[0].choices[0].delta.role == "assistant", "the role comes first")
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    check(bool(text), "streamed content")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    check(finishes[-1] in ("stop", "length"), "the last choice has a finish reason")
    check(all(f is None for f in finishes[:-1]), "only the last choice finishes")
    usage = chunks[-1].usage
    check(usage is not None and not chunks[-1].choices, "a usage chunk at the end")
    check(1 <= usage.completion_tokens <= 8, "streamed usage within max_tokens")

    print(
        json.dumps(
            {
                "openai_version": openai.__version__,
                "whole_id": whole.id,
                "whole_text": choice.message.content,
                "stream_id": chunks[0].id,
                "stream_text": text,
                "stream_completion_tokens": usage.completion_tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
