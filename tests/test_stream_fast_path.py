"""The stream rewriter's fast path changes nothing: random raw-Harmony streams (one token an
event, envelopes that stay or change, JSON written in several ways, hostile look-alikes) give the
same bytes and the same outcome with the fast path on and off, whatever the output style, the
request and the byte cuts."""

import json
import re
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
from test_fuzz import views

from harmony_filter.openai_shapes import OutputStyle
from harmony_filter.pipeline import RewriteConfig
from harmony_filter.repairs import request_view
from harmony_filter.stream import StreamRewriter

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
WORDS = st.sampled_from(["Hello", " world", " é✨", '"q"\\', "STOP", "wor", "\n", "<", "a<b"])
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
    sort_keys = draw(st.booleans())
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
        text = json.dumps({"choices": [choice]} | envelope, separators=separators)
        if sort_keys:
            text = json.dumps(json.loads(text), separators=separators, sort_keys=True)
        if draw(st.integers(0, 19)) == 0:  # a duplicate content key: the last one counts
            text = text.replace('{"content":', '{"content":"dup","content":', 1)
        if draw(st.integers(0, 9)) == 0:
            out += b"id: %d\n" % position
        out += b"data: " + text.encode() + b"\n\n"
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
    st.builds(
        OutputStyle,
        st.sampled_from(["both", "reasoning_content", "reasoning", "think", "drop"]),
        st.sampled_from(["openai", "text", "drop"]),
    ),
    stops_views | views,
)


def without_call_ids(body: bytes) -> bytes:
    return re.sub(rb"call_[0-9a-f]{24}", b"call_ID", body)


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
    st.lists(st.integers(0, 3000), max_size=12),
)
def test_fast_path_changes_nothing(config: RewriteConfig, body: bytes, cuts: list[int]) -> None:
    parts = pieces(body, cuts)
    assert rewrite(config, parts, fast=True) == rewrite(config, parts, fast=False)


def test_the_usual_stream_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real llama.cpp-shaped stream: every text token after the first of each message."""
    taken = []
    full_path = StreamRewriter._steady_event

    def spy(self: StreamRewriter, *args: Any) -> list[bytes] | None:
        result = full_path(self, *args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(StreamRewriter, "_steady_event", spy)
    words = ["<|channel|>analysis<|message|>", "Think", "ing", ".", "<|end|>"]
    words += ["<|start|>assistant<|channel|>final<|message|>", "Hel", "lo", "!"]
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
    body = b"".join(
        b"data: %s\n\n"
        % json.dumps({"choices": [{"index": 0, "delta": {"content": w}}]} | envelope).encode()
        for w in ["", *words]
    )
    feed(StreamRewriter(RewriteConfig()), [body + b"data: [DONE]\n\n"])
    assert taken.count(True) == 4  # "ing", ".", "lo", "!"
