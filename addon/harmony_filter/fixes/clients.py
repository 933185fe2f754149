"""Which coding client sent a request, and which of its tools it cannot do without.

Clients differ in what they send and need (Cline and Roo must get a tool call in every turn,
Roo and Aider send temperature 0, OpenCode forces tool_choice for structured output), so the
request fixes are told who is asking. Detection uses the strongest signal first: a client's own
User-Agent or X-Title / HTTP-Referer headers, then its system prompt or tool names (clients on a
generic SDK, like the Cline CLI on the AI SDK, Continue on the OpenAI JS SDK or Aider on the
OpenAI Python SDK, say nothing else about themselves), then the generic SDK User-Agent.
Fingerprints come from the clients' sources; see the README section on request fixes.
"""

import re
from collections.abc import Iterable
from typing import Any

CLIENTS = (
    "cline",
    "roo",
    "kilo",
    "cursor",
    "continue",
    "zed",
    "codex",
    "opencode",
    "aider",
    "openai-sdk",
    "unknown",
)

CORE_TOOLS: dict[str, frozenset[str]] = {
    "cline": frozenset(
        {
            "execute_command",
            "read_file",
            "write_to_file",
            "replace_in_file",
            "apply_patch",
            "search_files",
            "list_files",
            "list_code_definition_names",
            "ask_followup_question",
            "attempt_completion",
            "plan_mode_respond",
            "act_mode_respond",
            # the Cline CLI (3.x, on the Cline SDK)
            "read_files",
            "search_codebase",
            "run_commands",
            "fetch_web_content",
            "ask_question",
        }
    ),
    "roo": frozenset(
        {
            "read_file",
            "write_to_file",
            "apply_diff",
            "apply_patch",
            "edit",
            "edit_file",
            "search_replace",
            "search_files",
            "list_files",
            "execute_command",
            "read_command_output",
            "codebase_search",
            "ask_followup_question",
            "attempt_completion",
            "switch_mode",
            "new_task",
            "update_todo_list",
        }
    ),
    "cursor": frozenset(
        {
            "codebase_search",
            "read_file",
            "run_terminal_cmd",
            "list_dir",
            "grep_search",
            "edit_file",
            "file_search",
            "delete_file",
            "reapply",
        }
    ),
    "continue": frozenset(
        {
            "read_file",
            "read_file_range",
            "create_new_file",
            "edit_existing_file",
            "single_find_and_replace",
            "multi_edit",
            "run_terminal_command",
            "grep_search",
            "file_glob_search",
            "ls",
            "read_currently_open_file",
            "view_diff",
            # the Continue CLI (cn)
            "Read",
            "Write",
            "Edit",
            "MultiEdit",
            "Bash",
            "List",
            "Search",
            "Diff",
            "Fetch",
        }
    ),
    "zed": frozenset(
        {
            "read_file",
            "edit_file",
            "terminal",
            "grep",
            "find_path",
            "list_directory",
            "diagnostics",
        }
    ),
    "codex": frozenset({"shell", "exec_command", "apply_patch", "update_plan"}),
    "opencode": frozenset(
        {"bash", "read", "edit", "write", "glob", "grep", "list", "patch", "StructuredOutput"}
    ),
}
"""Per client, the built-in tools that tool trimming keeps before any other (MCP tools and
the like come last). Kilo Code 4.x is a Roo fork, 7.x is built on OpenCode."""
CORE_TOOLS["kilo"] = CORE_TOOLS["roo"] | CORE_TOOLS["opencode"]

_HEADER_RULES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    # (client, header, pattern), first match wins; Kilo and Roo before Cline ("Roo-Cline").
    ("opencode", "user-agent", re.compile(r"^opencode/", re.I)),
    ("kilo", "user-agent", re.compile(r"^kilo-?code/", re.I)),
    ("kilo", "x-title", re.compile(r"^kilo code$", re.I)),
    ("kilo", "http-referer", re.compile(r"kilocode\.ai", re.I)),
    ("roo", "user-agent", re.compile(r"^roo-?code/", re.I)),
    ("roo", "x-title", re.compile(r"^roo code$", re.I)),
    ("roo", "http-referer", re.compile(r"roo-?cline|roocode", re.I)),
    ("cline", "user-agent", re.compile(r"^cline/", re.I)),
    ("cline", "x-title", re.compile(r"^cline$", re.I)),
    ("cline", "http-referer", re.compile(r"cline\.bot", re.I)),
    ("codex", "user-agent", re.compile(r"^codex_", re.I)),
    ("codex", "originator", re.compile(r"^codex_", re.I)),
    ("zed", "user-agent", re.compile(r"^zed/", re.I)),
)

