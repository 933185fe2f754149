"""The request fixes, rule by rule, on the bodies real clients send (tests/data/requests).

Each test shows what the upstream receives. The bodies are built from the clients' sources; see
the `source` field of each file.
"""

import copy
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from harmony_filter.fixes import tool_rules
from harmony_filter.fixes.clients import detect_client
from harmony_filter.fixes.clients import tool_name
from harmony_filter.fixes.reasoning_cache import ReasoningCache
from harmony_filter.fixes.request_fixes import RULES
from harmony_filter.fixes.request_fixes import FixResult
from harmony_filter.fixes.request_fixes import FixSettings
from harmony_filter.fixes.request_fixes import fix_request
from harmony_filter.fixes.tool_rules import DESCRIPTION_LIMIT

REQUESTS = Path(__file__).parent / "data" / "requests"
HARMONY_STOPS = ["<|return|>", "<|call|>"]
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")
SPECIAL_TOKEN = re.compile(r"<\|(?:start|end|message|channel|constrain|return|call)\|>")


def load(name: str) -> tuple[dict[str, Any], str]:
    fixture = json.loads((REQUESTS / f"{name}.json").read_text())
    return fixture["body"], detect_client(fixture["headers"].items(), fixture["body"])


def fix(
    body: dict[str, Any],
    client: str = "unknown",
    cache: ReasoningCache | None = None,
    **options: Any,
) -> FixResult:
    return fix_request(body, client, FixSettings(**options), cache)


def names(tools: list[dict[str, Any]]) -> list[str | None]:
    return [tool_name(t) for t in tools]


def reasoning_fields(message: dict[str, Any]) -> dict[str, Any]:
    keys = ("reasoning_content", "reasoning", "reasoning_details")
    return {key: message[key] for key in keys if key in message}


# -- one whole body ------------------------------------------------------------------------------


def test_openai_sdk_request_as_the_upstream_receives_it() -> None:
    body, client = load("openai_sdk")
    result = fix(body, client)
    assert result.body == {
        "model": "openai/gpt-oss-20b",
        "messages": [
            {
                "role": "developer",
                "content": "You are the billing assistant of ACME. Use the tools.\n\n"
                "Answer in English.",
            },
            {"role": "user", "content": "Why was I charged twice on invoice INV-1042?"},
        ],
        "tools": [body["tools"][1], body["tools"][0]],  # the forced tool first
        "tool_choice": "auto",
        "stop": HARMONY_STOPS,
        "reasoning_effort": "low",
        "max_completion_tokens": 2048,
        "max_tokens": 2048,
        "temperature": 0.2,
    }
    assert result.applied == [
        "leading-system-merged",
        "tool_choice-forced-to-auto",
        "forced-tool-moved-first",
        "stop-moved-to-proxy",
        "harmony-stops-added",
        "effort-mapped",
        "max_tokens-from-max_completion_tokens",
    ]
    assert result.client_stops == ["\nObservation:"]
    assert result.drop_tool_calls is False


def test_a_well_behaved_request_only_gets_the_harmony_stops() -> None:
    body, client = load("cline_cli")
    result = fix(body, client, ReasoningCache())
    assert result.applied == ["harmony-stops-added"]
    assert result.body == {**body, "stop": HARMONY_STOPS}
    # the Cline CLI sends its reasoning back, all within one tool chain: all of it stays
    assert [m.get("reasoning_content") for m in result.body["messages"]] == [
        m.get("reasoning_content") for m in body["messages"]
    ]


# -- 2. tool_choice -----------------------------------------------------------------------------


def test_forced_choices_become_auto_unless_kept() -> None:
    body, client = load("opencode_structured")
    result = fix(body, client)
    assert result.body["tool_choice"] == "auto"
    assert result.body["tools"] == body["tools"]  # "required" names no tool: order kept
    assert "tool_choice-forced-to-auto" in result.applied

    kept = fix(body, client, keep_forced_tool_choice=True)
    assert kept.body["tool_choice"] == "required"
    named, _ = load("openai_sdk")
    kept = fix(named, keep_forced_tool_choice=True)
    assert kept.body["tool_choice"] == named["tool_choice"]
    assert kept.body["tools"] == named["tools"]


