"""What a client ends up with from a chat completion, JSON body or SSE stream, accumulated the way
the openai SDKs accumulate a stream and normalised so that streamed and whole answers compare
equal: `{"content", "reasoning", "tool_calls": [{"name", "arguments"}], "finish_reason"}`.

The replay viewer, the expectations kept beside recordings and the tests all compare answers in
this shape.
"""

import json
from typing import Any

from ..api.chat_completions import accumulate as accumulate_deltas
from ..api.sse import SseDecoder

FIELDS = ("content", "reasoning", "tool_calls", "finish_reason")


def sse_chunks(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of an SSE body, framed as the filter frames them; `[DONE]` and comments
    left out."""
    decoder = SseDecoder()
    return [
        json.loads(event.data)
        for event in decoder.feed(body) + decoder.flush()
        if event.data and event.data.strip() != "[DONE]"
    ]


def accumulate(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """Fold choice 0's deltas into one message, as the filter folds them; returns (message,
    finish_reason)."""
    deltas: list[dict[str, Any]] = []
    finish_reason = None
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                deltas.append(choice.get("delta") or {})
                finish_reason = choice.get("finish_reason") or finish_reason
    return accumulate_deltas(deltas), finish_reason


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
