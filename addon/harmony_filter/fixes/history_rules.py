"""Request-fix rules on the conversation: roles, earlier answers that leaked Harmony, tool results
without their call, and where the model's earlier reasoning goes (the drop rule, re-injection)."""

import hashlib
import json
import re
from typing import TYPE_CHECKING
from typing import Any

from ..events import Content
from ..events import Reasoning
from ..events import ToolCallArgs
from ..events import ToolCallBegin
from ..harmony.decoder import decode
from .clients import message_text
from .request_body import Body
from .request_body import call_ids
from .request_body import is_role
from .request_body import last_user_index
from .request_body import messages_of
from .request_body import reasoning_of
from .request_body import with_messages
from .request_body import with_reasoning

if TYPE_CHECKING:
    from .request_fixes import RuleContext

_HARMONY_MARKUP = re.compile(r"<\|(?:start|end|message|channel|constrain|return|call)\|>")

_ANALYSIS_HEADER = "<|channel|>analysis<|message|>"


def fix_roles(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Map developer -> system (optional: some servers reject "developer"), and merge the
    leading system/developer messages into one (some servers keep only the first)."""
    messages = messages_of(body)
    applied = []
    if context.settings.developer_to_system and any(is_role(m, "developer") for m in messages):
        messages = [{**m, "role": "system"} if is_role(m, "developer") else m for m in messages]
        applied.append("developer-to-system")
    leading = 0
    while leading < len(messages) and is_role(messages[leading], "system", "developer"):
        leading += 1
    if leading > 1:
        texts = [message_text(m.get("content")) for m in messages[:leading]]
        merged = {**messages[0], "content": "\n\n".join(text for text in texts if text)}
        messages = [merged, *messages[leading:]]
        applied.append("leading-system-merged")
    return (with_messages(body, messages) if applied else body), applied


def reparse_harmony_history(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Earlier answers that leaked Harmony markup (kept by the client as content or reasoning)
    are split again into content, reasoning and tool calls: servers' templates raise on
    `<|channel|>` in history, and the model must not see its own markup as text."""
    messages = messages_of(body)
    repaired = [
        _reparsed(m, index, context) if is_role(m, "assistant") and _holds_markup(m) else m
        for index, m in enumerate(messages)
    ]
    if all(new is old for new, old in zip(repaired, messages, strict=True)):
        return body, []
    return with_messages(body, repaired), ["harmony-history-reparsed"]


def repair_orphan_tool_results(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """A tool message whose call is not in the history before it breaks the gpt-oss template
    ("Message has tool role, but there was no previous assistant message with a tool call"):
    it becomes a user message naming the tool."""
    seen: set[str] = set()
    repaired = []
    for message in messages_of(body):
        if is_role(message, "assistant"):
            seen.update(call_ids(message))
        call_id = message.get("tool_call_id") if is_role(message, "tool") else None
        if is_role(message, "tool") and not (isinstance(call_id, str) and call_id in seen):
            message = _tool_result_as_user(message)
        repaired.append(message)
    if all(new is old for new, old in zip(repaired, messages_of(body), strict=True)):
        return body, []
    return with_messages(body, repaired), ["orphan-tool-result-to-user"]


def normalise_reasoning_field(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Clients send reasoning back as reasoning_content, reasoning or reasoning_details; each
    server reads only one (llama.cpp reasoning_content, vLLM and Ollama reasoning)."""
    target = context.settings.upstream_reasoning
    messages = messages_of(body)
    normalised = [
        with_reasoning(m, reasoning_of(m), target) if is_role(m, "assistant") else m
        for m in messages
    ]
    if normalised == messages:
        return body, []
    name = "reasoning-removed" if target == "none" else "reasoning-field-normalised"
    return with_messages(body, normalised), [name]


def drop_settled_reasoning(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """The Harmony drop rule: reasoning of turns before the last user message is not shown to
    the model again."""
    messages = messages_of(body)
    last_user = last_user_index(messages)
    trimmed = [
        with_reasoning(m, "", "none")
        if index < last_user and is_role(m, "assistant") and reasoning_of(m)
        else m
        for index, m in enumerate(messages)
    ]
    if all(new is old for new, old in zip(trimmed, messages, strict=True)):
        return body, []
    return with_messages(body, trimmed), ["reasoning-dropped-before-last-user"]


def reinject_reasoning(body: Body, context: "RuleContext") -> tuple[Body, list[str]]:
    """Give back the reasoning of the current tool chain that the client dropped, from what the
    response side remembered under the calls' ids."""
    cache, target = context.cache, context.settings.upstream_reasoning
    if not context.settings.reinject_reasoning or cache is None or target == "none":
        return body, []
    messages = messages_of(body)
    last_user = last_user_index(messages)
    restored = list(messages)
    for index in range(last_user + 1, len(messages)):
        message = messages[index]
        if not is_role(message, "assistant") or reasoning_of(message):
            continue
        found = next(filter(None, (cache.recall(i) for i in call_ids(message))), None)
        if found:
            restored[index] = with_reasoning(message, found, target)
    if restored == messages:
        return body, []
    return with_messages(body, restored), ["reasoning-reinjected"]


def _holds_markup(message: dict[str, Any]) -> bool:
    texts = (message_text(message.get("content")), reasoning_of(message))
    return any(_HARMONY_MARKUP.search(text) for text in texts)


def _reparsed(message: dict[str, Any], index: int, context: "RuleContext") -> dict[str, Any]:
    # Headerless text in a reasoning field is analysis; in content it is the answer.
    reasoning_text = reasoning_of(message)
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
    repaired = with_reasoning(message, reasoning, context.settings.upstream_reasoning)
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
