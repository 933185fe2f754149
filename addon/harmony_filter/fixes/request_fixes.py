"""Repairs to what IDE clients send, so that gpt-oss servers accept it and the model does its best.

Each rule is a small pure function `rule(body, context) -> (body, names of what it did)`. A rule
never changes its input (it copies what it rewrites and shares the rest), so a rule that raises
is skipped without a trace in the body, and the others still run. `fix_request` runs them in
order and reports what the response side must do in turn: enforce the client's stop strings and
drop the tool calls of a `tool_choice: "none"` request. The README's request-fix section explains
each rule, its option and where the problem was reported.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import TypeGuard

from ..events import Content
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..harmony.decoder import decode
from .clients import CORE_TOOLS
from .clients import message_text
from .clients import tool_name
from .reasoning_cache import ReasoningCache

log = logging.getLogger(__name__)

Body = dict[str, Any]

TOOL_CHOICE_NONE_MODES = ("strip", "auto", "keep")
UPSTREAM_REASONING_FIELDS = ("reasoning_content", "reasoning", "none")
HARMONY_STOPS = ("<|return|>", "<|call|>")
MAX_UPSTREAM_STOPS = 4
DESCRIPTION_LIMIT = 2048
"""Tool descriptions longer than this (in characters) are cut when the tools are over budget."""

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

# Names in FixResult.applied that the response side acts on.
STOPS_MOVED = "stop-moved-to-proxy"
TOOL_CHOICE_NONE_STRIPPED = "tool_choice-none-stripped"

_REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")
_HARMONY_MARKUP = re.compile(r"<\|(?:start|end|message|channel|constrain|return|call)\|>")
_ANALYSIS_HEADER = "<|channel|>analysis<|message|>"
_SCHEMA_NOISE = frozenset({"$schema", "examples"})
_SCHEMA_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
"""JSON Schema keywords whose keys are names (a property may be called "examples")."""
_SCHEMA_DATA = frozenset({"default", "const", "enum", "example"})
"""JSON Schema keywords whose values are data, not schemas: left alone."""


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
class _Context:
    client: str
    settings: FixSettings
    cache: ReasoningCache | None
    original: Body
    """The request as the client sent it."""


Rule = Callable[[Body, _Context], tuple[Body, list[str]]]


def fix_request(
    body: Body, client: str, settings: FixSettings, cache: ReasoningCache | None = None
) -> FixResult:
    """Apply every enabled rule to a parsed gpt-oss chat request. Never raises."""
    if not isinstance(body, dict):
        return FixResult(body, [], [], False)
    context = _Context(client, settings, cache, body)
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


# -- roles ----------------------------------------------------------------------------------


def fix_roles(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Map developer -> system (optional: some servers reject "developer"), and merge the
    leading system/developer messages into one (some servers keep only the first)."""
    messages = _messages(body)
    applied = []
    if context.settings.developer_to_system and any(_is_role(m, "developer") for m in messages):
        messages = [{**m, "role": "system"} if _is_role(m, "developer") else m for m in messages]
        applied.append("developer-to-system")
    leading = 0
    while leading < len(messages) and _is_role(messages[leading], "system", "developer"):
        leading += 1
    if leading > 1:
        texts = [message_text(m.get("content")) for m in messages[:leading]]
        merged = {**messages[0], "content": "\n\n".join(text for text in texts if text)}
        messages = [merged, *messages[leading:]]
        applied.append("leading-system-merged")
    return (_with_messages(body, messages) if applied else body), applied


# -- history --------------------------------------------------------------------------------


