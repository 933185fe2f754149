"""End to end: the openai SDK -> a real mitmdump with the addon -> a loopback upstream that
replays what gpt-oss servers really send."""

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from procs import mitmdump
from procs import replay_upstream

from harmony_filter.recordings.recording import load_recording
from harmony_filter.recordings.recording import make_recording
from harmony_filter.recordings.recording import save_recording
from harmony_filter.tools.judge import from_sse
from harmony_filter.tools.replay import replay_flow

TOOL_TURN = (
    "<|channel|>analysis<|message|>The user wants the weather in Paris. Use get_weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Paris","unit":"°C"}<|call|>'
)
ANSWER = (
    "<|channel|>analysis<|message|>Greet back, briefly.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Hello! 👋 How can I help?<|return|>"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            },
        },
    }
]


def raw_harmony_sse(text: str, seed: int) -> list[bytes]:
    """What llama.cpp without --jinja streams: Harmony text in delta.content, cut anywhere;
    then the network cuts the bytes anywhere too."""
    rng, events, i = random.Random(seed), [], 0
    base = {
        "id": "chatcmpl-e2e",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-oss-20b",
    }
    while i < len(text):
        j = i + rng.randint(1, 6)
        events.append(
            base
            | {"choices": [{"index": 0, "delta": {"content": text[i:j]}, "finish_reason": None}]}
        )
        i = j
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    body += b"data: [DONE]\n\n"
    cuts = sorted(rng.sample(range(1, len(body)), 40))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def raw_harmony_json(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-e2e",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-oss-20b",
            "usage": {"total_tokens": 42},
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
        }
    ).encode()


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recorded")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, record_dir: Path) -> Iterator[str]:
    recordings = tmp_path_factory.mktemp("recordings")
    for name, text, tools in (("tool", TOOL_TURN, TOOLS), ("answer", ANSWER, None)):
        request = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": name}]}
        if tools:
            request["tools"] = tools
        save_recording(
            make_recording(
                request | {"stream": True},
                200,
                {"content-type": "text/event-stream"},
                raw_harmony_sse(text, seed=len(name)),
                "e2e",
            ),
            recordings / f"{name}-stream.flow",
        )
        save_recording(
            make_recording(
                request | {"stream": False},
                200,
                {"content-type": "application/json"},
                [raw_harmony_json(text)],
                "e2e",
            ),
            recordings / f"{name}-json.flow",
        )
    with replay_upstream(recordings) as upstream:
        with mitmdump(
            f"reverse:{upstream}",
            tmp_path_factory.mktemp("confdir"),
            "--set",
            f"harmony_record_dir={record_dir}",
        ) as (port, _):
            yield f"http://127.0.0.1:{port}/v1"


def ask(base_url: str, question: str, stream: bool) -> dict:
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=20)
    kwargs = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": question}]}
    if question == "tool":
        kwargs["tools"] = TOOLS
    if not stream:
        message = client.chat.completions.create(**kwargs).choices[0].message
        finish = None
        result = message.model_dump()
    else:
        content, reasoning, calls, finish = "", "", {}, None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for choice in chunk.choices:
                delta = choice.delta
                content += delta.content or ""
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                for call in delta.tool_calls or ():
                    slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                    slot["id"] = slot["id"] or call.id
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
                finish = choice.finish_reason or finish
        result = {
            "content": content or None,
            "reasoning_content": reasoning or None,
            "tool_calls": [
                {"id": c["id"], "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ]
            or None,
        }
    return {
        "content": result["content"] or None,
        "reasoning": result.get("reasoning_content"),
        "tool_calls": [
            (
                c["function"]["name"],
                json.loads(c["function"]["arguments"]),
                c["id"].startswith("call_"),
            )
            for c in result.get("tool_calls") or ()
        ],
    } | ({"finish": finish} if stream else {})


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_call_through_mitmdump(proxy: str, stream: bool) -> None:
    result = ask(proxy, "tool", stream)
    assert result.pop("finish", "tool_calls") == "tool_calls"
    assert result == {
        "content": None,
        "reasoning": "The user wants the weather in Paris. Use get_weather.",
        "tool_calls": [("get_weather", {"city": "Paris", "unit": "°C"}, True)],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_answer_through_mitmdump(proxy: str, stream: bool) -> None:
    result = ask(proxy, "answer", stream)
    assert result.pop("finish", "stop") == "stop"
    assert result == {
        "content": "Hello! 👋 How can I help?",
        "reasoning": "Greet back, briefly.",
        "tool_calls": [],
    }


def test_other_paths_pass_through(proxy: str) -> None:
    client = openai.OpenAI(base_url=proxy, api_key="sk-test", max_retries=0, timeout=20)
    assert [m.id for m in client.models.list()]


def test_no_harmony_markup_reaches_the_client(proxy: str) -> None:
    import httpx

    with httpx.stream(
        "POST",
        proxy + "/chat/completions",
        json={
            "model": "gpt-oss-20b",
            "stream": True,
            "tools": TOOLS,
            "messages": [{"role": "user", "content": "tool"}],
        },
    ) as response:
        body = b"".join(response.iter_raw())
    assert b"<|" not in body and body.endswith(b"data: [DONE]\n\n")


def test_recordings_replay_what_the_client_got_and_hold_no_secret(
    proxy: str, record_dir: Path
) -> None:
    key = "sk-e2e-DISTINCTIVE-0123456789abcdef"
    client = openai.OpenAI(
        base_url=proxy,
        api_key=key,
        max_retries=0,
        timeout=20,
        default_query={"api_key": key},
        default_headers={"x-api-key": key},
    )
    stream = client.chat.completions.create(
        model="gpt-oss-20b",
        stream=True,
        tools=TOOLS,
        messages=[{"role": "user", "content": "tool"}],
    )
    got = b"".join(chunk.model_dump_json().encode() for chunk in stream)
    assert b"get_weather" in got
    deadline = time.monotonic() + 10
    while not (ours := recorded_with_redacted_key(record_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours, "no recording was written"
    for path in record_dir.glob("*.flow"):
        assert key.encode() not in path.read_bytes()
    recorded = ours[0]
    info = recorded.metadata["harmony"]
    assert info["client"] == "openai-sdk" and info["outcome"] == "rewritten"
    assert len(info["upstream_chunks"]) > 1
    assert b"".join(info["upstream_chunks"]) == recorded.response.content
    assert from_sse(info["client_body"]) == from_sse(replay_flow(recorded).body)


def recorded_with_redacted_key(directory: Path) -> list:
    flows = [load_recording(path) for path in sorted(directory.glob("*-stream-*.flow"))]
    return [flow for flow in flows if flow.request.query.get("api_key") == "REDACTED"]
