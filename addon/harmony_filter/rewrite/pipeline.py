"""One choice's way through the filter: upstream fields -> events -> repairs -> OpenAI deltas.

The streaming and the non-streaming paths both drive this, so they cannot disagree, but for the
one thing only a whole answer can know (HarmonyDecoder's `whole`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ..api.chat_completions import Delta
from ..api.chat_completions import DeltaEncoder
from ..api.chat_completions import OutputStyle
from ..api.choice_decoder import ChoiceDecoder
from ..events import Reasoning
from ..fixes.repairs import Repairer
from ..fixes.repairs import RequestView
from .outcome import Outcome


@dataclass(frozen=True, slots=True)
class RewriteConfig:
    """Everything a rewrite depends on: the options, and what the request told us."""

    style: OutputStyle = field(default_factory=OutputStyle)
    view: RequestView = field(default_factory=RequestView)
    builtin_tools: str = "drop"
    no_final_timeout: float = 0
    """Seconds a stream may go without content or a tool call (0: no limit)."""


def _all_of(notes: list[Callable[[str], None]]) -> Callable[[str], None]:
    if len(notes) == 1:
        return notes[0]  # the usual case, called per token: no wrapper

    def note_all(text: str) -> None:
        for note in notes:
            note(text)

    return note_all


class ChoicePipeline:
    def __init__(self, config: RewriteConfig, outcome: Outcome, whole: bool = False) -> None:
        """`whole`: the choice comes in one piece (a non-streaming answer)."""
        self.decoder = ChoiceDecoder(config.builtin_tools, whole)
        self.repairer = Repairer(config.view)
        self.encoder = DeltaEncoder(config.style)
        self.outcome = outcome

    def feed(self, fields: dict[str, Any]) -> list[Delta]:
        events = self.repairer.feed(self.decoder.feed(fields))
        deltas = self.encoder.encode(events)
        self.outcome.observe(events, deltas)
        return deltas

    def steady_text(self) -> tuple[tuple[str, ...], Callable[[str], None]] | None:
        """When a `content` piece without `<` would pass every layer changing nothing but the
        outcome: the delta keys it goes out under, each with the piece as is, and what notes in
        the outcome what `feed` would have for it (for StreamRewriter's fast path)."""
        kind = self.decoder.steady_text_event()
        if kind is None or not self.repairer.passes_unchanged(kind):
            return None
        keys = self.encoder.steady_keys(kind)
        if keys is None:
            return None
        notes: list[Callable[[str], None]] = []
        notes += [self.outcome.keep_reasoning] if kind is Reasoning else []
        notes += [self.outcome.count_content] if "content" in keys else []
        return keys, _all_of(notes)

    def close(self) -> list[Delta]:
        events = self.repairer.feed(self.decoder.close()) + self.repairer.close()
        deltas = self.encoder.encode(events) + self.encoder.finish()
        self.outcome.observe(events, deltas)
        self.outcome.add_recoveries(self.decoder.recoveries)
        self.outcome.add_repairs(self.repairer.repairs)
        return deltas

    def finish_reason(self, upstream: str | None) -> str:
        reason = "stop" if self.repairer.stopped else self.encoder.finish_reason(upstream)
        self.outcome.finish_reason = reason
        return reason
