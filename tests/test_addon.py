"""The addon's hooks, with mitmproxy's own test helpers: which flows are ours, and what they
become."""

import json

import pytest
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from harmony_filter.proxy.addon import HarmonyFilter
from harmony_filter.tools.judge import from_json
from harmony_filter.tools.judge import from_sse

RAW = (
    "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Answer.<|return|>"
)


def chat_flow(
    model: str = "gpt-oss-20b",
    stream: bool = False,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    body: bytes | None = None,
    live: bool = True,
) -> http.HTTPFlow:
    request = http.Request.make(
        method,
        f"http://127.0.0.1:8000{path}",
        body
        if body is not None
        else json.dumps({"model": model, "stream": stream, "messages": []}).encode(),
        {"content-type": "application/json", "accept-encoding": "gzip, br"},
    )
    return tflow.tflow(req=request, live=live)


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-oss-20b",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"total_tokens": 5},
        }
    ).encode()


def test_json_response_is_rewritten() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow()
        addon.request(flow)
        assert flow.request.headers["accept-encoding"] == "identity"
        flow.response = http.Response.make(
            200, completion(RAW), {"content-type": "application/json"}
        )
        addon.responseheaders(flow)
        addon.response(flow)
        body = json.loads(flow.response.content)
        assert from_json(body) == {
            "content": "Answer.",
            "reasoning": "Think.",
            "tool_calls": [],
            "finish_reason": "stop",
        }
        assert body["usage"] == {"total_tokens": 5} and body["id"] == "c1"
        assert flow.metadata["harmony"]["outcome"] == "rewritten"


def test_sse_response_is_streamed_through_the_rewriter() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow(stream=True)
        addon.request(flow)
        flow.response = http.Response.make(
            200, b"", {"content-type": "text/event-stream", "content-length": "999"}
        )
        addon.responseheaders(flow)
        assert callable(flow.response.stream) and "content-length" not in flow.response.headers
        chunk = {"choices": [{"index": 0, "delta": {"content": RAW}, "finish_reason": "stop"}]}
        out = flow.response.stream(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
        out += flow.response.stream(b"")
        flow.response.content = None
        addon.response(flow)
        assert from_sse(b"".join(out))["content"] == "Answer."
        assert flow.metadata["harmony"]["outcome"] == "rewritten"


def test_sse_read_from_a_file_is_rewritten_whole() -> None:
    """`mitmdump -nr FILE -s addon/harmony.py -w OUT` and server replay never call the stream
    callable: the response hook rewrites the whole body instead."""
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow(stream=True, live=False)
        chunk = {"choices": [{"index": 0, "delta": {"content": RAW}, "finish_reason": "stop"}]}
        flow.response = http.Response.make(
            200,
            b"data: " + json.dumps(chunk).encode() + b"\n\n",
            {"content-type": "text/event-stream"},
        )
        addon.request(flow)
        addon.responseheaders(flow)
        addon.response(flow)
        assert from_sse(flow.response.content)["reasoning"] == "Think."


@pytest.mark.parametrize(
    "flow",
    [
        chat_flow(model="llama-3"),
        chat_flow(path="/v1/completions"),
        chat_flow(method="GET"),
        chat_flow(body=b"not json"),
        chat_flow(body=b"[1, 2]"),
    ],
    ids=["other model", "other path", "GET", "not json", "not an object"],
)
def test_other_flows_are_untouched(flow: http.HTTPFlow) -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        before = flow.request.content
        addon.request(flow)
        flow.response = http.Response.make(
            200, completion(RAW), {"content-type": "application/json"}
        )
        addon.responseheaders(flow)
        addon.response(flow)
        assert flow.request.content == before and "harmony" not in flow.metadata
        assert flow.response.content == completion(RAW)


def test_a_request_streamed_upstream_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    """Past stream_large_bodies mitmproxy streams the request body on: too late to fix it."""
    addon = HarmonyFilter()
    flow = chat_flow()
    flow.request.stream = True
    with taddons.context(addon):
        addon.request(flow)
        flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
        addon.responseheaders(flow)
        assert "harmony" not in flow.metadata and flow.response.stream is True  # untouched
        assert "larger than stream_large_bodies" in caplog.text


def test_upstream_errors_reach_the_client_unchanged() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow(stream=True)
        addon.request(flow)
        error = b'{"error":{"message":"boom","type":"server_error"}}'
        flow.response = http.Response.make(500, error, {"content-type": "application/json"})
        addon.responseheaders(flow)
        addon.response(flow)
        assert flow.response.content == error and not flow.response.stream
        assert flow.metadata["harmony"]["outcome"] == "upstream-error"


def test_an_answer_that_is_not_json_becomes_an_openai_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow()
        addon.request(flow)
        flow.response = http.Response.make(200, b"{oops", {"content-type": "application/json"})
        addon.response(flow)
        assert flow.response.status_code == 502
        assert "{oops" in json.loads(flow.response.content)["error"]["message"]
        assert "not JSON (cut short?)" in caplog.text


def test_json_that_is_not_a_chat_completion_passes_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow()
        addon.request(flow)
        flow.response = http.Response.make(200, b'{"object":"list"}')
        addon.response(flow)
        assert flow.response.content == b'{"object":"list"}'
        assert "passing through" in caplog.text


def test_hosts_and_models_options() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, harmony_hosts=["*.example.com"])
        flow = chat_flow()
        addon.request(flow)
        assert "harmony" not in flow.metadata
        tctx.configure(addon, harmony_hosts=[], harmony_models="^my-model$")
        flow = chat_flow(model="my-model")
        addon.request(flow)
        assert "harmony" in flow.metadata
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(addon, harmony_models="(")


