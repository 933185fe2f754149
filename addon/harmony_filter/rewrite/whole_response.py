"""Rewrite a whole (non-streaming) chat.completion body."""

from typing import Any

from ..api.chat_completions import accumulate
from .outcome import Outcome
from .pipeline import ChoicePipeline
from .pipeline import RewriteConfig

_REWRITTEN_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls", "function_call")


def rewrite_completion(body: dict[str, Any], config: RewriteConfig) -> Outcome:
    """Rewrite every choice's message in place; return what was done.

    The message goes through the same decoder and encoder as a stream, fed in one piece (the
    decoder may then judge headerless text by what follows it: see HarmonyDecoder's `whole`).
    """
    outcome = Outcome()
    if isinstance(body.get("usage"), dict):
        outcome.usage = body["usage"]
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        pipeline = ChoicePipeline(config, outcome, whole=True)
        deltas = pipeline.feed(message) + pipeline.close()
        kept = {key: value for key, value in message.items() if key not in _REWRITTEN_FIELDS}
        choice["message"] = kept | accumulate(deltas)
        choice["finish_reason"] = pipeline.finish_reason(choice.get("finish_reason"))
        if choice.get("logprobs"):
            choice["logprobs"] = None  # they describe Harmony tokens, not the rewritten text
    return outcome