def test_a_named_choice_in_the_responses_shape_is_understood() -> None:
    body, _ = load("openai_sdk")
    body["tool_choice"] = {"type": "function", "name": "lookup_invoice"}
    result = fix(body)
    assert result.body["tool_choice"] == "auto"
    assert names(result.body["tools"]) == ["lookup_invoice", "refund"]


def test_tool_choice_none_strips_the_tools_by_default() -> None:
    body, client = load("cline_extension")
    body["tool_choice"] = "none"
    result = fix(body, client)
    assert {"tools", "tool_choice", "parallel_tool_calls"}.isdisjoint(result.body)
    assert result.applied[0] == "tool_choice-none-stripped"
    assert result.drop_tool_calls is True


def test_tool_choice_none_as_auto_or_kept() -> None:
    body, client = load("cline_extension")
    body["tool_choice"] = "none"
    auto = fix(body, client, tool_choice_none="auto")
    assert auto.body["tool_choice"] == "auto" and auto.body["tools"] == body["tools"]
    assert auto.drop_tool_calls is False
    kept = fix(body, client, tool_choice_none="keep")
    assert kept.body["tool_choice"] == "none" and kept.body["tools"] == body["tools"]


@pytest.mark.parametrize("choice", ["auto", "none", None, {"type": "function", "name": "x"}])
def test_tool_choice_without_tools_is_removed(choice: Any) -> None:
    body, client = load("opencode_title")
    result = fix({**body, "tool_choice": choice, "tools": []}, client)
    assert "tool_choice" not in result.body
    assert "tool_choice-without-tools-removed" in result.applied
    assert result.drop_tool_calls is False


def test_a_null_tool_choice_is_removed() -> None:
    body, client = load("cline_extension")
    result = fix({**body, "tool_choice": None}, client)
    assert "tool_choice" not in result.body and result.body["tools"] == body["tools"]
    assert "tool_choice-null-removed" in result.applied


# -- 3. tool trimming ---------------------------------------------------------------------------


def test_kilo_with_55_tools_keeps_40_referenced_and_core_first() -> None:
    body, client = load("kilo")
    assert len(body["tools"]) == 55
    result = fix(body, client)
    kept = names(result.body["tools"])
    assert len(kept) == 40
    assert "mcp--github--get_issue" in kept  # last in the list, but called in the history
    native = [n for n in names(body["tools"]) if not str(n).startswith("mcp--")]
    assert set(native) <= set(kept)
    original = names(body["tools"])
    assert kept == sorted(kept, key=original.index)  # the client's order is kept
    assert result.applied[:3] == [
        "tool-schemas-slimmed",
        "tool-descriptions-shortened",
        "tools-trimmed",
    ]


def test_referenced_tools_come_before_core_tools_and_may_exceed_the_budget() -> None:
    body, client = load("kilo")
    assert names(fix(body, client, max_tools=5).body["tools"]) == [
        "read_file",  # called in the history, and core
        "write_to_file",
        "apply_diff",
        "search_files",
        "mcp--github--get_issue",  # called in the history: before any other core tool
    ]
    assert names(fix(body, client, max_tools=1).body["tools"]) == [
        "read_file",
        "mcp--github--get_issue",
    ]


def test_without_the_history_reference_the_last_mcp_tool_would_go() -> None:
    body, client = load("kilo")
    body["messages"] = body["messages"][:2]
    assert "mcp--github--get_issue" not in names(fix(body, client).body["tools"])


def test_slimming_removes_schema_noise_but_keeps_a_property_called_examples() -> None:
    body, client = load("kilo")
    tools = {tool_name(t): t for t in fix(body, client).body["tools"]}
    assert "$schema" not in json.dumps(list(tools.values()))
    labels = tools["mcp--github--create_issue"]["function"]["parameters"]["properties"]["labels"]
    assert labels == {"type": "array", "items": {"type": "string"}}
    snippet = tools["mcp--docs--add_snippet"]["function"]["parameters"]
    assert snippet["required"] == ["title", "examples"]
    assert snippet["properties"]["examples"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Usage examples to store with the snippet.",
    }
    description = tools["mcp--github--search_code"]["function"]["description"]
    assert len(description) == DESCRIPTION_LIMIT and description.endswith("…")


