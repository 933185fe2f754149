"""Request-fix rules on the tools: tool_choice values gpt-oss servers reject or ignore, and tool
lists too big for the model (slimmed, then trimmed to a budget keeping what matters first)."""

import json
from typing import TYPE_CHECKING
from typing import Any

from .clients import CORE_TOOLS
from .clients import tool_name
from .request_body import Body
from .request_body import forced_tool_name
from .request_body import is_role
from .request_body import messages_of
from .request_body import without

if TYPE_CHECKING:
    from .request_fixes import FixSettings
    from .request_fixes import RuleContext

TOOL_CHOICE_NONE_STRIPPED = "tool_choice-none-stripped"

DESCRIPTION_LIMIT = 2048
"""Tool descriptions longer than this (in characters) are cut when the tools are over budget."""

_SCHEMA_NOISE = frozenset({"$schema", "examples"})

_SCHEMA_NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
"""JSON Schema keywords whose keys are names (a property may be called "examples")."""

_SCHEMA_DATA = frozenset({"default", "const", "enum", "example"})
"""JSON Schema keywords whose values are data, not schemas: left alone."""


def fix_tool_choice(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """tool_choice values gpt-oss servers reject or ignore (vLLM ignores "required"; Azure
    answers a named choice with no choices; "none" does not stop gpt-oss calling tools)."""
    if "tool_choice" not in body:
        return body, []
    choice, tools = body["tool_choice"], body.get("tools")
    if not (isinstance(tools, list) and tools):
        return without(body, "tool_choice"), ["tool_choice-without-tools-removed"]
    if choice is None:
        return without(body, "tool_choice"), ["tool_choice-null-removed"]
    if choice == "none":
        match context.settings.tool_choice_none:
            case "strip":
                stripped = without(body, "tool_choice", "tools", "parallel_tool_calls")
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


def trim_tools(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
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


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _over_budget(tools: list[Any], settings: "FixSettings") -> bool:
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
    for message in messages_of(body):
        calls = message.get("tool_calls") if is_role(message, "assistant") else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            names.append(function.get("name") if isinstance(function, dict) else None)
    return {name for name in names if isinstance(name, str)}


def _select_tools(
    tools: list[Any], pinned: set[str], core: frozenset[str], settings: "FixSettings"
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
