"""Request-fix rules on the generation parameters: stop strings, reasoning effort, temperature
and the token limit."""

from typing import TYPE_CHECKING
from typing import Any

from .request_body import Body
from .request_body import is_number
from .request_body import without

if TYPE_CHECKING:
    from .request_fixes import RuleContext

HARMONY_STOPS = ("<|return|>", "<|call|>")

MAX_UPSTREAM_STOPS = 4

EFFORTS = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "none": "low",
    "minimal": "low",
    "xhigh": "high",
    "max": "high",
}
"""Client effort values -> the three gpt-oss knows; anything else is dropped."""

STOPS_MOVED = "stop-moved-to-proxy"


def move_stops(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Client stop strings also match inside gpt-oss's analysis and cut it off before any
    answer: the response side enforces them on the content instead. Upstream gets the Harmony
    stop tokens (servers that pass raw text would run past a call otherwise)."""
    settings = context.settings
    applied = []
    fixed = body
    if client_stops(body.get("stop")):
        fixed = without(body, "stop")
        applied.append(STOPS_MOVED)
    wanted = list(HARMONY_STOPS) if settings.stop_tokens else []
    wanted += [s for s in settings.extra_stops if s not in wanted]
    if wanted:
        fixed = {**fixed, "stop": wanted[:MAX_UPSTREAM_STOPS]}
        applied.append("harmony-stops-added")
    return fixed, applied


def normalise_effort(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """gpt-oss knows only low, medium and high (vLLM answers 400 to "none"); `reasoning.effort`
    is also sent as `reasoning_effort`, the field Chat Completions servers read."""
    applied = []
    fixed = dict(body)
    if "reasoning_effort" in body:
        effort = mapped_effort(body["reasoning_effort"])
        if effort is None:
            del fixed["reasoning_effort"]
            applied.append("effort-dropped")
        elif effort != body["reasoning_effort"]:
            fixed["reasoning_effort"] = effort
            applied.append("effort-mapped")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and "effort" in reasoning:
        effort = mapped_effort(reasoning["effort"])
        rest = {key: value for key, value in reasoning.items() if key != "effort"}
        if effort is None:
            applied.append("effort-dropped")
        elif effort != reasoning["effort"]:
            applied.append("effort-mapped")
        if effort is None and not rest:
            del fixed["reasoning"]
        else:
            fixed["reasoning"] = rest if effort is None else {**reasoning, "effort": effort}
        if effort is not None and "reasoning_effort" not in fixed:
            fixed["reasoning_effort"] = effort
            applied.append("effort-copied-to-reasoning_effort")
    return (fixed if applied else body), applied


def effort_from_temperature(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Optional, as one earlier gpt-oss server did: the client's temperature chooses the effort
    when it asked for none."""
    temperature = context.original.get("temperature")
    if (
        not context.settings.effort_from_temperature
        or "reasoning_effort" in body
        or not is_number(temperature)
    ):
        return body, []
    effort = "low" if temperature <= 0.3 else "medium" if temperature <= 0.7 else "high"
    return {**body, "reasoning_effort": effort}, ["effort-from-temperature"]


def override_temperature(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """gpt-oss is trained for temperature 1.0; Roo, Cline and Aider send 0, which makes
    reasoning models loop."""
    wanted = context.settings.temperature
    current = body.get("temperature")
    if wanted is None or (is_number(current) and current == wanted):
        return body, []
    return {**body, "temperature": wanted}, ["temperature-overridden"]


def copy_max_completion_tokens(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Ollama ignores max_completion_tokens (Zed and Roo send only that one)."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or "max_tokens" in body:
        return body, []
    return {**body, "max_tokens": limit}, ["max_tokens-from-max_completion_tokens"]


def client_stops(value: Any) -> list[str]:
    """The stop strings of a request's `stop` (a string or a list of strings)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def mapped_effort(value: Any) -> str | None:
    return EFFORTS.get(value.strip().lower()) if isinstance(value, str) else None