def test_schema_cleaning_leaves_data_and_definition_names_alone() -> None:
    schema = {
        "$schema": "x",
        "type": "object",
        "examples": [{}],
        "properties": {
            "$schema": {"type": "string", "examples": ["a"]},
            "mode": {"enum": ["examples"], "default": {"examples": 1}},
            "list": {"type": "array", "items": [{"examples": [1], "type": "integer"}]},
        },
        "$defs": {"examples": {"type": "string", "$schema": "y"}},
    }
    assert tool_rules._clean_schema(schema) == {
        "type": "object",
        "properties": {
            "$schema": {"type": "string"},
            "mode": {"enum": ["examples"], "default": {"examples": 1}},
            "list": {"type": "array", "items": [{"type": "integer"}]},
        },
        "$defs": {"examples": {"type": "string"}},
    }


def test_the_byte_budget_keeps_referenced_then_core_tools() -> None:
    body, client = load("cline_cli")
    result = fix(body, client, max_tools_bytes=4000)
    kept = names(result.body["tools"])
    assert {"read_file", "replace_in_file", "attempt_completion"} <= set(kept)  # called before
    assert not {"report_bug", "web_search", "browser_action"} & set(kept)  # neither
    assert len(json.dumps(result.body["tools"], separators=(",", ":"))) <= 4000


def test_a_tool_named_by_tool_choice_survives_trimming() -> None:
    body, client = load("cline_extension")
    body["tool_choice"] = {"type": "function", "function": {"name": "web_fetch"}}
    result = fix(body, client, max_tools=3)
    kept = names(result.body["tools"])
    assert kept[0] == "web_fetch"  # moved first by the tool_choice rule
    assert {"read_file", "execute_command"} <= set(kept)  # called in the history
    assert len(kept) == 3


def test_tools_within_budget_are_left_exactly_as_sent() -> None:
    body, client = load("kilo")
    result = fix(body, client, max_tools=100)
    assert result.body["tools"] is body["tools"]
    assert not any(name.startswith("tool") for name in result.applied)


# -- 4. stops -----------------------------------------------------------------------------------


def test_client_stops_move_to_the_proxy_and_harmony_stops_go_upstream() -> None:
    body, _ = load("openai_sdk")
    result = fix({**body, "stop": "\n\nUser:"})
    assert result.body["stop"] == HARMONY_STOPS
    assert result.client_stops == ["\n\nUser:"]


def test_extra_stops_and_the_limit_of_four() -> None:
    body, _ = load("openai_sdk")
    extra = ("</answer>", "<|return|>", "A", "B", "C")
    assert fix(body, extra_stops=extra).body["stop"] == [*HARMONY_STOPS, "</answer>", "A"]
    assert fix(body, stop_tokens=False, extra_stops=("</answer>",)).body["stop"] == ["</answer>"]


def test_without_harmony_stops_the_client_stops_are_just_removed() -> None:
    body, _ = load("openai_sdk")
    result = fix(body, stop_tokens=False)
    assert "stop" not in result.body
    assert result.client_stops == ["\nObservation:"]
    untouched, _ = load("aider")
    assert "stop" not in fix(untouched, stop_tokens=False).body


# -- 5. effort ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "upstream"),
    [
        ("none", "low"),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("xhigh", "high"),
        ("max", "high"),
        ("HIGH", "high"),
        ("auto", None),
        (5, None),
        (None, None),
    ],
)
def test_reasoning_effort_values(sent: Any, upstream: str | None) -> None:
    body, _ = load("opencode_title")
    assert fix({**body, "reasoning_effort": sent}).body.get("reasoning_effort") == upstream


def test_zed_xhigh_becomes_high() -> None:
    body, client = load("zed")
    result = fix(body, client)
    assert result.body["reasoning_effort"] == "high"
    assert "effort-mapped" in result.applied


def test_codex_reasoning_effort_object_is_mapped_and_also_sent_as_reasoning_effort() -> None:
    body, client = load("codex")
    result = fix(body, client)
    assert result.body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert result.body["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("reasoning", "upstream"),
    [({"effort": "auto"}, None), ({"effort": "auto", "summary": "auto"}, {"summary": "auto"})],
)
def test_an_unknown_effort_in_the_reasoning_object_is_dropped(
    reasoning: dict[str, str], upstream: dict[str, str] | None
) -> None:
    body, client = load("codex")
    result = fix({**body, "reasoning": reasoning}, client)
    assert result.body.get("reasoning") == upstream
    assert "reasoning_effort" not in result.body
    assert "effort-dropped" in result.applied


