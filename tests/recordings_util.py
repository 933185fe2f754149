"""Helpers for tests that use the recordings: where they are, what each expects, and what a client
makes of a response (accumulated the way the openai SDK accumulates a stream)."""

import json
from pathlib import Path
from typing import Any

RECORDINGS_DIR = Path(__file__).resolve().parent.parent / "recordings"


def recording_paths() -> list[Path]:
    return sorted(RECORDINGS_DIR.glob("*.flow"))


def expected_for(path: Path) -> dict[str, Any]:
    return json.loads(
        path.with_name(path.name.removesuffix(".flow") + ".expected.json").read_text()
    )


def sse_chunks(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of an SSE body, `[DONE]` and comments left out."""
    chunks = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if data and data.strip() != b"[DONE]":
            chunks.append(json.loads(data))
    return chunks


def accumulate_stream(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
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
    """The expected.json shape: empty strings count as null, arguments parsed. The two
    reasoning fields may both be present but must then hold the same text."""
    reasonings = {message[k] for k in ("reasoning_content", "reasoning") if message.get(k)}
    assert len(reasonings) <= 1, f"reasoning fields disagree: {reasonings}"
    return {
        "content": message.get("content") or None,
        "reasoning": reasonings.pop() if reasonings else None,
        "tool_calls": [
            {"name": call["function"]["name"], "arguments": parse(call["function"]["arguments"])}
            for call in message.get("tool_calls") or []
        ],
        "finish_reason": finish_reason,
    }


def normalise_body(body: bytes, event_stream: bool) -> dict[str, Any]:
    """What a client gets from a chat completion body (JSON or SSE), normalised."""
    if event_stream:
        return normalise(*accumulate_stream(sse_chunks(body)))
    choice = json.loads(body)["choices"][0]
    return normalise(choice.get("message") or {}, choice.get("finish_reason"))


def parse(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
