"""Upstream and client faults, end to end: the openai SDK -> a real mitmdump with the addon -> a
loopback upstream that misbehaves on purpose (faulty_upstream.py).

For every fault: the client gets at least what a direct connection to the same upstream gives
(everything decodable, and an error in OpenAI's format where HTTP still allows one), one line in
mitmdump's output says what happened, the proxy serves the next request as if nothing happened,
and the addon holds nothing for the flows that are gone.
"""

import functools
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from faulty_upstream import BIG_EVENT_BYTES
from faulty_upstream import FAULTS
from faulty_upstream import REASONING
from faulty_upstream import RETRY_AFTER
from faulty_upstream import FaultyUpstream
from faulty_upstream import answer_text
from state_probe import ProbedProxy
from state_probe import is_idle

from harmony_filter.tools.judge import accumulate
from harmony_filter.tools.judge import normalise

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CLIENT_TIMEOUT = 1.0
"""The client's own timeout, for the upstream that never answers."""


@dataclass
class Result:
    """What a client ended up with."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[tuple[str, Any]] | None = None
    finish: str | None = None
    error: Exception | None = None

    @property
    def openai_error(self) -> dict[str, Any] | None:
        """The error object of an OpenAI-format error response or event, if that is what came."""
        body = getattr(self.error, "body", None)
        return body if isinstance(body, dict) and isinstance(body.get("message"), str) else None


def chat(
    base_url: str,
    fault: str = "ok",
    marker: str = "M",
    stream: bool = True,
    tools: bool = False,
    headers: dict[str, str] | None = None,
) -> Result:
    """One chat completion with the openai SDK; errors are caught into the result."""
    result = Result()
    kwargs: dict[str, Any] = {
        "model": "gpt-oss-20b",
        "messages": [{"role": "user", "content": marker}],
    }
    if tools:
        kwargs["tools"] = TOOLS
    kwargs["timeout"] = CLIENT_TIMEOUT if fault == "never-answers" else 20
    kwargs["extra_headers"] = {"x-fault": fault, **(headers or {})}
    client = _client(base_url)
    try:
        if stream:
            _read_stream(client.chat.completions.create(stream=True, **kwargs), result)
        else:
            message = client.chat.completions.create(**kwargs).choices[0].message
            result.content = message.content
            result.reasoning = (message.model_extra or {}).get("reasoning_content")
    except Exception as e:  # what the client's code would see
        result.error = e
    return result


@functools.cache
def _client(base_url: str) -> openai.OpenAI:
    """One client per base URL (making one takes a while); each request on a new connection,
    so no connection outlives its request."""
    return openai.OpenAI(
        base_url=base_url,
        api_key="sk-test",
        max_retries=0,
        default_headers={"connection": "close"},
    )


def _read_stream(stream: Any, result: Result) -> None:
    """What the client got, however far the stream went."""
    chunks = []
    try:
        for chunk in stream:
            chunks.append(chunk.model_dump())
    finally:
        got = normalise(*accumulate(chunks))
        result.content, result.reasoning = got["content"], got["reasoning"]
        result.finish = got["finish_reason"]
        result.tool_calls = [
            (call["name"], call["arguments"]) for call in got["tool_calls"]
        ] or None


@pytest.fixture(autouse=True)
def serves_on_and_leaks_nothing(
    proxy: ProbedProxy, request: pytest.FixtureRequest
) -> Iterator[None]:
    """After every fault: a good request through the same proxy gets its whole answer, and the
    addon holds no per-flow state and no flow object any more."""
    yield
    marker = f"good after {request.node.name}"
    good = chat(proxy.base_url, marker=marker)
    assert good.error is None and good.content == answer_text(marker), good
    state = proxy.settled_state()
    assert is_idle(state), state


# -- upstream faults ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    fault: str
    content: str | None
    """What the client's answer says through the proxy (the marker is `M`)."""
    log: str
    """A pattern one line of mitmdump's output matches, saying what happened."""
    error: type[Exception] | None = None
    """What the client raises through the proxy."""
    direct_error: type[Exception] | None = None
    """What the client raises with a direct connection to the same upstream."""
    reasoning: str | None = REASONING
    stream: bool = True
    status: int | None = None
    """The HTTP status of an error response the client got through the proxy."""
    tools: bool = False

    def __str__(self) -> str:
        return self.fault