@pytest.mark.parametrize(
    ("temperature", "effort"), [(0, "low"), (0.3, "low"), (0.5, "medium"), (1.0, "high")]
)
def test_effort_from_temperature(temperature: float, effort: str) -> None:
    body, client = load("roo_xml")
    result = fix({**body, "temperature": temperature}, client, effort_from_temperature=True)
    assert result.body["reasoning_effort"] == effort
    assert "reasoning_effort" not in fix({**body, "temperature": temperature}, client).body


def test_effort_from_temperature_reads_the_clients_temperature_and_yields_to_a_given_effort() -> (
    None
):
    body, client = load("roo_xml")
    result = fix(body, client, effort_from_temperature=True, temperature=1.0)
    assert (result.body["reasoning_effort"], result.body["temperature"]) == ("low", 1.0)
    zed, client = load("zed")
    assert (
        fix({**zed, "temperature": 0}, client, effort_from_temperature=True).body[
            "reasoning_effort"
        ]
        == "high"
    )


# -- 6, 7. sampling and token limits -----------------------------------------------------------


def test_temperature_override() -> None:
    body, client = load("roo_xml")
    assert fix(body, client).body["temperature"] == 0
    result = fix(body, client, temperature=1.0)
    assert result.body["temperature"] == 1.0 and "temperature-overridden" in result.applied
    title, client = load("opencode_title")
    assert fix(title, client, temperature=0.8).body["temperature"] == 0.8


def test_max_completion_tokens_is_also_sent_as_max_tokens() -> None:
    body, client = load("zed")
    result = fix(body, client)
    assert (result.body["max_completion_tokens"], result.body["max_tokens"]) == (8192, 8192)
    both = fix({**body, "max_tokens": 100}, client).body
    assert both["max_tokens"] == 100
    assert "max_tokens" not in fix({**body, "max_completion_tokens": True}, client).body


# -- 8. roles -----------------------------------------------------------------------------------


def test_opencode_leading_system_messages_are_merged() -> None:
    body, client = load("opencode_agent")
    messages = fix(body, client).body["messages"]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You are opencode")
    assert messages[0]["content"].endswith("</env>")
    assert [m["role"] for m in messages[1:3]] == ["user", "assistant"]


def test_developer_to_system() -> None:
    body, client = load("openai_sdk")
    body["messages"].append({"role": "developer", "content": "Be brief."})
    messages = fix(body, client, developer_to_system=True).body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "system"]  # later ones not merged
    assert "developer-to-system" in fix(body, client, developer_to_system=True).applied


# -- 9. history ---------------------------------------------------------------------------------


def test_roo_leaked_harmony_call_becomes_a_real_call() -> None:
    body, client = load("roo_xml")
    result = fix(body, client)
    assistant = result.body["messages"][2]
    assert assistant["content"] is None
    [call] = assistant["tool_calls"]
    assert CALL_ID.match(call["id"])
    assert call["function"] == {"name": "read_file", "arguments": '{"path":"tests/test_app.py"}'}
    assert reasoning_fields(assistant) == {}  # analysis before the last user message: dropped
    assert not SPECIAL_TOKEN.search(json.dumps(result.body["messages"]))
    assert fix(body, client).body == result.body  # the recovered id is the same every time


def test_recovered_calls_get_distinct_ids_even_when_identical() -> None:
    body, client = load("roo_xml")
    leaked, error = body["messages"][2], body["messages"][3]
    body["messages"][2:] = [leaked, error, leaked, error]
    messages = fix(body, client).body["messages"]
    first, second = messages[2]["tool_calls"][0], messages[4]["tool_calls"][0]
    assert first["function"] == second["function"]
    assert first["id"] != second["id"]


def test_aider_leaked_answer_keeps_only_its_final_text() -> None:
    body, client = load("aider")
    assistant = fix(body, client).body["messages"][2]
    assert assistant["content"].startswith("todo.py\n```python\n<<<<<<< SEARCH")
    assert assistant["content"].endswith(">>>>>>> REPLACE\n```")
    assert "tool_calls" not in assistant and reasoning_fields(assistant) == {}


