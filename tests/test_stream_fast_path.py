"""The stream rewriter's fast path changes nothing: random raw-Harmony streams (one token an
event, envelopes that stay or change, JSON written in several ways, hostile look-alikes, bad
UTF-8) give the same bytes and the same outcome with the fast path on and off, whatever the
output style, the request and the byte cuts, including an event a read as at full speed (where
the bytes-only path runs)."""

import json
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_fuzz import configs
from test_fuzz import feed
from test_fuzz import harmonyish
from test_fuzz import pieces
from test_fuzz import styles
from test_fuzz import views
from test_fuzz import without_call_ids

from harmony_filter.api.sse import SseDecoder
from harmony_filter.fixes.repairs import request_view
from harmony_filter.rewrite.pipeline import ChoicePipeline
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter

TURN_PIECES = st.sampled_from(
    [
        "<|channel|>analysis<|message|>",
        "<|end|><|start|>assistant<|channel|>final<|message|>",
        "<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather"
        " <|constrain|>json<|message|>",
        '{"city":"Paris"}',
        "<|call|>",
        "<|return|>",
        "<|",
        "STOP",
        "\n",
        "{",
        "```json\n",
    ]
)
WORDS = st.sampled_from(
    ["Hello", " world", " é✨", '"q"\\', "STOP", "wor", "\n", "\t\x01", "<", "a<b", "a/b"]
)
text_runs = st.lists(WORDS | WORDS | st.text(max_size=3), min_size=2, max_size=8)
tokens = st.lists(TURN_PIECES.map(lambda piece: [piece]) | text_runs, max_size=8).map(
    lambda runs: [token for run in runs for token in run]
)
envelopes = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(["chatcmpl-1", "chatcmpl-2"]),
            "created": st.sampled_from([1, 1.0, -0.0, 0.0, True]),
            "model": st.just("gpt-oss"),
            "object": st.just("chat.completion.chunk"),
            "content": st.sampled_from(["Hello", "x"]),  # a look-alike key outside the delta
            "x": st.fixed_dictionaries({}, optional={"delta": st.just({"content": "Hello"})}),
            "usage": st.just({"total_tokens": 3}),
        },
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def raw_harmony_streams(draw: st.DrawFn) -> bytes:
    """What llama.cpp without a reasoning parser sends, with what other servers vary."""
    envelope_choices = draw(envelopes)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    sort_keys, ensure_ascii, escape_slashes = (draw(st.booleans()) for _ in range(3))
    out = b""
    for position, token in enumerate([None, *draw(tokens), None]):
        delta: dict[str, Any] = {"content": token} if token is not None else {}
        if position == 0:
            delta = {"role": "assistant", "content": None}
        finish = "stop" if token is None and position else None
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if draw(st.integers(0, 9)) == 0:
            choice["logprobs"] = None
        envelope = draw(st.sampled_from(envelope_choices))
        text = json.dumps(
            {"choices": [choice]} | envelope,
            separators=separators,
            sort_keys=sort_keys,
            ensure_ascii=ensure_ascii,
        )
        if escape_slashes:
            text = text.replace("/", "\\/")
        if draw(st.integers(0, 19)) == 0:  # a duplicate content key: the last one counts
            text = text.replace('{"content":', '{"content":"dup","content":', 1)
        if draw(st.integers(0, 9)) == 0:
            out += b"id: %d\n" % position
        raw = text.encode()
        if draw(st.integers(0, 9)) == 0:  # bad UTF-8, a raw control character, JSON's `\/`
            raw = raw.replace(b"Hello", draw(st.sampled_from([b"He\xff", b"He\x01", b"He\\/"])))
        out += b"data: " + raw + b"\n\n"
    return out + b"data: [DONE]\n\n"