def test_reasoning_and_tools_options() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, harmony_reasoning="reasoning")
        flow = chat_flow()
        addon.request(flow)
        flow.response = http.Response.make(
            200, completion(RAW), {"content-type": "application/json"}
        )
        addon.response(flow)
        message = json.loads(flow.response.content)["choices"][0]["message"]
        assert message["reasoning"] == "Think." and "reasoning_content" not in message
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(addon, harmony_tools="xml")


def run_error(
    status: int, body: bytes, stream: bool = False, tools: tuple[str, ...] = ("get_weather",)
) -> http.HTTPFlow:
    addon = HarmonyFilter()
    with taddons.context(addon):
        request = {
            "model": "openai/gpt-oss-120b",
            "stream": stream,
            "messages": [],
            "tools": [{"type": "function", "function": {"name": n}} for n in tools],
        }
        flow = chat_flow(body=json.dumps(request).encode())
        addon.request(flow)
        flow.response = http.Response.make(status, body, {"content-type": "application/json"})
        addon.responseheaders(flow)
        addon.response(flow)
    return flow


GROQ_400 = json.dumps(
    {
        "error": {
            "message": "Failed to parse tool call arguments as JSON",
            "type": "invalid_request_error",
            "code": "tool_use_failed",
            "failed_generation": "<|channel|>commentary to=functions.get_weather json<|message|>"
            '{"city": "Rome"}',
        }
    }
).encode()


@pytest.mark.parametrize("stream", [False, True])
def test_groq_tool_use_failed_becomes_an_answer(stream: bool) -> None:
    flow = run_error(400, GROQ_400, stream)
    assert flow.response.status_code == 200
    result = (
        from_sse(flow.response.content) if stream else from_json(json.loads(flow.response.content))
    )
    assert result == {
        "content": None,
        "reasoning": None,
        "finish_reason": "tool_calls",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}],
    }
    assert "upstream-error-recovered" in flow.metadata["harmony"]["repairs"]


def test_ollama_500_with_bad_raw_stays_an_error() -> None:
    body = json.dumps(
        {
            "error": {
                "message": 'error parsing tool call: raw=\'{"city": "Ro\', '
                "err=unexpected end of JSON input"
            }
        }
    ).encode()
    flow = run_error(500, body)
    assert flow.response.status_code == 500 and flow.response.content == body


def test_plain_text_errors_become_openai_errors() -> None:
    flow = run_error(400, b"400 Reasoning is mandatory for this endpoint and cannot be disabled.")
    assert flow.response.status_code == 400
    assert json.loads(flow.response.content)["error"]["message"].startswith("400 Reasoning")


def test_outcome_header() -> None:
    addon = HarmonyFilter()
    with taddons.context(addon):
        flow = chat_flow()
        addon.request(flow)
        flow.response = http.Response.make(
            200, completion(RAW), {"content-type": "application/json"}
        )
        addon.responseheaders(flow)
        addon.response(flow)
        assert flow.response.headers["x-harmony-filter"].startswith("rewritten; fixes=")
        other = chat_flow(model="llama")
        addon.request(other)
        other.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        addon.response(other)
        assert "x-harmony-filter" not in other.response.headers
