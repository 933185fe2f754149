"""Rewrite a whole (non-streaming) chat.completion body."""

from typing import Any

from .openai_shapes import DeltaEncoder
from .openai_shapes import OutputStyle
from .openai_shapes import accumulate
from .outcome import Outcome
from .upstream import ChoiceDecoder

_REWRITTEN_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls", "function_call")


def rewrite_completion(
    body: dict[str, Any], style: OutputStyle, builtin_tools: str = "drop"
) -> Outcome:
    """Rewrite every choice's message in place; return what was done.

    The message goes through the same decoder and encoder as a stream, fed in one piece.
    """
    outcome = Outcome()
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        decoder, encoder = ChoiceDecoder(builtin_tools), DeltaEncoder(style)
        events = decoder.feed(message) + decoder.close()
        deltas = encoder.encode(events) + encoder.finish()
        outcome.observe(events, deltas)
        outcome.add_recoveries(decoder.harmony.recoveries)
        kept = {key: value for key, value in message.items() if key not in _REWRITTEN_FIELDS}
        choice["message"] = kept | accumulate(deltas)
        choice["finish_reason"] = encoder.finish_reason(choice.get("finish_reason"))
        if choice.get("logprobs"):
            choice["logprobs"] = None  # they describe Harmony tokens, not the rewritten text
        outcome.finish_reason = choice["finish_reason"]
    return outcome
