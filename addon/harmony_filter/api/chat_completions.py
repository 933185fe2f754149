"""Events -> OpenAI Chat Completions shapes.

One encoder turns events into `delta` objects; a non-streaming `message` is those deltas
accumulated the way a client accumulates a stream. So both paths share every decision (how
reasoning is named, how calls are numbered, what finish_reason says) and cannot disagree.
"""

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..events import Content
from ..events import Event
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..events import ToolCallEnd

REASONING_MODES = ("both", "reasoning_content", "reasoning", "think", "drop")
TOOL_MODES = ("openai", "text", "drop")
_REASONING_KEYS: dict[str, tuple[str, ...]] = {
    "both": ("reasoning_content", "reasoning"),
    "reasoning_content": ("reasoning_content",),
    "reasoning": ("reasoning",),
    "drop": (),
}
"""The delta keys reasoning goes out under, each with the text as is (all modes but `think`)."""

Delta = dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutputStyle:
    """How the client wants reasoning and tool calls (the `harmony_reasoning`/`harmony_tools`
    options)."""

    reasoning: str = "both"
    tools: str = "openai"


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class DeltaEncoder:
    """Encode one choice's events as chat.completion.chunk deltas."""

    def __init__(self, style: OutputStyle) -> None:
        self.style = style
        self.calls = 0
        """Tool calls emitted as OpenAI tool_calls."""
        self._index = -1
        self._think_open = False

    def encode(self, events: list[Event]) -> list[Delta]:
        deltas: list[Delta] = []
        for event in events:
            delta = self._encode_one(event)
            if delta:
                _append_merged(deltas, delta)
        return deltas

    def finish(self) -> list[Delta]:
        """Deltas that close what is open at the end of the choice."""
        return self._close_think()

    def steady_keys(self, kind: type[Content] | type[Reasoning]) -> tuple[str, ...] | None:
        """The delta keys a text event of this kind is encoded under, each with the text as is,
        when encoding it changes nothing here (None: it would open or close `<think>`)."""
        if kind is Content:
            return None if self._think_open else ("content",)
        if self.style.reasoning == "think":
            return ("content",) if self._think_open else None
        return _REASONING_KEYS[self.style.reasoning]

    def finish_reason(self, upstream: str | None) -> str:
        if upstream == "length":
            return "length"
        if self.calls:
            return "tool_calls"
        if upstream in (None, "tool_calls", "function_call"):
            return "stop"
        return upstream

    def _encode_one(self, event: Event) -> Delta | None:
        match event:
            case Reasoning(text):
                return self._reasoning(text)
            case Content(text):
                return self._content(text)
            case ToolCallBegin(name, call_id):
                return self._begin(name, call_id)
            case ToolCallArgs(text):
                return self._args(text)
            case ToolCallEnd():
                return {"content": "\n```\n"} if self.style.tools == "text" else None
        return None

    def _reasoning(self, text: str) -> Delta | None:
        if self.style.reasoning == "think":
            if self._think_open:
                return {"content": text}
            self._think_open = True
            return {"content": "<think>" + text}
        return dict.fromkeys(_REASONING_KEYS[self.style.reasoning], text) or None

    def _content(self, text: str) -> Delta:
        if self._think_open:
            self._think_open = False
            return {"content": "</think>" + text}
        return {"content": text}

    def _begin(self, name: str, call_id: str | None) -> Delta | None:
        mode = self.style.tools
        if mode == "drop":
            return None
        if mode == "text":
            return self._content(f"\n\n**Tool call:** `{name}`\n```json\n")
        closing = self._close_think()
        self.calls += 1
        self._index += 1
        call = {
            "index": self._index,
            "id": call_id or new_call_id(),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        delta: Delta = {"tool_calls": [call]}
        if closing:
            delta["content"] = closing[0]["content"]
        return delta

    def _args(self, text: str) -> Delta | None:
        mode = self.style.tools
        if mode == "drop" or (mode == "openai" and self._index < 0):
            return None
        if mode == "text":
            return {"content": text}
        return {"tool_calls": [{"index": self._index, "function": {"arguments": text}}]}

    def _close_think(self) -> list[Delta]:
        if not self._think_open:
            return []
        self._think_open = False
        return [{"content": "</think>"}]


def _append_merged(deltas: list[Delta], delta: Delta) -> None:
    """Append, joining onto the previous delta when both only carry the same text fields
    (fewer, larger chunks; the meaning is unchanged)."""
    if deltas:
        last = deltas[-1]
        if last.keys() == delta.keys() and "tool_calls" not in delta:
            for key, value in delta.items():
                last[key] += value
            return
        if _is_args(last) and _is_args(delta):
            last_call, call = last["tool_calls"][0], delta["tool_calls"][0]
            if last_call["index"] == call["index"]:
                last_call["function"]["arguments"] += call["function"]["arguments"]
                return
    deltas.append(delta)


def _is_args(delta: Delta) -> bool:
    return delta.keys() == {"tool_calls"} and len(delta["tool_calls"]) == 1


def accumulate(deltas: list[Delta]) -> dict[str, Any]:
    """Fold deltas into one assistant message, as an OpenAI client folds a stream."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        for key in ("content", "reasoning_content", "reasoning"):
            if key in delta and delta[key] is not None:
                message[key] = (message.get(key) or "") + delta[key]
        for call in delta.get("tool_calls") or ():
            slot = calls.setdefault(
                call["index"],
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    elif message["content"] is None:
        message["content"] = ""
    return message


def make_chunk(
    envelope: dict[str, Any], index: int, delta: Delta, finish_reason: str | None
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return envelope | {"choices": [choice]}


def message_deltas(message: dict[str, Any]) -> list[Delta]:
    """A whole assistant message as deltas (the inverse of `accumulate`)."""
    deltas: list[Delta] = [{"role": "assistant"}]
    for key in ("reasoning_content", "reasoning", "content"):
        if message.get(key):
            deltas.append({key: message[key]})
    for index, call in enumerate(message.get("tool_calls") or ()):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    return deltas


def completion_as_sse(body: dict[str, Any]) -> bytes:
    """A chat.completion as the event stream a streaming client expects."""
    envelope = {k: v for k, v in body.items() if k not in ("choices", "usage")}
    envelope["object"] = "chat.completion.chunk"
    events = []
    for choice in body.get("choices") or ():
        deltas = message_deltas(choice.get("message") or {})
        for position, delta in enumerate(deltas):
            last = position == len(deltas) - 1
            finish = choice.get("finish_reason") if last else None
            events.append(make_chunk(envelope, choice.get("index", 0), delta, finish))
    if body.get("usage"):
        events.append(envelope | {"choices": [], "usage": body["usage"]})
    lines = [
        b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n" for event in events
    ]
    return b"".join(lines) + b"data: [DONE]\n\n"
