"""What the filter did to one response: for logs, flow.metadata, metrics and the reasoning cache."""

import io
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ..api.chat_completions import Delta
from ..events import Event
from ..events import Reasoning

REASONING_KEEP_LIMIT = 64 * 1024
"""How much reasoning we keep per response (for re-injection); the stream itself is not limited."""


@dataclass(slots=True)
class Outcome:
    recoveries: list[str] = field(default_factory=list)
    """Harmony damage the decoder worked around."""
    repairs: list[str] = field(default_factory=list)
    """Repairs that needed the request (tool names, arguments, wrapped answers, …)."""
    tool_call_ids: list[str] = field(default_factory=list)
    reasoning_kept: int = 0
    """Characters of reasoning kept (see `reasoning`)."""
    content_chars: int = 0
    finish_reason: str | None = None
    first_output_at: float | None = None
    """Wall-clock time the first content or tool call went to the client."""
    usage: dict[str, Any] | None = None
    _reasoning: io.StringIO = field(default_factory=io.StringIO)

    def observe(self, events: list[Event], deltas: list[Delta]) -> None:
        for event in events:
            if isinstance(event, Reasoning):
                self.keep_reasoning(event.text)
        for delta in deltas:
            content = delta.get("content")
            if content:
                self.count_content(content)
            elif self.first_output_at is None and delta.get("tool_calls"):
                self.first_output_at = time.time()
            for call in delta.get("tool_calls") or ():
                if call.get("id"):
                    self.tool_call_ids.append(call["id"])

    def keep_reasoning(self, text: str) -> None:
        if self.reasoning_kept < REASONING_KEEP_LIMIT:
            self.reasoning_kept += self._reasoning.write(
                text[: REASONING_KEEP_LIMIT - self.reasoning_kept]
            )

    def count_content(self, text: str) -> None:
        """Non-empty content went to the client."""
        self.content_chars += len(text)
        if self.first_output_at is None:
            self.first_output_at = time.time()

    @property
    def reasoning(self) -> str:
        """The reasoning kept, up to REASONING_KEEP_LIMIT characters."""
        return self._reasoning.getvalue()

    def add_recoveries(self, names: list[str]) -> None:
        _extend_unique(self.recoveries, names)

    def add_repairs(self, names: list[str]) -> None:
        _extend_unique(self.repairs, names)

    def summary(self) -> dict[str, object]:
        return {
            "recoveries": list(self.recoveries),
            "repairs": list(self.repairs),
            "tool_calls": len(self.tool_call_ids),
            "finish_reason": self.finish_reason,
            "completion_tokens": (self.usage or {}).get("completion_tokens"),
        }


def _extend_unique(names: list[str], more: list[str]) -> None:
    names.extend(name for name in dict.fromkeys(more) if name not in names)