_SYSTEM_PROMPT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cline", re.compile(r"^\s*You are Cline\b")),
    ("kilo", re.compile(r"^\s*You are Kilo Code\b")),
    ("roo", re.compile(r"^\s*You are Roo\b")),
    ("opencode", re.compile(r"^\s*You are opencode\b", re.I)),
    ("codex", re.compile(r"^\s*You are (?:Codex\b|a coding agent running in the Codex CLI)")),
    ("aider", re.compile(r"^\s*Act as an expert software developer\b|SEARCH/REPLACE block")),
    (
        "continue",
        re.compile(
            r"^\s*You are an agent in the Continue CLI\b|<important_rules>|```tool_definition"
        ),
    ),
)

_TOOL_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    # (client, names of which any two identify it)
    ("cline", frozenset({"attempt_completion", "plan_mode_respond", "act_mode_respond"})),
    ("roo", frozenset({"attempt_completion", "switch_mode", "update_todo_list"})),
    ("cursor", frozenset({"run_terminal_cmd", "reapply", "fetch_rules", "diff_history"})),
    ("continue", frozenset({"create_new_file", "edit_existing_file", "single_find_and_replace"})),
)

_SDK_USER_AGENT = re.compile(r"^OpenAI/(?:Python|JS)\b", re.I)


def detect_client(headers: Iterable[tuple[str, str]], body: Any) -> str:
    """Name the client (one of CLIENTS) from the request's header fields (mitmproxy's
    `headers.items(multi=True)`, or a dict's items) and its parsed JSON body."""
    lowered = _header_map(headers)
    return (
        _by_headers(lowered)
        or _by_system_prompt(body)
        or _by_tools(body)
        or _by_sdk(lowered)
        or _by_zed_body(body)
        or "unknown"
    )


def _header_map(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header fields by lower-case name, repeated ones joined with ", " as HTTP folds them. Fed
    mitmproxy's `headers.items(multi=True)` it is one pass; its plain `items()` looks every name
    up again in the whole list."""
    found: dict[str, str] = {}
    for name, value in fields:
        name = str(name).lower()
        found[name] = f"{found[name]}, {value}" if name in found else str(value)
    return found


def system_prompt(body: Any) -> str:
    """The text of every system and developer message, joined ("" when there is none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    return "\n".join(
        message_text(message.get("content"))
        for message in messages
        if isinstance(message, dict) and message.get("role") in ("system", "developer")
    )


def message_text(content: Any) -> str:
    """A message's text, whether its content is a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def tool_name(tool: Any) -> str | None:
    """The name of a tool definition, in the Chat Completions or the flat Responses shape."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else None


def _by_headers(headers: dict[str, str]) -> str | None:
    for client, header, pattern in _HEADER_RULES:
        if pattern.search(headers.get(header, "")):
            return client
    if any(name.startswith("x-kilocode-") for name in headers):
        return "kilo"
    return None


def _by_system_prompt(body: Any) -> str | None:
    prompt = system_prompt(body)
    for client, pattern in _SYSTEM_PROMPT_RULES:
        if pattern.search(prompt):
            return client
    return None


def _by_tools(body: Any) -> str | None:
    tools = body.get("tools") if isinstance(body, dict) else None
    if not isinstance(tools, list):
        return None
    names = {tool_name(tool) for tool in tools}
    for client, fingerprint in _TOOL_RULES:
        if len(fingerprint & names) >= 2:
            return client
    return None


def _by_sdk(headers: dict[str, str]) -> str | None:
    if _SDK_USER_AGENT.search(headers.get("user-agent", "")) or "x-stainless-lang" in headers:
        return "openai-sdk"
    return None


def _by_zed_body(body: Any) -> str | None:
    """Zed sends prompt_cache_key with every request and max_completion_tokens, never
    max_tokens: a weak sign, used only when nothing names the client."""
    if (
        isinstance(body, dict)
        and "prompt_cache_key" in body
        and "max_completion_tokens" in body
        and "max_tokens" not in body
    ):
        return "zed"
    return None
