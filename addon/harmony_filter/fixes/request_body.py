"""Reading and rewriting a Chat Completions request body: the small accessors every request-fix
rule shares. A rewrite never changes its input: it copies what it changes and shares the rest."""

from typing import Any
from typing import TypeGuard

Body = dict[str, Any]

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")


def messages_of(body: Body) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def with_messages(body: Body, messages: list[Any]) -> Body:
    return {**body, "messages": messages}


def without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def is_role(message: Any, *roles: str) -> bool:
    return isinstance(message, dict) and message.get("role") in roles


def last_user_index(messages: list[Any]) -> int:
    return max((i for i, m in enumerate(messages) if is_role(m, "user")), default=-1)


def call_ids(message: dict[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)]


def reasoning_of(message: dict[str, Any]) -> str:
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


def with_reasoning(message: dict[str, Any], reasoning: str, field: str) -> dict[str, Any]:
    """`message` with `reasoning` as its only reasoning field, named `field` ("none": none)."""
    stripped = without(message, *REASONING_FIELDS)
    if reasoning and field != "none":
        stripped[field] = reasoning
    return stripped


def forced_tool_name(choice: Any) -> str | None:
    """The function a named tool_choice forces (Chat Completions or flat Responses shape)."""
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    return name if isinstance(name, str) else None


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
