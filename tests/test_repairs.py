"""Repairs that need the request: names, arguments, withheld calls, JSON answers, mandatory-tool
and XML-tool clients, client stop strings; streamed and not."""

import json

import pytest

from harmony_filter.events import Content
from harmony_filter.events import Reasoning
from harmony_filter.events import ToolCallArgs
from harmony_filter.events import ToolCallBegin
from harmony_filter.events import ToolCallEnd
from harmony_filter.events import merge_text_events
from harmony_filter.fixes.repairs import Repairer
from harmony_filter.fixes.repairs import RequestView
from harmony_filter.fixes.repairs import answer_as_call
from harmony_filter.fixes.repairs import render_xml_call
from harmony_filter.fixes.repairs import repair_arguments
from harmony_filter.fixes.repairs import repair_tool_name
from harmony_filter.fixes.repairs import request_view
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter
from harmony_filter.rewrite.whole_response import rewrite_completion
from harmony_filter.tools.judge import from_json
from harmony_filter.tools.judge import from_sse

SHELL = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = {"shell": SHELL, "get_weather": WEATHER, "read_file": {}}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("shell", "shell"),
        ("functions.shell", "shell"),
        ("shell<|channel|>commentary", "shell"),
        ("shelljson", "shell"),
        ("Get-Weather", "get_weather"),
        ("get weather", "get_weather"),
        ("assistant<|channel|>analysis", None),
        ("python", None),
    ],
)
def test_tool_names(name: str, expected: str | None) -> None:
    assert repair_tool_name(name, TOOLS) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"command": "ls"}', '{"command":"ls"}'),
        ('[{"command":"ls"}]', '{"command":"ls"}'),
        ('{"name":"shell","arguments":{"command":"ls"}}', '{"command":"ls"}'),
        ('{"name":"shell","parameters":"{\\"command\\":\\"ls\\"}"}', '{"command":"ls"}'),
        (
            '{"name":"other","arguments":{"command":"ls"}}',
            '{"name":"other","arguments":{"command":"ls"}}',
        ),
        ("", "{}"),
        ('{"command": "l', None),
        ("[1, 2]", None),
        ('"ls"', None),
    ],
)
def test_arguments(text: str, expected: str | None) -> None:
    assert repair_arguments(text, "shell") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"command": "ls"}', ("shell", '{"command":"ls"}')),
        ('```json\n{"city": "Oslo"}\n```', ("get_weather", '{"city":"Oslo"}')),
        ('[{"city": "Oslo"}]', ("get_weather", '{"city":"Oslo"}')),
        (
            '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
            ("get_weather", '{"city":"Oslo"}'),
        ),
        ('{"city": "Oslo", "extra": 1}', None),
        ('{"unknown": 1}', None),
        ("The answer is {1}", None),
    ],
)
def test_json_answers(text: str, expected: tuple | None) -> None:
    assert answer_as_call(text, TOOLS) == expected


def test_xml_rendering() -> None:
    assert render_xml_call("read_file", '{"args":[{"file":{"path":"a.md"}}]}') == (
        "<read_file>\n<args>\n<file>\n<path>a.md</path>\n</file>\n</args>\n</read_file>"
    )
    assert render_xml_call("execute_command", '{"command":"ls","requires_approval":false}') == (
        "<execute_command>\n<command>ls</command>\n<requires_approval>false</requires_approval>\n"
        "</execute_command>"
    )


def repaired(view: RequestView, events: list) -> tuple[list, list[str]]:
    repairer = Repairer(view)
    out = []
    for event in events:  # one at a time, as a stream would deliver them
        out += repairer.feed([event])
    out += repairer.close()
    return merge_text_events(out), repairer.repairs


def call(name: str, args: str) -> list:
    return [ToolCallBegin(name), ToolCallArgs(args), ToolCallEnd()]


def test_repaired_call_keeps_its_id() -> None:
    events, repairs = repaired(
        RequestView(tools=TOOLS),
        [
            ToolCallBegin("functions.shelljson", "id-1"),
            ToolCallArgs('[{"command":'),
            ToolCallArgs('"ls"}]'),
            ToolCallEnd(),
        ],
    )
    assert events == [
        ToolCallBegin("shell", "id-1"),
        ToolCallArgs('{"command":"ls"}'),
        ToolCallEnd(),
    ]
    assert repairs == ["tool-name-repaired", "arguments-normalised"]


