"""What a client ends up with, from a chat.completion body or an SSE stream of chunks,
normalised so that streamed and non-streamed answers compare equal."""

import json
from typing import Any


def normalise(message: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    calls = []
    for call in message.get("tool_calls") or ():
        arguments = call["function"]["arguments"]
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
        calls.append({"name": call["function"]["name"], "arguments": arguments})
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    return {
        "content": message.get("content") or None,
        "reasoning": reasoning,
        "tool_calls": calls,
        "finish_reason": finish_reason,
    }


def from_json(body: dict[str, Any]) -> dict[str, Any]:
    choice = body["choices"][0]
    return normalise(choice["message"], choice.get("finish_reason"))


def sse_chunks(body: bytes) -> list[dict[str, Any]]:
    chunks = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if data and data != b"[DONE]":
            chunks.append(json.loads(data))
    return chunks


def from_sse(body: bytes) -> dict[str, Any]:
    """Accumulate the deltas of choice 0 the way the openai SDKs do."""
    message: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    for chunk in sse_chunks(body):
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for key in ("content", "reasoning_content", "reasoning"):
                if delta.get(key):
                    message[key] = message.get(key, "") + delta[key]
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"function": {"name": "", "arguments": ""}})
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            finish_reason = choice.get("finish_reason") or finish_reason
    message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return normalise(message, finish_reason)
