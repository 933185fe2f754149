"""Hostile input: property tests over the SSE framing, the stream rewriter, the whole-answer
rewrite and the addon's hooks themselves, fed arbitrary bytes and arbitrary JSON shaped like what
upstreams and clients send. Nothing raises out of a hook or the stream callable, nothing hangs
(a deadline per example), and whatever the filter writes is valid: JSON bodies parse, event
streams are UTF-8 SSE whose every `data:` is JSON or [DONE].

The request fixes alone have their own property tests (test_request_fixes.py), as do the
decoder's chunking (test_decoder.py) and one stream's byte cuts (test_stream.py); here the same
request shapes go through the hooks. The examples tried per target are printed at the end.
"""

import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy import flow as mitmflow
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from state_probe import flow_tables
from test_request_fixes import json_values
from test_request_fixes import requests as request_shapes

from harmony_filter.api.chat_completions import REASONING_MODES
from harmony_filter.api.chat_completions import TOOL_MODES
from harmony_filter.api.chat_completions import OutputStyle
from harmony_filter.api.sse import SseDecoder
from harmony_filter.fixes.repairs import request_view
from harmony_filter.proxy.addon import HarmonyFilter
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter
from harmony_filter.rewrite.whole_response import rewrite_completion

TRIED: Counter[str] = Counter()
"""Examples tried per target in this run."""
FUZZ = settings(
    deadline=timedelta(seconds=5),  # nothing hangs (generous: the machine may be busy)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------

HARMONY_PIECES = st.sampled_from(
    [
        "<|start|>",
        "<|end|>",
        "<|message|>",
        "<|channel|>",
        "<|constrain|>",
        "<|return|>",
        "<|call|>",
        "<|",
        "|>",
        "assistant",
        "analysis",
        "final",
        "commentary",
        " to=functions.get_weather",
        " to=browser.search",
        "json",
        "<think>",
        "</think>",
        '{"city":"Paris"}',
        "{",
        "}",
        "```json\n",
        "\n",
        " ",
        "<",
        " to=",
        "functions.f",
        "{}",
        "é😀",
        "t",
        "o",
        "=",
    ]
)
"""Harmony's tokens, their fragments and the words around them (the decoder tests' too)."""
harmonyish = st.lists(HARMONY_PIECES | st.text(max_size=6), max_size=12).map("".join)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the expected shape, sometimes any JSON value in its place."""
    return st.one_of(strategy, strategy, json_values)


tool_call_deltas = st.lists(
    maybe(
        st.fixed_dictionaries(
            {"index": maybe(st.integers(0, 2))},
            optional={
                "id": maybe(st.sampled_from(["call_1", "chatcmpl-tool-9"])),
                "type": st.just("function"),
                "function": maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "name": maybe(st.sampled_from(["get_weather", "read_file", "x"])),
                            "arguments": maybe(harmonyish),
                        },
                    )
                ),
            },
        )
    ),
    max_size=2,
)
message_fields = {
    "role": maybe(st.just("assistant")),
    "content": maybe(harmonyish | st.none()),
    "reasoning_content": maybe(harmonyish),
    "reasoning": maybe(harmonyish),
    "tool_calls": maybe(tool_call_deltas),
}
finish_reasons = maybe(st.sampled_from(["stop", "length", "tool_calls", None]))
chunks = st.fixed_dictionaries(
    {
        "choices": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {"delta": maybe(st.fixed_dictionaries({}, optional=message_fields))},
                        optional={
                            "index": maybe(st.integers(0, 2)),
                            "finish_reason": finish_reasons,
                        },
                    )
                ),
                max_size=2,
            )
        )
    },
    optional={"id": json_values, "usage": json_values, "error": json_values},
)
completions = st.fixed_dictionaries(
    {
        "choices": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {"message": maybe(st.fixed_dictionaries({}, optional=message_fields))},
                        optional={"finish_reason": finish_reasons, "logprobs": json_values},
                    )
                ),
                max_size=2,
            )
        )
    },
    optional={"usage": json_values, "model": json_values},
)


@st.composite
def event_streams(draw: st.DrawFn) -> bytes:
    """An upstream event stream: chunks, JSON of any shape, [DONE], comments, other fields and
    raw bytes, with the framing servers vary (space after `data:` or not, CRLF, lone CR)."""
    events = draw(
        st.lists(
            st.one_of(
                chunks.map(json.dumps),
                chunks.map(json.dumps),
                json_values.map(json.dumps),
                st.just("[DONE]"),
                st.binary(max_size=20),
                st.sampled_from([": ping", "event: message", "id: 7", "retry: 10"]),
            ),
            max_size=8,
        )
    )
    line_end = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    out = b""
    for event in events:
        if isinstance(event, bytes):
            out += event
        elif event.startswith((":", "event:", "id:", "retry:")):
            out += event.encode() + line_end
        else:
            out += draw(st.sampled_from([b"data: ", b"data:"])) + event.encode() + line_end
        out += draw(st.sampled_from([line_end, b""]))
    return out


def pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if b > a]


# -- checks -------------------------------------------------------------------------------


def assert_valid_sse(body: bytes) -> None:
    """UTF-8, whole events, and every `data:` payload JSON or [DONE]."""
    text = body.decode()
    assert "\r" not in text and (not text or text.endswith("\n\n")), text[-50:]
    for block in text.split("\n\n")[:-1]:
        data = [
            line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")
        ]
        if data and "\n".join(data).strip() != "[DONE]":
            json.loads("\n".join(data))


def feed(stream: Any, parts: list[bytes]) -> bytes:
    """Feed a stream callable like mitmproxy does; it never raises and never returns b""."""
    out: list[bytes] = []
    for part in [*(part for part in parts if part), b""]:  # b"" only at the end
        returned = stream(part)
        assert isinstance(returned, list) and all(isinstance(piece, bytes) for piece in returned)
        assert b"" not in returned  # b"" mid-stream ends an HTTP/1 chunked body
        out += returned
    return b"".join(out)


def without_call_ids(body: bytes) -> bytes:
    return re.sub(rb"call_[0-9a-f]{24}", b"call_ID", body)


@pytest.fixture(scope="module", autouse=True)
def report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TRIED:
        tried = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nfuzz examples tried: {tried} (total {sum(TRIED.values())})")


# -- targets ------------------------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(event_streams() | st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=30))
def test_sse_framing_any_bytes_any_cuts(body: bytes, cuts: list[int]) -> None:
    TRIED["sse-framing"] += 1
    whole, cut = SseDecoder(), SseDecoder()
    events = whole.feed(body) + whole.flush()
    in_pieces = [e for part in pieces(body, cuts) for e in cut.feed(part)] + cut.flush()
    assert in_pieces == events
    for event in events:
        event.raw.decode()  # valid UTF-8 whatever came in
        assert event.raw.endswith(b"\n\n") and b"\n\n" not in event.raw[:-2]
        assert b"\r" not in event.raw


views = st.builds(
    lambda body, client, wrap: request_view(body, client, wrap_completion=wrap),
    request_shapes,
    st.sampled_from(["cline", "roo", "openai-sdk", "unknown"]),
    st.booleans(),
)
styles = st.builds(OutputStyle, st.sampled_from(REASONING_MODES), st.sampled_from(TOOL_MODES))
configs = st.builds(
    RewriteConfig,
    styles,
    views,
    st.sampled_from(["drop", "surface"]),
)


@settings(FUZZ, max_examples=300)
@given(configs, event_streams(), st.lists(st.integers(0, 2000), max_size=30))
def test_stream_rewriter_any_stream_any_cuts(
    config: RewriteConfig, body: bytes, cuts: list[int]
) -> None:
    TRIED["stream-rewriter"] += 1
    whole = StreamRewriter(config)
    out = feed(whole, [body])
    assert "internal-error-passthrough" not in whole.warnings
    assert_valid_sse(out)
    in_pieces = feed(StreamRewriter(config), pieces(body, cuts))
    assert without_call_ids(in_pieces) == without_call_ids(out)  # byte cuts change nothing


@settings(FUZZ, max_examples=300)
@given(configs, completions | st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_rewrite_completion_any_body(config: RewriteConfig, body: dict[str, Any]) -> None:
    TRIED["rewrite-completion"] += 1
    rewrite_completion(body, config)
    json.dumps(body, allow_nan=False)


request_bodies = st.one_of(
    request_shapes.map(lambda r: json.dumps({"model": "gpt-oss-20b", **r}).encode()),
    st.fixed_dictionaries({"model": st.just("gpt-oss-20b"), "stream": json_values}).map(
        lambda r: json.dumps(r).encode()
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=100),
)
response_bodies = st.one_of(
    completions.map(lambda c: json.dumps(c).encode()),
    event_streams(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=100),
)


def test_hooks_any_request_any_response() -> None:
    """The whole hook sequence of flows, with whatever a client and an upstream might send
    (bodies that do not decode as their content-encoding says included), through one addon."""
    addon = HarmonyFilter()
    with taddons.context(addon):  # one for all examples: mitmproxy's log handler wants that

        @settings(FUZZ, max_examples=250)
        @given(
            st.fixed_dictionaries(
                {
                    "request_body": request_bodies,
                    "status": st.sampled_from([200, 200, 200, 400, 429, 500, 503]),
                    "content_type": st.sampled_from(
                        ["application/json", "text/event-stream", "text/html"]
                    ),
                    "encodings": st.tuples(
                        *[st.sampled_from([None, None, None, "gzip", "br", "bogus"])] * 2
                    ),
                    "response_body": response_bodies,
                    "cuts": st.lists(st.integers(0, 2000), max_size=10),
                    "client_gone": st.booleans(),
                }
            )
        )
        def one_flow(case: dict[str, Any]) -> None:
            TRIED["addon-hooks"] += 1
            run_flow(addon, **case)

        one_flow()


def run_flow(
    addon: HarmonyFilter,
    request_body: bytes,
    status: int,
    content_type: str,
    encodings: tuple[str | None, str | None],
    response_body: bytes,
    cuts: list[int],
    client_gone: bool,
) -> None:
    """One flow through every hook; bodies arrive as sent, whatever their content-encoding
    header says (raw_content)."""

    def headers(content_type: str, encoding: str | None) -> dict[str, str]:
        return {"content-type": content_type} | ({"content-encoding": encoding} if encoding else {})

    url = "http://127.0.0.1:8000/v1/chat/completions"
    request = http.Request.make("POST", url, b"", headers("application/json", encodings[0]))
    request.raw_content = request_body
    flow = tflow.tflow(req=request)
    addon.request(flow)
    flow.response = http.Response.make(status, b"", headers(content_type, encodings[1]))
    flow.response.raw_content = response_body
    addon.responseheaders(flow)
    stream = flow.response.stream
    if callable(stream):
        assert_valid_sse(feed(stream, pieces(response_body, cuts)))
    if client_gone:
        flow.error = mitmflow.Error("Client disconnected.")
        addon.error(flow)
    else:
        addon.response(flow)
        if not callable(stream) and flow.response.raw_content != response_body:
            body = flow.response.get_content(strict=False) or b""
            if "text/event-stream" in flow.response.headers.get("content-type", ""):
                assert_valid_sse(body)
            else:
                json.loads(body)  # what the filter wrote instead is JSON
    tables = flow_tables(addon)
    assert not any(tables.values()), tables
