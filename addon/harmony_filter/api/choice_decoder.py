"""Upstream choice fields -> events.

Whatever a server sends in a `message` or a `delta` (Harmony text leaked into `content`, a
`reasoning_content` or `reasoning` field, structured `tool_calls`) becomes the same events, so a
clean upstream and a broken one leave the filter through the same encoder.
"""

import json
from typing import Any

from ..events import Content
from ..events import Event
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..events import ToolCallEnd
from ..harmony.decoder import HarmonyDecoder
from ..harmony.dialects import DialectTranslator


def reasoning_text(fields: dict[str, Any]) -> str | None:
    """The reasoning a message or delta carries. vLLM may send `reasoning` and
    `reasoning_content` with the same text: take one, never both."""
    for key in ("reasoning_content", "reasoning"):
        value = fields.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class ChoiceDecoder:
    """Decode one choice, fed delta by delta (or once, with a whole message: `whole`)."""

    def __init__(self, builtin_tools: str = "drop", whole: bool = False) -> None:
        self.dialect = DialectTranslator()
        self.harmony = HarmonyDecoder(builtin_tools, whole)
        self._call_open = False
        self._call_index: object = None

    def feed(self, fields: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        reasoning = reasoning_text(fields)
        if reasoning:
            events.append(Reasoning(reasoning))
        content = fields.get("content")
        if isinstance(content, str) and content:
            text = self.dialect.feed(content)  # marker-stripped Harmony, <reasoning> tags
            if text:
                events += self.harmony.feed(text)
        calls = fields.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._structured_call(call, events)
        return events

    def close(self) -> list[Event]:
        text = self.dialect.close()
        events = self.harmony.feed(text) if text else []
        events += self.harmony.close()
        if self._call_open:
            self._call_open = False
            events.append(ToolCallEnd())
        return events

    def steady_text_event(self) -> type[Content] | type[Reasoning] | None:
        """What a `content` piece without `<` becomes when decoding it would change nothing."""
        return self.harmony.steady_body_event() if self.dialect.passes_through else None

    @property
    def recoveries(self) -> list[str]:
        """What the decoding worked around: a dialect it translated, Harmony damage."""
        dialect = [self.dialect.dialect] if self.dialect.dialect else []
        return dialect + self.harmony.recoveries

    def _structured_call(self, call: dict[str, Any], events: list[Event]) -> None:
        """An upstream-parsed call: the first piece has a name (or a new id); later pieces, often
        under the same index, carry more arguments."""
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        name = function.get("name")
        index = call.get("index")
        starts = (isinstance(name, str) and name) or (call.get("id") and index != self._call_index)
        if starts or not self._call_open:
            if self._call_open:
                events.append(ToolCallEnd())
            call_id = call.get("id")
            events.append(
                ToolCallBegin(
                    name if isinstance(name, str) else "",
                    call_id if isinstance(call_id, str) and call_id else None,
                )
            )
            self._call_open, self._call_index = True, index
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if isinstance(arguments, str) and arguments:
            events.append(ToolCallArgs(arguments))
