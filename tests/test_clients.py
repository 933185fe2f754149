"""Client detection from headers and body, on the recorded request shapes of every client."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harmony_filter.fixes.clients import CLIENTS
from harmony_filter.fixes.clients import CORE_TOOLS
from harmony_filter.fixes.clients import detect_client
from harmony_filter.fixes.clients import system_prompt
from harmony_filter.fixes.clients import tool_name

REQUESTS = Path(__file__).parent / "data" / "requests"
FIXTURES = sorted(REQUESTS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_every_recorded_client_is_recognised(path: Path) -> None:
    fixture = load(path)
    assert detect_client(fixture["headers"].items(), fixture["body"]) == fixture["client"]


def test_the_fixtures_cover_every_client_but_unknown() -> None:
    assert {load(p)["client"] for p in FIXTURES} == set(CLIENTS) - {"unknown"}


def test_cline_cli_is_known_by_its_system_prompt_behind_an_ai_sdk_user_agent() -> None:
    fixture = load(REQUESTS / "cline_cli.json")
    assert "cline" not in fixture["headers"]["User-Agent"].lower()
    assert detect_client(fixture["headers"].items(), fixture["body"]) == "cline"
    assert detect_client(fixture["headers"].items(), {"messages": []}) == "unknown"


CLINE_BODY = {"messages": [{"role": "system", "content": "You are Cline, a highly skilled…"}]}
NO_BODY: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"X-Title": "Cline", "HTTP-Referer": "https://cline.bot"}, NO_BODY, "cline"),
        ({"user-agent": "Cline/3.36.0"}, NO_BODY, "cline"),  # header names in any case
        # Roo's referer names "Roo-Cline": it must not read as Cline
        ({"HTTP-Referer": "https://github.com/RooVetGit/Roo-Cline"}, NO_BODY, "roo"),
        ({"x-kilocode-mode": "code", "User-Agent": "node"}, NO_BODY, "kilo"),
        ({"originator": "codex_cli_rs"}, NO_BODY, "codex"),
        ({"User-Agent": "Zed/0.203.5 (linux; x86_64)"}, NO_BODY, "zed"),
        ({"User-Agent": "opencode/1.0.1 ai-sdk/openai-compatible/1.0.2"}, CLINE_BODY, "opencode"),
        # a client's own header wins over its SDK's, and a system prompt over a generic SDK
        ({"User-Agent": "OpenAI/JS 5.0.0"}, CLINE_BODY, "cline"),
        ({"User-Agent": "OpenAI/JS 5.0.0"}, {"messages": []}, "openai-sdk"),
        ({"X-Stainless-Lang": "python"}, NO_BODY, "openai-sdk"),
        (
            {"User-Agent": "OpenAI/Python 1.99.9"},
            {"messages": [{"role": "system", "content": "Act as an expert software developer."}]},
            "aider",
        ),
        (
            {},
            {
                "messages": [
                    {"role": "developer", "content": [{"type": "text", "text": "You are Roo"}]}
                ]
            },
            "roo",
        ),
        (
            {},
            {
                "tools": [
                    {"type": "function", "function": {"name": n}} for n in ("edit_file", "reapply")
                ]
            },
            "unknown",  # one Cursor tool name is not enough
        ),
        (
            {},
            {
                "tools": [
                    {"type": "function", "function": {"name": n}}
                    for n in ("run_terminal_cmd", "reapply")
                ]
            },
            "cursor",
        ),
        ({}, {"prompt_cache_key": "k", "max_completion_tokens": 10}, "zed"),
        ({}, {"prompt_cache_key": "k", "max_completion_tokens": 10, "max_tokens": 10}, "unknown"),
        (
            {"User-Agent": "curl/8.5.0"},
            {"messages": [{"role": "user", "content": "hi"}]},
            "unknown",
        ),
    ],
)
def test_detection_signals(headers: dict[str, str], body: Any, expected: str) -> None:
    assert detect_client(headers.items(), body) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.dictionaries(st.sampled_from(["User-Agent", "X-Title", "x-kilocode-x"]), st.text()),
    json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "messages": st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["system", "user"]), "content": json_values}
                )
            ),
            "tools": st.lists(json_values),
        },
    ),
)
def test_detection_never_fails_on_any_json(headers: dict[str, str], body: Any) -> None:
    assert detect_client(headers.items(), body) in CLIENTS


def test_system_prompt_and_tool_name_read_both_shapes() -> None:
    assert system_prompt({"messages": "x"}) == ""
    assert system_prompt({"messages": [{"role": "user", "content": "u"}]}) == ""
    assert tool_name({"type": "function", "function": {"name": "a"}}) == "a"
    assert tool_name({"type": "function", "name": "b"}) == "b"  # Responses shape
    assert tool_name({"type": "web_search"}) is None


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_core_tool_lists_name_the_tools_clients_really_send(path: Path) -> None:
    """Guards against typos: every client with tools in its fixture has core tools among them."""
    fixture = load(path)
    names = {tool_name(t) for t in fixture["body"].get("tools", [])}
    assert set(CORE_TOOLS) <= set(CLIENTS)
    if names and fixture["client"] in CORE_TOOLS:
        assert len(names & CORE_TOOLS[fixture["client"]]) >= 3