stops_views = st.builds(
    lambda client, wrap, stops: request_view(
        {"tools": [{"type": "function", "function": {"name": "get_weather"}}]},
        client,
        wrap_completion=wrap,
        stops=tuple(stops),
    ),
    st.sampled_from(["cline", "openai-sdk"]),
    st.booleans(),
    st.lists(st.sampled_from(["STOP", "\n\n", "wor"]), max_size=2),
)
all_configs = configs | st.builds(
    RewriteConfig,
    styles,
    stops_views | views,
)


def rewrite(config: RewriteConfig, parts: list[bytes], fast: bool) -> tuple[bytes, Any]:
    rewriter = StreamRewriter(config)
    rewriter.fast_path = fast
    out = feed(rewriter, parts)
    outcome = rewriter.outcome
    seen = (
        outcome.summary(),
        outcome.reasoning,
        outcome.reasoning_kept,
        outcome.content_chars,
        outcome.first_output_at is None,
        outcome.usage,
        rewriter.warnings,
    )
    return without_call_ids(out), seen


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    all_configs,
    raw_harmony_streams() | harmonyish.map(lambda text: text.encode()),
    st.lists(st.integers(0, 3000), max_size=12) | st.none(),
)
def test_fast_path_changes_nothing(
    config: RewriteConfig, body: bytes, cuts: list[int] | None
) -> None:
    """`cuts` None: an event a read."""
    parts = by_event(body) if cuts is None else pieces(body, cuts)
    assert rewrite(config, parts, fast=True) == rewrite(config, parts, fast=False)


def by_event(body: bytes) -> list[bytes]:
    *events, rest = body.split(b"\n\n")
    return [event + b"\n\n" for event in events] + [rest]


@pytest.mark.parametrize("one_event_a_read", [True, False])
def test_the_usual_stream_takes_the_fast_path(
    one_event_a_read: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real llama.cpp-shaped stream: every text token after the first of each message; read
    an event at a time (full speed through mitmproxy), those after the second skip the SSE
    decoder too."""
    fast, decoded = [], []
    steady_text = ChoicePipeline.steady_text

    def spy(self: ChoicePipeline) -> Any:
        steady = steady_text(self)
        return steady and (steady[0], lambda text: fast.append(text) or steady[1](text))

    monkeypatch.setattr(ChoicePipeline, "steady_text", spy)
    feed_sse = SseDecoder.feed
    monkeypatch.setattr(SseDecoder, "feed", lambda *args: decoded.append(1) or feed_sse(*args))
    words = ["<|channel|>analysis<|message|>", "Think", "ing", ".", "\n", "<|end|>"]
    words += ["<|start|>assistant<|channel|>final<|message|>", "Hel", "lo", "!"]
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
    body = b"".join(
        b"data: %s\n\n"
        % json.dumps({"choices": [{"index": 0, "delta": {"content": w}}]} | envelope).encode()
        for w in ["", *words]
    )
    parts = by_event(body + b"data: [DONE]\n\n") if one_event_a_read else [body]
    feed(StreamRewriter(RewriteConfig()), parts)
    assert fast == ["ing", ".", "\n", "lo", "!"]
    assert len(decoded) == (len(parts) - 1 - 3 if one_event_a_read else 1)  # ".", "\n", "!"


@pytest.mark.parametrize(
    "text",
    [b"He\xffllo", b"He\x01", b"a\\/b", b"\\u003c", b"\\u00e9", b'\\n\\t\\"', b"\xc3\xa9\\\\"],
)
def test_text_the_bytes_path_must_not_copy(text: bytes) -> None:
    """In the middle of a steady message read an event at a time: bad UTF-8, a raw control
    character, escapes we write otherwise (or that hide a `<`) and escapes we write alike."""
    event = b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}],"id":"c"}\n\n'
    words = [b"", b"<|channel|>final<|message|>", b"Hel", b"lo", b"lo", text, b"lo", b"<|return|>"]
    parts = [event % word for word in words] + [b"data: [DONE]\n\n"]
    fast, slow = (rewrite(RewriteConfig(), parts, fast) for fast in (True, False))
    assert fast == slow
    assert b"\\u003c" not in fast[0] and b"\xff" not in fast[0] and b"\x01" not in fast[0]