def test_markup_in_a_reasoning_field_of_the_current_chain_is_split() -> None:
    body, client = load("cline_cli")
    body["messages"][-2]["reasoning_content"] = (
        "Present the result.<|end|><|start|>assistant<|channel|>final<|message|>Done."
    )
    message = fix(body, client).body["messages"][-2]
    assert message["reasoning_content"] == "Present the result."
    assert message["content"] == "Done."
    assert [c["id"] for c in message["tool_calls"]] == ["call_Zc02pd"]


def test_reasoning_is_kept_only_after_the_last_user_message() -> None:
    for name in ("zed", "opencode_agent"):
        body, client = load(name)
        messages = fix(body, client).body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                assert bool(reasoning_fields(message)) == (index > last_user), (name, index)


def test_codex_reasoning_field_is_renamed_for_the_upstream() -> None:
    body, client = load("codex")
    result = fix(body, client)
    assert reasoning_fields(result.body["messages"][3]) == {
        "reasoning_content": "Run pytest first to see the failures."
    }
    assert "reasoning-field-normalised" in result.applied
    as_vllm = fix(body, client, upstream_reasoning="reasoning").body
    assert reasoning_fields(as_vllm["messages"][3]) == {
        "reasoning": "Run pytest first to see the failures."
    }


def test_reasoning_details_are_normalised_and_none_removes_every_field() -> None:
    body, client = load("cline_extension")
    body["messages"][-2]["reasoning_details"] = [
        {"type": "reasoning.text", "text": "Run it "},
        {"type": "reasoning.encrypted", "data": "…"},
        {"type": "reasoning.text", "text": "to see the error."},
    ]
    fixed = fix(body, client).body["messages"][-2]
    assert reasoning_fields(fixed) == {"reasoning_content": "Run it to see the error."}
    zed, client = load("zed")
    result = fix(zed, client, upstream_reasoning="none")
    assert all(reasoning_fields(m) == {} for m in result.body["messages"])
    assert "reasoning-removed" in result.applied


def test_continue_pruned_tool_result_becomes_a_user_message() -> None:
    body, client = load("continue")
    result = fix(body, client)
    assert result.body["messages"][1] == {
        "role": "user",
        "content": "Tool result (call_pruned01):\ntodo.py\ncli.py\ntests/",
    }
    assert result.body["messages"][4] == body["messages"][4]  # answered call: still a tool result
    assert "orphan-tool-result-to-user" in result.applied


def test_an_orphan_tool_result_is_named_by_its_tool_when_known() -> None:
    body, client = load("continue")
    body["messages"][1] = {
        "role": "tool",
        "name": "ls",
        "content": [{"type": "text", "text": "todo.py"}],
    }
    assert fix(body, client).body["messages"][1]["content"] == "Tool result (ls):\ntodo.py"


# -- 10. reasoning re-injection -----------------------------------------------------------------


def cline_cache() -> ReasoningCache:
    cache = ReasoningCache()
    cache.remember(["call_3fa1c0d2e9b84d7aa1b2c3d4"], "Read todo.py to see how it loads.")
    cache.remember(["call_77c0e51b2a9f4c11b0d9e8f7"], "Reproduce the crash.")
    return cache


def test_cline_dropped_reasoning_is_put_back() -> None:
    body, client = load("cline_extension")
    result = fix(body, client, cline_cache())
    messages = result.body["messages"]
    assert messages[2]["reasoning_content"] == "Read todo.py to see how it loads."
    assert messages[4]["reasoning_content"] == "Reproduce the crash."
    assert "reasoning-reinjected" in result.applied
    as_vllm = fix(body, client, cline_cache(), upstream_reasoning="reasoning").body
    assert as_vllm["messages"][2]["reasoning"] == "Read todo.py to see how it loads."


@pytest.mark.parametrize("options", [{"reinject_reasoning": False}, {"upstream_reasoning": "none"}])
def test_reinjection_can_be_switched_off(options: dict[str, Any]) -> None:
    body, client = load("cline_extension")
    result = fix(body, client, cline_cache(), **options)
    assert all(reasoning_fields(m) == {} for m in result.body["messages"])