CUT = r"HTTP/1 protocol error: peer closed connection without sending complete"
CLEAN = r"gpt-oss-20b .* rewritten(?!.*warnings)"
UPSTREAM_CASES = [
    Case("cut-mid-event", "M", CUT, openai.APIConnectionError, openai.APIConnectionError),
    Case(
        "cut-mid-event-close",
        "M",
        "the upstream stream ended before its answer did",
        openai.APIError,  # an OpenAI error event, after what was decoded
    ),
    Case("cut-mid-token", "M.", CUT, openai.APIConnectionError, openai.APIConnectionError),
    Case(
        "cut-mid-tool-arguments",
        None,
        CUT,
        openai.APIConnectionError,
        openai.APIConnectionError,
        tools=True,
    ),
    Case("ping-comments", "M.", CLEAN),
    Case("event-id-fields", "M.", CLEAN),
    Case("crlf-line-ends", "M.", CLEAN),
    Case("data-without-space", "M.", CLEAN),
    Case("event-split-across-reads", "M.", CLEAN),
    Case("one-5mb-event", None, CLEAN),  # content checked in the test: 5 MB
    Case("invalid-utf8", "caf\ufffdM.", "event was not UTF-8", direct_error=UnicodeDecodeError),
    Case("invalid-json", "M.", "event was not JSON", direct_error=json.JSONDecodeError),
    Case(
        "json-cut-short",  # with a content-length: mitmproxy answers 502 itself (an HTML page)
        None,
        CUT,
        openai.InternalServerError,
        openai.APIConnectionError,
        reasoning=None,
        stream=False,
        status=502,
    ),
    Case(
        "json-cut-short-close",  # the body ends where the connection does
        None,
        r"answer is not JSON \(cut short\?\); answering 502",
        openai.InternalServerError,
        json.JSONDecodeError,
        reasoning=None,
        stream=False,
        status=502,
    ),
    Case(
        "never-answers",
        None,
        r"\(Client disconnected\.\)",
        openai.APITimeoutError,
        openai.APITimeoutError,
        reasoning=None,
    ),
    *(
        Case(
            fault,
            None,
            rf"upstream-error {fault.split('-')[1]}",
            openai.APIStatusError,
            openai.APIStatusError,
            reasoning=None,
            stream=stream,
            status=int(fault.split("-")[1]),
        )
        for fault in FAULTS
        if fault.startswith("status-")
        for stream in ((True, False) if fault.endswith("-json") else (True,))
    ),
]
assert {case.fault for case in UPSTREAM_CASES} == set(FAULTS)


@pytest.mark.parametrize(
    "case", UPSTREAM_CASES, ids=lambda c: f"{c.fault}-{'sse' if c.stream else 'json'}"
)
def test_upstream_fault(
    case: Case, proxy: ProbedProxy, upstream: tuple[str, FaultyUpstream]
) -> None:
    start = len(proxy.process.lines)
    began = time.monotonic()
    got = chat(proxy.base_url, case.fault, stream=case.stream, tools=case.tools)
    took = time.monotonic() - began
    direct = chat(upstream[0] + "/v1", case.fault, stream=case.stream, tools=case.tools)

    assert is_kind(got.error, case.error), repr(got.error)
    assert is_kind(direct.error, case.direct_error), repr(direct.error)
    if case.fault == "one-5mb-event":
        assert got.content and len(got.content) == BIG_EVENT_BYTES + len("M.")
        assert got.content.endswith("M.") and got.finish == "stop"
    else:
        assert got.content == case.content
    assert got.reasoning == case.reasoning
    assert got.content is None or "<|" not in got.content
    if case.error is None:
        assert got.finish == "stop"
    if case.error is openai.APIError:
        assert got.openai_error, f"not an OpenAI error: {got.error!r}"
    if case.status is not None:
        assert getattr(got.error, "status_code", None) == case.status
        if case.fault != "json-cut-short":  # mitmproxy's own page; see the README
            assert got.openai_error, f"not an OpenAI error: {got.error!r}"
        if case.status == 429:  # the client's back-off needs it
            assert got.error.response.headers.get("retry-after") == RETRY_AFTER
    if case.error is openai.APITimeoutError:
        assert CLIENT_TIMEOUT <= took < CLIENT_TIMEOUT + 2  # the client's timeout decided
    assert proxy.lines_since(start, case.log), "\n".join(proxy.process.lines[start:])


def is_kind(error: Exception | None, expected: type[Exception] | None) -> bool:
    return error is None if expected is None else isinstance(error, expected)


def test_an_upstream_tool_call_still_works(proxy: ProbedProxy) -> None:
    got = chat(proxy.base_url, "tool", tools=True)
    assert got.error is None and got.tool_calls == [("get_weather", {"city": "Paris"})]
    assert got.reasoning == REASONING and got.finish == "tool_calls"


# -- client faults -----------------------------------------------------------------------


def test_client_gone_mid_stream_releases_the_upstream(
    proxy: ProbedProxy, upstream: tuple[str, FaultyUpstream]
) -> None:
    start = len(proxy.process.lines)
    marker = "leaves mid-stream"
    request = {
        "model": "gpt-oss-20b",
        "stream": True,
        "messages": [{"role": "user", "content": marker}],
    }
    headers = {"x-numbers": "1000", "x-pace": "0.005"}  # a 5-second stream
    with httpx.stream(
        "POST", proxy.base_url + "/chat/completions", json=request, headers=headers, timeout=10
    ) as response:
        seen = b""
        for piece in response.iter_raw():
            seen += piece
            if seen.count(b"data:") > 20:
                break  # and close the connection
    exchange = next(e for e in upstream[1].exchanges if marker.encode() in e.body)
    assert exchange.released.wait(3), "the upstream connection was not closed"
    assert proxy.lines_since(start, r"\(Client disconnected\.\)")


def test_client_gone_mid_request_releases_the_upstream(
    proxy: ProbedProxy, upstream: tuple[str, FaultyUpstream]
) -> None:
    before = len(upstream[1].exchanges)
    with socket.create_connection(("127.0.0.1", proxy.port)) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b'{"model":"gpt-oss-20b","messages":[' + b" " * 100
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while upstream[1].open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream[1].open_connections == 0, "the proxy kept an upstream connection open"
    assert len(upstream[1].exchanges) == before  # nothing half-sent reached the upstream
