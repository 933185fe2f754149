"""The options of HarmonyFilter: their names, types, defaults and help, and the allowed values of
those with a fixed set. The README's options table follows this file."""

from collections.abc import Sequence
from typing import Any

from ..api.chat_completions import REASONING_MODES
from ..api.chat_completions import TOOL_MODES
from ..fixes.request_fixes import TOOL_CHOICE_NONE_MODES
from ..fixes.request_fixes import UPSTREAM_REASONING_FIELDS
from ..fixes.request_fixes import FixSettings
from ..harmony.decoder import BUILTIN_TOOL_MODES

CHOICES = {
    "harmony_reasoning": REASONING_MODES,
    "harmony_tools": TOOL_MODES,
    "harmony_builtin_tools": BUILTIN_TOOL_MODES,
    "harmony_tool_choice_none": TOOL_CHOICE_NONE_MODES,
    "harmony_upstream_reasoning": UPSTREAM_REASONING_FIELDS,
}
"""Options with a fixed set of values: configure() rejects any other."""
FIX_OPTIONS = {f"harmony_{name}" for name in FixSettings.__dataclass_fields__}
"""The options FixSettings is made from."""


def load_options(loader: Any) -> None:
    """Declare every option of HarmonyFilter (mitmproxy shows each help text in --options)."""
    loader.add_option(
        "harmony_models",
        str,
        r"gpt[-_]?oss",
        "Regular expression (case-insensitive, searched) for the request's `model`: only "
        "chat completions for matching models are filtered.",
    )
    loader.add_option(
        "harmony_hosts",
        Sequence[str],
        [],
        "Host names (glob patterns such as `*.groq.com`) to filter; empty means every host. "
        "Useful in system-proxy mode.",
    )
    loader.add_option(
        "harmony_reasoning",
        str,
        "both",
        "Where the client gets the reasoning: `both` (reasoning_content and reasoning, same "
        "text), `reasoning_content`, `reasoning`, `think` (<think>…</think> before the "
        "content) or `drop`.",
        choices=REASONING_MODES,
    )
    loader.add_option(
        "harmony_tools",
        str,
        "openai",
        "How tool calls reach the client: `openai` tool_calls, `text` (readable text in the "
        "content) or `drop`.",
        choices=TOOL_MODES,
    )
    loader.add_option(
        "harmony_builtin_tools",
        str,
        "drop",
        "Calls to gpt-oss built-in tools (browser.*, python, container.*): `drop` them, or "
        "`surface` them as tool calls under their own name.",
        choices=BUILTIN_TOOL_MODES,
    )
    loader.add_option(
        "harmony_wrap_completion",
        bool,
        True,
        'Cline, Roo and Kilo (native tools) loop on "You did not use a tool" when the model '
        "answers in plain text: when their request declares attempt_completion (or only "
        "plan_mode_respond), wrap a plain answer in that tool call.",
    )
    _load_fix_options(loader)
    loader.add_option(
        "harmony_no_final_timeout",
        int,
        0,
        "End a stream for the client, with an OpenAI-format error event and [DONE], when it "
        "has produced no content and no tool call after this many seconds (0: no limit). "
        "gpt-oss can get stuck reasoning; this caps the wait.",
    )
    loader.add_option(
        "harmony_record_dir",
        str | None,
        None,
        "Save every filtered exchange in this directory as a replayable .flow recording: the "
        "client's request, the upstream response as received (stream chunks included), what "
        "the client got and what the filter did. Credentials are redacted.",
    )


def _load_fix_options(loader: Any) -> None:
    """The request fixes' options (see request_fixes.py and the README for each rule)."""
    defaults = FixSettings()
    loader.add_option(
        "harmony_tool_choice_none",
        str,
        defaults.tool_choice_none,
        '`tool_choice: "none"` with tools: `strip` (send neither upstream and drop any call '
        "the model still makes), `auto` or `keep`.",
        choices=TOOL_CHOICE_NONE_MODES,
    )
    loader.add_option(
        "harmony_keep_forced_tool_choice",
        bool,
        defaults.keep_forced_tool_choice,
        "Send forced tool choices (`required`, a named function) upstream as they are, instead "
        "of `auto` with the named tool first.",
    )
    loader.add_option(
        "harmony_max_tools",
        int,
        defaults.max_tools,
        "Most tools sent upstream; past it (or harmony_max_tools_bytes) the list is trimmed, "
        "keeping referenced and core tools first.",
    )
    loader.add_option(
        "harmony_max_tools_bytes",
        int,
        defaults.max_tools_bytes,
        "Most bytes of tool definitions (compact JSON) sent upstream.",
    )
    loader.add_option(
        "harmony_stop_tokens",
        bool,
        defaults.stop_tokens,
        "Add the Harmony stops <|return|> and <|call|> to the upstream request.",
    )
    loader.add_option(
        "harmony_extra_stops",
        Sequence[str],
        list(defaults.extra_stops),
        "More stop strings for the upstream (at most 4 are sent in all).",
    )
    loader.add_option(
        "harmony_effort_from_temperature",
        bool,
        defaults.effort_from_temperature,
        "Without a reasoning effort, derive one from temperature: <= 0.3 low, <= 0.7 medium, "
        "else high.",
    )
    loader.add_option(
        "harmony_temperature",
        str | None,
        None,
        "Override the client's temperature with this number (gpt-oss is trained for 1.0; "
        "several clients send 0). Unset: keep the client's.",
    )
    loader.add_option(
        "harmony_developer_to_system",
        bool,
        defaults.developer_to_system,
        "Send `developer` messages as `system`, for servers that reject the developer role.",
    )
    loader.add_option(
        "harmony_upstream_reasoning",
        str,
        defaults.upstream_reasoning,
        "The field earlier reasoning is sent back upstream in: `reasoning_content` "
        "(llama.cpp), `reasoning` (vLLM, Ollama) or `none`.",
        choices=UPSTREAM_REASONING_FIELDS,
    )
    loader.add_option(
        "harmony_reinject_reasoning",
        bool,
        defaults.reinject_reasoning,
        "Put back the reasoning of a tool-calling answer when the client sends the tool "
        "result without it (gpt-oss fails tool chains far more often without it).",
    )
    loader.add_option(
        "harmony_disabled_fixes",
        Sequence[str],
        [],
        "Request fixes not to apply, by rule name (see the README's table).",
    )