def test_unknown_tool_and_bad_arguments_become_text() -> None:
    events, repairs = repaired(RequestView(tools=TOOLS), call("nope", "{}") + call("shell", "{x"))
    assert len(events) == 1 and isinstance(events[0], Content)
    assert "`nope`" in events[0].text and "{x" in events[0].text
    assert repairs == ["unknown-tool-as-text", "bad-arguments-as-text"]


def test_calls_nobody_may_make() -> None:
    view = RequestView(tools={}, calls_allowed=False)
    events, _ = repaired(view, [Reasoning("r"), Content("Sure."), *call("shell", "{}")])
    assert events == [Reasoning("r"), Content("Sure.")]
    events, repairs = repaired(view, call("shell", '{"command":"ls"}'))
    assert len(events) == 1 and '{"command":"ls"}' in events[0].text  # never an empty answer
    assert repairs == ["withheld-call-dropped", "withheld-call-as-text"]


def test_json_answer_becomes_a_call_and_prose_flows() -> None:
    view = RequestView(tools=TOOLS)
    events, repairs = repaired(view, [Content('{"comm'), Content('and": "ls"}')])
    assert events == call("shell", '{"command":"ls"}') and repairs == ["json-answer-as-call"]
    events, _ = repaired(view, [Content("{not json at all"), Content(" really")])
    assert events == [Content("{not json at all really")]


def test_prose_is_not_held() -> None:
    repairer = Repairer(RequestView(tools=TOOLS))
    assert repairer.feed([Content("Hello")]) == [Content("Hello")]
    assert repairer.feed([Content("``")]) == [Content("``")]  # said already: no more holding


def test_mandatory_tool_client_answer_is_wrapped() -> None:
    view = RequestView(
        tools={"attempt_completion": {}, "read_file": {}},
        completion_tool=("attempt_completion", "result"),
    )
    events, repairs = repaired(view, [Reasoning("done"), Content("All "), Content("done.")])
    assert events == [
        Reasoning("done"),
        *call("attempt_completion", json.dumps({"result": "All done."})),
    ]
    assert repairs == ["answer-wrapped-in-attempt_completion"]
    events, _ = repaired(view, [Content("Reading."), *call("read_file", '{"path":"a"}')])
    assert events == [Content("Reading."), *call("read_file", '{"path":"a"}')]


def test_xml_tool_client_gets_xml() -> None:
    events, _ = repaired(
        RequestView(tools={}, calls_allowed=False, xml_tools=True),
        call("read_file", '{"path":"a.md"}'),
    )
    assert events == [Content("<read_file>\n<path>a.md</path>\n</read_file>")]


def test_client_stops_cut_the_answer() -> None:
    view = RequestView(stops=("STOP",))
    repairer = Repairer(view)
    out = repairer.feed([Content("one ST")])
    assert out == [Content("one ")]  # "ST" may start the stop string: held
    out += repairer.feed([Content("OP two"), *call("shell", "{}")])
    assert merge_text_events(out + repairer.close()) == [Content("one ")]
    assert repairer.stopped


def test_request_view() -> None:
    cline = {
        "tools": [
            {
                "type": "function",
                "function": {"name": "attempt_completion", "parameters": {"type": "object"}},
            }
        ],
        "messages": [{"role": "system", "content": "You are Cline"}],
    }
    view = request_view(cline, "cline")
    assert view.completion_tool == ("attempt_completion", "result") and view.calls_allowed
    assert request_view(cline, "cline", wrap_completion=False).completion_tool is None
    assert not request_view(cline, "cline", calls_forbidden=True).calls_allowed
    roo_xml = {"messages": [{"role": "system", "content": "Use <read_file><path>x</path>"}]}
    assert request_view(roo_xml, "roo").xml_tools
    assert request_view({}, "openai-sdk") == RequestView(tools={}, calls_allowed=False)


RAW = (
    "<|channel|>analysis<|message|>Use a tool.<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.Get_Weather json<|message|>{"name":"get_weather","arguments":{"city":"Oslo"}}'
)


def test_streamed_and_whole_repairs_agree() -> None:
    config = RewriteConfig(view=RequestView(tools=TOOLS))
    whole = {
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": RAW}}
        ]
    }
    rewrite_completion(whole, config)
    rewriter = StreamRewriter(config)
    body = b""
    for piece in (RAW[i : i + 3] for i in range(0, len(RAW), 3)):
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        body += b"".join(rewriter(b"data: " + json.dumps(chunk).encode() + b"\n\n"))
    body += b"".join(rewriter(b"data: [DONE]\n\n") + rewriter(b""))
    expected = {
        "content": None,
        "reasoning": "Use a tool.",
        "finish_reason": "tool_calls",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
    }
    assert from_json(whole) == from_sse(body) == expected
