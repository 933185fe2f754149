"""Remember the reasoning behind tool calls, so it can be given back to gpt-oss.

Cline, Roo and most IDE clients drop the reasoning of a tool-calling turn when they send the tool
result back, and gpt-oss then fails long tool chains far more often (10/10 with its reasoning
kept against 3/10 without, in a llama.cpp experiment). The response side records the reasoning
of every answer that made tool calls, keyed by the call ids the client received; the request
side looks the ids up again when the client sends the history back without it.
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Iterable


class ReasoningCache:
    """Tool-call id -> reasoning text, bounded in entries (least recently used evicted first)
    and in age (an entry older than `ttl_seconds` is never returned).

    Not thread-safe: mitmproxy runs every hook on one event loop.
    """

    def __init__(
        self,
        max_entries: int = 1024,
        ttl_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, tool_call_ids: Iterable[str], reasoning: str) -> None:
        """Store `reasoning` under each id (an empty reasoning or id is not worth storing)."""
        if not reasoning:
            return
        now = self._clock()
        self._forget_expired_oldest(now)
        for call_id in tool_call_ids:
            if not call_id:
                continue
            self._entries[call_id] = (reasoning, now)
            self._entries.move_to_end(call_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def recall(self, tool_call_id: str) -> str | None:
        """The reasoning stored under `tool_call_id`, or None when unknown or expired."""
        entry = self._entries.get(tool_call_id)
        if entry is None:
            return None
        reasoning, stored_at = entry
        if self._expired(stored_at, self._clock()):
            del self._entries[tool_call_id]
            return None
        self._entries.move_to_end(tool_call_id)
        return reasoning

    def _expired(self, stored_at: float, now: float) -> bool:
        return now - stored_at > self.ttl_seconds

    def _forget_expired_oldest(self, now: float) -> None:
        """Drop expired entries from the least recently used end, so that stale reasoning does
        not wait for the size bound to go."""
        while self._entries:
            oldest_id, (_, stored_at) = next(iter(self._entries.items()))
            if not self._expired(stored_at, now):
                return
            del self._entries[oldest_id]
