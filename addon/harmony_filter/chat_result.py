"""What a client ends up with from a chat completion, JSON body or SSE stream, accumulated the way
the openai SDKs accumulate a stream and normalised so that streamed and whole answers compare
equal: `{"content", "reasoning", "tool_calls": [{"name", "arguments"}], "finish_reason"}`.

The replay viewer, the expectations kept beside recordings and the tests all compare answers in
this shape.
"""

import json
from typing import Any

FIELDS = ("content", "reasoning", "tool_calls", "finish_reason")


def sse_chunks(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of an SSE body; `[DONE]` and comments left out."""
    chunks = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if data and data.strip() != b"[DONE]":
            chunks.append(json.loads(data))
    return chunks


def accumulate(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """Fold choice 0's deltas into one message; returns (message, finish_reason)."""
    message: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for key in ("content", "reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str):
                    message[key] = message.get(key, "") + delta[key]
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(call["index"], {"function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            finish_reason = choice.get("finish_reason") or finish_reason
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message, finish_reason


def normalise(message: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """Empty strings count as null and arguments are parsed. The two reasoning fields may both be
    present but must then hold the same text (ValueError otherwise: a client would show one or
    the other)."""
    reasonings = {message[k] for k in ("reasoning_content", "reasoning") if message.get(k)}
    if len(reasonings) > 1:
        raise ValueError(f"reasoning_content and reasoning disagree: {sorted(reasonings)}")
    return {
        "content": message.get("content") or None,
        "reasoning": reasonings.pop() if reasonings else None,
        "tool_calls": [
            {
                "name": call["function"]["name"],
                "arguments": parse_arguments(call["function"]["arguments"]),
            }
            for call in message.get("tool_calls") or []
        ],
        "finish_reason": finish_reason,
    }


def parse_arguments(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def from_json(body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion body (KeyError, IndexError or TypeError if it is none)."""
    choice = body["choices"][0]
    return normalise(choice.get("message") or {}, choice.get("finish_reason"))


def from_sse(body: bytes) -> dict[str, Any]:
    return normalise(*accumulate(sse_chunks(body)))


def client_result(body: bytes, event_stream: bool) -> dict[str, Any]:
    """What a client gets from a response body; ValueError when it is no chat completion."""
    try:
        return from_sse(body) if event_stream else from_json(json.loads(body))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"not a chat completion ({type(e).__name__}: {e})") from e