def test_reinjection_only_fills_current_chain_messages_that_lack_reasoning() -> None:
    body, client = load("cline_extension")
    body["messages"][4]["reasoning_content"] = "The client kept this one."
    body["messages"].append({"role": "user", "content": "Thanks. Next question."})
    messages = fix(body, client, cline_cache()).body["messages"]
    assert reasoning_fields(messages[2]) == {}  # before the last user message now
    assert reasoning_fields(messages[4]) == {}
    body["messages"].pop()
    messages = fix(body, client, cline_cache()).body["messages"]
    assert messages[4]["reasoning_content"] == "The client kept this one."
    assert fix(body, client, ReasoningCache()).body["messages"][2] == body["messages"][2]


def test_two_turn_tool_chain_gets_its_reasoning_back() -> None:
    """Turn 1: the model reasons and calls a tool; the response side remembers the reasoning
    under the call id it gave the client. Turn 2: Cline sends the history back without the
    reasoning; the upstream gets it anyway."""
    cache = ReasoningCache()
    body, client = load("cline_extension")
    turn1 = {**body, "messages": body["messages"][:2]}
    assert fix(turn1, client, cache).applied == ["harmony-stops-added"]
    cache.remember(["call_3fa1c0d2e9b84d7aa1b2c3d4"], "Open todo.py: the crash is in load().")
    turn2 = {**body, "messages": body["messages"][:4]}
    upstream = fix(turn2, client, cache).body
    assert upstream["messages"][2] == {
        **body["messages"][2],
        "reasoning_content": "Open todo.py: the crash is in load().",
    }


# -- robustness ---------------------------------------------------------------------------------

ALL_ON = {
    "tool_choice_none": "auto",
    "max_tools": 3,
    "max_tools_bytes": 500,
    "extra_stops": ("END",),
    "effort_from_temperature": True,
    "temperature": 1.0,
    "developer_to_system": True,
    "upstream_reasoning": "reasoning",
}


@pytest.mark.parametrize("name", sorted(p.stem for p in REQUESTS.glob("*.json")))
@pytest.mark.parametrize("options", [{}, ALL_ON], ids=["defaults", "all-on"])
def test_the_client_body_is_never_changed(name: str, options: dict[str, Any]) -> None:
    body, client = load(name)
    before = copy.deepcopy(body)
    result = fix(body, client, cline_cache(), **options)
    assert body == before
    json.dumps(result.body)


def test_a_failing_rule_is_skipped_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(body: dict[str, Any], context: Any) -> tuple[dict[str, Any], list[str]]:
        half_done = {**body, "tool_choice": "auto"}
        raise RuntimeError(f"boom before returning {len(half_done)} keys")

    monkeypatch.setitem(RULES, "tool_choice", broken)
    body, client = load("openai_sdk")
    with caplog.at_level(logging.WARNING, logger="harmony_filter.fixes.request_fixes"):
        result = fix(copy.deepcopy(body), client)
    assert "'tool_choice'" in caplog.text and "boom" in caplog.text
    assert result.body["tool_choice"] == body["tool_choice"]
    assert result.body["messages"][0]["content"].endswith("Answer in English.")  # roles ran
    assert "stop-moved-to-proxy" in result.applied and "effort-mapped" in result.applied


def test_fixes_can_be_disabled_by_name() -> None:
    body, client = load("openai_sdk")
    result = fix(body, client, disabled_fixes=frozenset({"stops", "roles"}))
    assert result.body["stop"] == body["stop"] and result.client_stops == []
    assert result.body["messages"] == body["messages"]
    assert "effort-mapped" in result.applied


@pytest.mark.parametrize(
    "options",
    [
        {"tool_choice_none": "drop"},
        {"upstream_reasoning": "thinking"},
        {"max_tools": 0},
        {"disabled_fixes": frozenset({"no-such-fix"})},
    ],
)
def test_invalid_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FixSettings(**options)


def mitmproxy_like_options(**changes: Any) -> SimpleNamespace:
    defaults = {f"harmony_{name}": value for name, value in asdict(FixSettings()).items()}
    defaults.update(harmony_temperature=None, harmony_extra_stops=[], harmony_disabled_fixes=[])
    return SimpleNamespace(**{**defaults, **{f"harmony_{k}": v for k, v in changes.items()}})


