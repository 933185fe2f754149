"""Repairs to what IDE clients send, so that gpt-oss servers accept it and the model does its best.

Each rule is a small pure function `rule(body, context) -> (body, names of what it did)`. A rule
never changes its input (it copies what it rewrites and shares the rest), so a rule that raises
is skipped without a trace in the body, and the others still run. `fix_request` runs them in
order and reports what the response side must do in turn: enforce the client's stop strings and
drop the tool calls of a `tool_choice: "none"` request. The rules live by subject in
history_rules.py, tool_rules.py and parameter_rules.py; the README's request-fix section explains
each rule, its option and where the problem was reported.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import history_rules
from . import parameter_rules
from . import tool_rules
from .parameter_rules import STOPS_MOVED
from .parameter_rules import client_stops
from .reasoning_cache import ReasoningCache
from .request_body import Body
from .tool_rules import TOOL_CHOICE_NONE_STRIPPED

log = logging.getLogger(__name__)

TOOL_CHOICE_NONE_MODES = ("strip", "auto", "keep")

UPSTREAM_REASONING_FIELDS = ("reasoning_content", "reasoning", "none")


@dataclass(frozen=True, slots=True)
class FixSettings:
    """The request-fix options (mitmproxy option `harmony_<field>` for each field)."""

    tool_choice_none: str = "strip"
    keep_forced_tool_choice: bool = False
    max_tools: int = 40
    max_tools_bytes: int = 120_000
    stop_tokens: bool = True
    extra_stops: tuple[str, ...] = ()
    effort_from_temperature: bool = False
    temperature: float | None = None
    developer_to_system: bool = False
    upstream_reasoning: str = "reasoning_content"
    reinject_reasoning: bool = True
    disabled_fixes: frozenset[str] = frozenset()
    """Rule names (keys of RULES) not to run at all."""

    def __post_init__(self) -> None:
        if self.tool_choice_none not in TOOL_CHOICE_NONE_MODES:
            raise ValueError(f"tool_choice_none must be one of {TOOL_CHOICE_NONE_MODES}")
        if self.upstream_reasoning not in UPSTREAM_REASONING_FIELDS:
            raise ValueError(f"upstream_reasoning must be one of {UPSTREAM_REASONING_FIELDS}")
        if self.max_tools < 1 or self.max_tools_bytes < 1:
            raise ValueError("max_tools and max_tools_bytes must be positive")
        unknown = self.disabled_fixes - RULES.keys()
        if unknown:
            raise ValueError(f"unknown fixes {sorted(unknown)}; known: {sorted(RULES)}")

    @classmethod
    def from_options(cls, options: Any) -> "FixSettings":
        """Settings from an object with a `harmony_<field>` attribute per field (mitmproxy's
        options). mitmproxy has no float options: harmony_temperature is a string ("" or None
        for unset). Raises ValueError on a bad value."""
        values = {field: getattr(options, f"harmony_{field}") for field in cls.__dataclass_fields__}
        temperature = values["temperature"]
        values["temperature"] = float(temperature) if temperature not in (None, "") else None
        values["extra_stops"] = tuple(values["extra_stops"])
        values["disabled_fixes"] = frozenset(values["disabled_fixes"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FixResult:
    body: Body
    """What to send upstream (shares unchanged parts with the request body)."""
    applied: list[str]
    """Names of the fixes made, in order, each once."""
    client_stops: list[str]
    """The client's stop strings, taken out of the request: the response side enforces them."""
    drop_tool_calls: bool
    """The client said tool_choice "none": any tool call in the answer must be dropped."""


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule may read besides the body it rewrites."""

    client: str
    settings: FixSettings
    cache: ReasoningCache | None
    original: Body
    """The request as the client sent it."""


Rule = Callable[[Body, RuleContext], tuple[Body, list[str]]]


def fix_request(
    body: Body, client: str, settings: FixSettings, cache: ReasoningCache | None = None
) -> FixResult:
    """Apply every enabled rule to a parsed gpt-oss chat request. Never raises."""
    if not isinstance(body, dict):
        return FixResult(body, [], [], False)
    context = RuleContext(client, settings, cache, body)
    applied: list[str] = []
    for key, rule in RULES.items():
        if key in settings.disabled_fixes:
            continue
        try:
            body, names = rule(body, context)
        except Exception:
            log.warning("request fix %r failed and was skipped", key, exc_info=True)
            continue
        applied += [name for name in dict.fromkeys(names) if name not in applied]
    return FixResult(
        body,
        applied,
        client_stops=client_stops(context.original.get("stop")) if STOPS_MOVED in applied else [],
        drop_tool_calls=TOOL_CHOICE_NONE_STRIPPED in applied,
    )


RULES: dict[str, Rule] = {
    "roles": history_rules.fix_roles,
    "harmony-history": history_rules.reparse_harmony_history,
    "orphan-tool-results": history_rules.repair_orphan_tool_results,
    "reasoning-field": history_rules.normalise_reasoning_field,
    "reasoning-drop": history_rules.drop_settled_reasoning,
    "reasoning-reinject": history_rules.reinject_reasoning,
    "tool_choice": tool_rules.fix_tool_choice,
    "tools": tool_rules.trim_tools,
    "stops": parameter_rules.move_stops,
    "effort": parameter_rules.normalise_effort,
    "effort-from-temperature": parameter_rules.effort_from_temperature,
    "temperature": parameter_rules.override_temperature,
    "max_tokens": parameter_rules.copy_max_completion_tokens,
}
"""The rules in the order they run (history before tools: trimming keeps what it references)."""
