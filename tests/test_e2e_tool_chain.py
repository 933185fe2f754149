"""A two-turn tool chain from a Cline-like client through a real mitmdump: the client drops the
reasoning of the tool-calling turn when it sends the tool result back; the upstream must get it
back all the same. The final plain answer becomes attempt_completion, as Cline needs."""

import json
from collections.abc import Iterator

import openai
import pytest
from procs import mitmdump
from procs import replay_upstream_in_thread
from test_e2e import raw_harmony_sse

from harmony_filter.recordings.recording import make_recording
from harmony_filter.recordings.recording import save_recording

THINKING = "The user wants README.md summarised. Read it first with read_file."
TURN_1 = (
    f"<|channel|>analysis<|message|>{THINKING}<|end|><|start|>assistant<|channel|>commentary "
    'to=functions.read_file <|constrain|>json<|message|>{"path":"README.md"}<|call|>'
)
TURN_2 = (
    "<|channel|>analysis<|message|>Got the file. Summarise.<|end|><|start|>assistant"
    "<|channel|>final<|message|>It is a proxy that cleans gpt-oss output.<|return|>"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": name,
            "parameters": {"type": "object", "properties": props},
        },
    }
    for name, props in (
        ("read_file", {"path": {"type": "string"}}),
        ("attempt_completion", {"result": {"type": "string"}}),
    )
]
SYSTEM = "You are Cline, a highly skilled software engineer."
USER = "Summarise README.md"


@pytest.fixture(scope="module")
def cline_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    recordings = tmp_path_factory.mktemp("chain")
    for name, text in (("turn-1", TURN_1), ("turn-2", TURN_2)):
        flow = make_recording(
            {"model": "gpt-oss-20b", "stream": True, "messages": []},
            200,
            {"content-type": "text/event-stream"},
            raw_harmony_sse(text, seed=7),
            "e2e tool chain",
        )
        save_recording(flow, recordings / f"{name}.flow")
    with replay_upstream_in_thread(recordings) as (url, upstream):
        with mitmdump(f"reverse:{url}", tmp_path_factory.mktemp("confdir")) as (port, _):
            yield f"http://127.0.0.1:{port}/v1", upstream


def stream_turn(base_url: str, recording: str, messages: list) -> dict:
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=20)
    calls: dict[int, dict] = {}
    reasoning = ""
    for chunk in client.chat.completions.create(
        model="gpt-oss-20b",
        stream=True,
        tools=TOOLS,
        tool_choice="auto",
        messages=messages,
        stream_options={"include_usage": True},
        extra_headers={"x-replay-recording": recording},
    ):
        for choice in chunk.choices:
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
    return {"reasoning": reasoning, "calls": list(calls.values())}


def test_reasoning_dropped_by_the_client_reaches_the_upstream(
    cline_proxy: tuple[str, object],
) -> None:
    base_url, upstream = cline_proxy
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    first = stream_turn(base_url, "turn-1", history)
    assert first["reasoning"] == THINKING
    (call,) = first["calls"]
    assert call["name"] == "read_file" and json.loads(call["arguments"]) == {"path": "README.md"}

    # Like Cline: the tool call goes back without its reasoning.
    history += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "# harmony-filter\n..."},
    ]
    second = stream_turn(base_url, "turn-2", history)

    sent = json.loads(upstream.received[-1])  # type: ignore[attr-defined]
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == THINKING
    assert "stop" not in sent or "<|call|>" in sent["stop"]
    (completion,) = second["calls"]
    assert completion["name"] == "attempt_completion"
    assert json.loads(completion["arguments"]) == {
        "result": "It is a proxy that cleans gpt-oss output."
    }