def reparse_harmony_history(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Earlier answers that leaked Harmony markup (kept by the client as content or reasoning)
    are split again into content, reasoning and tool calls: servers' templates raise on
    `<|channel|>` in history, and the model must not see its own markup as text."""
    messages = _messages(body)
    repaired = [
        _reparsed(m, index, context) if _is_role(m, "assistant") and _holds_markup(m) else m
        for index, m in enumerate(messages)
    ]
    if all(new is old for new, old in zip(repaired, messages, strict=True)):
        return body, []
    return _with_messages(body, repaired), ["harmony-history-reparsed"]


def repair_orphan_tool_results(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """A tool message whose call is not in the history before it breaks the gpt-oss template
    ("Message has tool role, but there was no previous assistant message with a tool call"):
    it becomes a user message naming the tool."""
    seen: set[str] = set()
    repaired = []
    for message in _messages(body):
        if _is_role(message, "assistant"):
            seen.update(_call_ids(message))
        call_id = message.get("tool_call_id") if _is_role(message, "tool") else None
        if _is_role(message, "tool") and not (isinstance(call_id, str) and call_id in seen):
            message = _tool_result_as_user(message)
        repaired.append(message)
    if all(new is old for new, old in zip(repaired, _messages(body), strict=True)):
        return body, []
    return _with_messages(body, repaired), ["orphan-tool-result-to-user"]


def normalise_reasoning_field(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Clients send reasoning back as reasoning_content, reasoning or reasoning_details; each
    server reads only one (llama.cpp reasoning_content, vLLM and Ollama reasoning)."""
    target = context.settings.upstream_reasoning
    messages = _messages(body)
    normalised = [
        _with_reasoning(m, _reasoning_of(m), target) if _is_role(m, "assistant") else m
        for m in messages
    ]
    if normalised == messages:
        return body, []
    name = "reasoning-removed" if target == "none" else "reasoning-field-normalised"
    return _with_messages(body, normalised), [name]


def drop_settled_reasoning(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """The Harmony drop rule: reasoning of turns before the last user message is not shown to
    the model again."""
    messages = _messages(body)
    last_user = _last_user_index(messages)
    trimmed = [
        _with_reasoning(m, "", "none")
        if index < last_user and _is_role(m, "assistant") and _reasoning_of(m)
        else m
        for index, m in enumerate(messages)
    ]
    if all(new is old for new, old in zip(trimmed, messages, strict=True)):
        return body, []
    return _with_messages(body, trimmed), ["reasoning-dropped-before-last-user"]


def reinject_reasoning(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Give back the reasoning of the current tool chain that the client dropped, from what the
    response side remembered under the calls' ids."""
    cache, target = context.cache, context.settings.upstream_reasoning
    if not context.settings.reinject_reasoning or cache is None or target == "none":
        return body, []
    messages = _messages(body)
    last_user = _last_user_index(messages)
    restored = list(messages)
    for index in range(last_user + 1, len(messages)):
        message = messages[index]
        if not _is_role(message, "assistant") or _reasoning_of(message):
            continue
        found = next(filter(None, (cache.recall(i) for i in _call_ids(message))), None)
        if found:
            restored[index] = _with_reasoning(message, found, target)
    if restored == messages:
        return body, []
    return _with_messages(body, restored), ["reasoning-reinjected"]


# -- tools ----------------------------------------------------------------------------------


def fix_tool_choice(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """tool_choice values gpt-oss servers reject or ignore (vLLM ignores "required"; Azure
    answers a named choice with no choices; "none" does not stop gpt-oss calling tools)."""
    if "tool_choice" not in body:
        return body, []
    choice, tools = body["tool_choice"], body.get("tools")
    if not (isinstance(tools, list) and tools):
        return _without(body, "tool_choice"), ["tool_choice-without-tools-removed"]
    if choice is None:
        return _without(body, "tool_choice"), ["tool_choice-null-removed"]
    if choice == "none":
        match context.settings.tool_choice_none:
            case "strip":
                stripped = _without(body, "tool_choice", "tools", "parallel_tool_calls")
                return stripped, [TOOL_CHOICE_NONE_STRIPPED]
            case "auto":
                return {**body, "tool_choice": "auto"}, ["tool_choice-none-to-auto"]
        return body, []
    forced = forced_tool_name(choice)
    if (choice != "required" and forced is None) or context.settings.keep_forced_tool_choice:
        return body, []
    applied = ["tool_choice-forced-to-auto"]
    fixed = {**body, "tool_choice": "auto"}
    first = [t for t in tools if tool_name(t) == forced]
    if forced is not None and first and tool_name(tools[0]) != forced:
        fixed["tools"] = first + [t for t in tools if tool_name(t) != forced]
        applied.append("forced-tool-moved-first")
    return fixed, applied


def trim_tools(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Oversized tool lists (Cursor caps at 40; 90 KB of MCP schemas drown a 20b model) are
    slimmed (no $schema/examples, descriptions cut), then cut to the budget, keeping first the
    tools the request or its history names, then the client's core tools, then the rest."""
    settings = context.settings
    tools = body.get("tools")
    if not isinstance(tools, list) or not _over_budget(tools, settings):
        return body, []
    applied = []
    slimmed = [_without_schema_noise(t) for t in tools]
    if slimmed != tools:
        applied.append("tool-schemas-slimmed")
    shortened = [_with_short_description(t) for t in slimmed]
    if shortened != slimmed:
        applied.append("tool-descriptions-shortened")
    kept = shortened
    if _over_budget(shortened, settings):
        pinned = _referenced_tool_names(context.original, body)
        core = CORE_TOOLS.get(context.client, frozenset())
        kept = _select_tools(shortened, pinned, core, settings)
        applied.append("tools-trimmed")
    return {**body, "tools": kept}, applied


# -- parameters -----------------------------------------------------------------------------


def move_stops(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Client stop strings also match inside gpt-oss's analysis and cut it off before any
    answer: the response side enforces them on the content instead. Upstream gets the Harmony
    stop tokens (servers that pass raw text would run past a call otherwise)."""
    settings = context.settings
    applied = []
    fixed = body
    if client_stops(body.get("stop")):
        fixed = _without(body, "stop")
        applied.append(STOPS_MOVED)
    wanted = list(HARMONY_STOPS) if settings.stop_tokens else []
    wanted += [s for s in settings.extra_stops if s not in wanted]
    if wanted:
        fixed = {**fixed, "stop": wanted[:MAX_UPSTREAM_STOPS]}
        applied.append("harmony-stops-added")
    return fixed, applied


def normalise_effort(body: Body, context: _Context) -> tuple[Body, list[str]]:
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


def effort_from_temperature(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Optional, as one earlier gpt-oss server did: the client's temperature chooses the effort
    when it asked for none."""
    temperature = context.original.get("temperature")
    if (
        not context.settings.effort_from_temperature
        or "reasoning_effort" in body
        or not _is_number(temperature)
    ):
        return body, []
    effort = "low" if temperature <= 0.3 else "medium" if temperature <= 0.7 else "high"
    return {**body, "reasoning_effort": effort}, ["effort-from-temperature"]


def override_temperature(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """gpt-oss is trained for temperature 1.0; Roo, Cline and Aider send 0, which makes
    reasoning models loop."""
    wanted = context.settings.temperature
    current = body.get("temperature")
    if wanted is None or (_is_number(current) and current == wanted):
        return body, []
    return {**body, "temperature": wanted}, ["temperature-overridden"]


def copy_max_completion_tokens(body: Body, context: _Context) -> tuple[Body, list[str]]:
    """Ollama ignores max_completion_tokens (Zed and Roo send only that one)."""
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or "max_tokens" in body:
        return body, []
    return {**body, "max_tokens": limit}, ["max_tokens-from-max_completion_tokens"]


RULES: dict[str, Rule] = {
    "roles": fix_roles,
    "harmony-history": reparse_harmony_history,
    "orphan-tool-results": repair_orphan_tool_results,
    "reasoning-field": normalise_reasoning_field,
    "reasoning-drop": drop_settled_reasoning,
    "reasoning-reinject": reinject_reasoning,
    "tool_choice": fix_tool_choice,
    "tools": trim_tools,
    "stops": move_stops,
    "effort": normalise_effort,
    "effort-from-temperature": effort_from_temperature,
    "temperature": override_temperature,
    "max_tokens": copy_max_completion_tokens,
}
"""The rules in the order they run (history before tools: trimming keeps what it references)."""


# -- helpers shared with the response side -----------------------------------------------------


def client_stops(value: Any) -> list[str]:
    """The stop strings of a request's `stop` (a string or a list of strings)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def mapped_effort(value: Any) -> str | None:
    return EFFORTS.get(value.strip().lower()) if isinstance(value, str) else None


def forced_tool_name(choice: Any) -> str | None:
    """The function a named tool_choice forces (Chat Completions or flat Responses shape)."""
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    return name if isinstance(name, str) else None


# -- message helpers ------------------------------------------------------------------------


def _messages(body: Body) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def _with_messages(body: Body, messages: list[Any]) -> Body:
    return {**body, "messages": messages}


def _without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def _is_role(message: Any, *roles: str) -> bool:
    return isinstance(message, dict) and message.get("role") in roles


def _last_user_index(messages: list[Any]) -> int:
    return max((i for i, m in enumerate(messages) if _is_role(m, "user")), default=-1)


def _call_ids(message: dict[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)]


def _reasoning_of(message: dict[str, Any]) -> str:
    """The reasoning a client sent back, from whichever field it used."""
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    details = message.get("reasoning_details")
    if isinstance(details, list):
        return "".join(
            d["text"] for d in details if isinstance(d, dict) and isinstance(d.get("text"), str)
        )
    return ""


def _with_reasoning(message: dict[str, Any], reasoning: str, field: str) -> dict[str, Any]:
    """`message` with `reasoning` as its only reasoning field, named `field` ("none": none)."""
    stripped = _without(message, *_REASONING_FIELDS)
    if reasoning and field != "none":
        stripped[field] = reasoning
    return stripped


def _holds_markup(message: dict[str, Any]) -> bool:
    texts = (message_text(message.get("content")), _reasoning_of(message))
    return any(_HARMONY_MARKUP.search(text) for text in texts)


def _reparsed(message: dict[str, Any], index: int, context: _Context) -> dict[str, Any]:
    # Headerless text in a reasoning field is analysis; in content it is the answer.
    reasoning_text = _reasoning_of(message)
    texts = (
        _ANALYSIS_HEADER + reasoning_text if reasoning_text else "",
        message_text(message.get("content")),
    )
    reasoning, content = "", ""
    calls: list[list[str]] = []
    for text in texts:
        for event in decode(text)[0] if text else []:
            match event:
                case Reasoning(piece):
                    reasoning += piece
                case Content(piece):
                    content += piece
                case ToolCallBegin(name):
                    calls.append([name, ""])
                case ToolCallArgs(piece) if calls:
                    calls[-1][1] += piece
    existing = message.get("tool_calls")
    tool_calls = list(existing) if isinstance(existing, list) else []
    for ordinal, (name, arguments) in enumerate(calls):
        tool_calls.append(_recovered_call(index, ordinal, name, arguments.strip() or "{}"))
    repaired = _with_reasoning(message, reasoning, context.settings.upstream_reasoning)
    repaired["content"] = content if content or not tool_calls else None
    if tool_calls:
        repaired["tool_calls"] = tool_calls
    return repaired


def _recovered_call(index: int, ordinal: int, name: str, arguments: str) -> dict[str, Any]:
    """A tool call recovered from history text, with an id that is the same every time the
    client sends this history again."""
    digest = hashlib.sha256(f"{index}:{ordinal}:{name}:{arguments}".encode()).hexdigest()
    return {
        "id": "call_" + digest[:24],
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _tool_result_as_user(message: dict[str, Any]) -> dict[str, Any]:
    label = next(
        (v for v in (message.get("name"), message.get("tool_call_id")) if isinstance(v, str) and v),
        "unknown tool",
    )
    content = message.get("content")
    if isinstance(content, str | list):
        text = message_text(content)
    else:
        text = "" if content is None else json.dumps(content)
    return {"role": "user", "content": f"Tool result ({label}):\n{text}"}


# -- tool helpers ---------------------------------------------------------------------------


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _over_budget(tools: list[Any], settings: FixSettings) -> bool:
    return len(tools) > settings.max_tools or _json_size(tools) > settings.max_tools_bytes


def _without_schema_noise(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return tool
    function = tool.get("function")
    if isinstance(function, dict) and "parameters" in function:
        return {
            **tool,
            "function": {**function, "parameters": _clean_schema(function["parameters"])},
        }
    if "parameters" in tool:
        return {**tool, "parameters": _clean_schema(tool["parameters"])}
    return tool


def _clean_schema(schema: Any) -> Any:
    """`schema` without `$schema` and `examples` keywords, at any depth; a property, definition
    or default value that happens to be called so is kept."""
    if isinstance(schema, list):
        return [_clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned = {}
    for key, value in schema.items():
        if key in _SCHEMA_NOISE:
            continue
        if key in _SCHEMA_NAME_MAPS and isinstance(value, dict):
            cleaned[key] = {name: _clean_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_DATA:
            cleaned[key] = value
        else:
            cleaned[key] = _clean_schema(value)
    return cleaned


def _with_short_description(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return tool
    function = tool.get("function")
    if isinstance(function, dict):
        shortened = _short(function.get("description"))
        return {**tool, "function": {**function, "description": shortened}} if shortened else tool
    shortened = _short(tool.get("description"))
    return {**tool, "description": shortened} if shortened else tool


def _short(description: Any) -> str | None:
    """The cut description, or None when it needs no cut."""
    if not isinstance(description, str) or len(description) <= DESCRIPTION_LIMIT:
        return None
    return description[: DESCRIPTION_LIMIT - 1].rstrip() + "…"


def _referenced_tool_names(original: Body, body: Body) -> set[str]:
    """Tools the request cannot lose: the one tool_choice named, and every tool called in the
    history (the model would see calls to tools it does not have)."""
    names: list[Any] = [forced_tool_name(original.get("tool_choice"))]
    for message in _messages(body):
        calls = message.get("tool_calls") if _is_role(message, "assistant") else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            names.append(function.get("name") if isinstance(function, dict) else None)
    return {name for name in names if isinstance(name, str)}


def _select_tools(
    tools: list[Any], pinned: set[str], core: frozenset[str], settings: FixSettings
) -> list[Any]:
    """Referenced tools always; then core tools, then the rest, in order, each that still fits
    the count and byte budgets. The kept tools stay in their original order."""

    def rank(index: int) -> tuple[int, int]:
        name = tool_name(tools[index])
        return (0 if name in pinned else 1 if name in core else 2, index)

    kept: set[int] = set()
    count = size = 0
    for index in sorted(range(len(tools)), key=rank):
        tool_size = _json_size(tools[index]) + 1  # and its comma
        fits = count < settings.max_tools and size + tool_size <= settings.max_tools_bytes
        if rank(index)[0] == 0 or fits:
            kept.add(index)
            count += 1
            size += tool_size
    return [tools[index] for index in sorted(kept)]


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