def test_settings_from_mitmproxy_options() -> None:
    assert FixSettings.from_options(mitmproxy_like_options()) == FixSettings()
    settings = FixSettings.from_options(
        mitmproxy_like_options(temperature="1.0", extra_stops=["END"], disabled_fixes=["stops"])
    )
    assert (settings.temperature, settings.extra_stops) == (1.0, ("END",))
    assert settings.disabled_fixes == frozenset({"stops"})
    assert FixSettings.from_options(mitmproxy_like_options(temperature="")).temperature is None
    with pytest.raises(ValueError):
        FixSettings.from_options(mitmproxy_like_options(temperature="warm"))


@pytest.mark.parametrize("body", [None, [], "text", 3, [{"messages": []}]])
def test_a_body_that_is_not_an_object_passes_through(body: Any) -> None:
    assert fix(body) == FixResult(body, [], [], False)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
texts = st.text(max_size=12) | st.lists(
    st.sampled_from(
        [
            "<|channel|>",
            "analysis",
            "final",
            "<|message|>",
            "<|end|>",
            "<|start|>",
            "assistant",
            " to=functions.f",
            "<|call|>",
            "{}",
            "x",
        ]
    ),
    max_size=8,
).map("".join)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["c1", "c2"]) | json_values},
        optional={
            "function": st.fixed_dictionaries(
                {}, optional={"name": st.sampled_from(["f", "g"]) | json_values}
            )
        },
    ),
    max_size=2,
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | json_values},
    optional={
        "content": texts | json_values,
        "reasoning_content": texts | json_values,
        "reasoning": texts | json_values,
        "reasoning_details": st.lists(st.fixed_dictionaries({"text": texts | json_values}))
        | json_values,
        "tool_calls": tool_calls | json_values,
        "tool_call_id": st.sampled_from(["c1", "c2"]) | json_values,
        "name": json_values,
    },
)
tools = st.fixed_dictionaries(
    {"type": st.just("function")},
    optional={
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["f", "g", "read_file"]) | json_values},
            optional={
                "description": st.text(max_size=3000) | json_values,
                "parameters": json_values,
            },
        )
        | json_values
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(messages, max_size=6) | json_values,
        "tools": st.lists(tools, max_size=5) | json_values,
        "tool_choice": st.sampled_from(["none", "auto", "required", None])
        | st.fixed_dictionaries({"type": st.just("function"), "function": json_values})
        | json_values,
        "stop": st.lists(texts, max_size=3) | json_values,
        "reasoning_effort": st.sampled_from(["none", "xhigh", "medium"]) | json_values,
        "reasoning": st.fixed_dictionaries({"effort": json_values}) | json_values,
        "temperature": json_values,
        "max_completion_tokens": json_values,
        "max_tokens": json_values,
    },
)
fix_settings = st.builds(
    FixSettings,
    tool_choice_none=st.sampled_from(["strip", "auto", "keep"]),
    keep_forced_tool_choice=st.booleans(),
    max_tools=st.integers(1, 4),
    max_tools_bytes=st.integers(1, 400),
    stop_tokens=st.booleans(),
    extra_stops=st.lists(st.text(max_size=3), max_size=4).map(tuple),
    effort_from_temperature=st.booleans(),
    temperature=st.none() | st.floats(0, 2),
    developer_to_system=st.booleans(),
    upstream_reasoning=st.sampled_from(["reasoning_content", "reasoning", "none"]),
)


class Collect(logging.Handler):
    """Collects log records (the caplog fixture does not reset between hypothesis examples)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(requests, fix_settings, st.sampled_from(["cline", "roo", "unknown"]))
def test_no_rule_fails_on_any_request_shape(
    body: dict[str, Any], options: FixSettings, client: str
) -> None:
    before = copy.deepcopy(body)
    cache = ReasoningCache()
    cache.remember(["c1"], "cached")
    failures = Collect()
    logger = logging.getLogger("harmony_filter.fixes.request_fixes")
    logger.addHandler(failures)
    try:
        result = fix_request(body, client, options, cache)
    finally:
        logger.removeHandler(failures)
    assert failures.records == []
    assert body == before
    json.dumps(result.body, allow_nan=False)
    assert len(result.applied) == len(set(result.applied))


@given(json_values)
def test_any_json_value_is_accepted(value: Any) -> None:
    result = fix_request(value, "unknown", FixSettings())
    json.dumps(result.body)
