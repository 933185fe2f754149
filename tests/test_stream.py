"""The stream rewriter (mitmproxy's stream callable) and the non-streaming rewrite: same answer,
whatever the upstream shape and however its bytes are cut."""

import json
import random

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from harmony_filter.api.chat_completions import OutputStyle
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter
from harmony_filter.rewrite.whole_response import rewrite_completion
from harmony_filter.tools.judge import from_json
from harmony_filter.tools.judge import from_sse
from harmony_filter.tools.judge import sse_chunks

DEFAULT_STYLE = OutputStyle()
ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-oss"}

RAW_TOOL_TURN = (
    "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary"
    ' to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>'
)
RAW_ANSWER = (
    "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Bonjour ✨<|return|>"
)


def sse(*chunks: dict, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(ENVELOPE | c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def delta(finish: str | None = None, **fields: object) -> dict:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


def raw_stream(text: str, finish: str = "stop", seed: int = 0) -> bytes:
    """A non-parsing server: the Harmony text in delta.content, cut at random places."""
    rng, pieces, i = random.Random(seed), [], 0
    while i < len(text):
        j = i + rng.randint(1, 7)
        pieces.append(delta(content=text[i:j]))
        i = j
    return sse(
        delta(role="assistant", content=""),
        *pieces,
        delta(finish),
        {"choices": [], "usage": {"total_tokens": 9}},
    )


def run(body: bytes, style: OutputStyle = DEFAULT_STYLE, cuts: int = 1) -> tuple[bytes, list]:
    """Feed the body through a rewriter in `cuts` roughly equal pieces, like mitmproxy does."""
    rewriter, out, size = StreamRewriter(RewriteConfig(style)), [], max(1, len(body) // cuts)
    for start in range(0, len(body), size):
        returned = rewriter(body[start : start + size])
        assert returned != b"" and isinstance(returned, list)  # b"" mid-stream ends HTTP/1 bodies
        out += returned
    out += rewriter(b"")
    return b"".join(out), out


@pytest.mark.parametrize("cuts", [1, 7, 1000])
def test_raw_harmony_tool_call_becomes_tool_calls(cuts: int) -> None:
    body, _ = run(raw_stream(RAW_TOOL_TURN, finish="stop"), cuts=cuts)
    assert b"<|" not in body
    assert from_sse(body) == {
        "content": None,
        "reasoning": "Need the weather.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
        "finish_reason": "tool_calls",
    }
    chunks = sse_chunks(body)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    first_call = next(
        c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    )
    call = first_call["choices"][0]["delta"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function" and call["index"] == 0
    assert chunks[-1] == {"choices": [], "usage": {"total_tokens": 9}} | ENVELOPE
    assert body.endswith(b"data: [DONE]\n\n")


def test_envelope_is_kept() -> None:
    body, _ = run(raw_stream(RAW_ANSWER))
    for chunk in sse_chunks(body):
        assert {k: chunk[k] for k in ENVELOPE} == ENVELOPE


def test_streamed_and_whole_answers_agree() -> None:
    for text in (RAW_TOOL_TURN, RAW_ANSWER):
        whole = {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ]
        }
        rewrite_completion(whole, RewriteConfig())
        streamed, _ = run(raw_stream(text))
        assert from_json(whole) == from_sse(streamed)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400))
def test_byte_cuts_do_not_change_the_answer(seed: int, cuts: int) -> None:
    reference, _ = run(raw_stream(RAW_TOOL_TURN, seed=seed))
    body, _ = run(raw_stream(RAW_TOOL_TURN, seed=seed), cuts=cuts)
    assert from_sse(body) == from_sse(reference)


def test_vllm_both_reasoning_fields_give_the_text_once() -> None:
    body, _ = run(
        sse(delta(reasoning="Hi.", reasoning_content="Hi."), delta(content="Hello!"), delta("stop"))
    )
    result = from_sse(body)
    assert result["reasoning"] == "Hi." and result["content"] == "Hello!"


def test_structured_tool_calls_pass_through_with_their_ids() -> None:
    first = {
        "index": 0,
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    more = {"index": 0, "function": {"arguments": '{"city":'}}
    rest = {"index": 0, "function": {"arguments": '"Oslo"}'}}
    body, _ = run(
        sse(
            delta(tool_calls=[first]),
            delta(tool_calls=[more]),
            delta(tool_calls=[rest]),
            delta("tool_calls"),
        )
    )
    assert from_sse(body)["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert b'"id":"chatcmpl-tool-1"' in body


def test_ollama_old_shape_whole_call_in_one_delta() -> None:
    call = {
        "id": "call_abc",
        "index": 0,
        "type": "function",
        "function": {"name": "exec", "arguments": '{"command":"ls"}'},
    }
    body, _ = run(
        sse(
            delta(role="assistant", content="", reasoning="Run it."),
            delta("tool_calls", role="assistant", content="", tool_calls=[call]),
        )
    )
    assert from_sse(body) == {
        "content": None,
        "reasoning": "Run it.",
        "tool_calls": [{"name": "exec", "arguments": {"command": "ls"}}],
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize(
    "mode, fields",
    [
        ("both", {"reasoning_content", "reasoning"}),
        ("reasoning_content", {"reasoning_content"}),
        ("reasoning", {"reasoning"}),
        ("drop", set()),
    ],
)
def test_reasoning_modes(mode: str, fields: set) -> None:
    body, _ = run(raw_stream(RAW_ANSWER), OutputStyle(reasoning=mode))
    seen = {k for c in sse_chunks(body) for ch in c["choices"] for k in ch["delta"]}
    assert seen & {"reasoning_content", "reasoning"} == fields


def test_think_mode_wraps_reasoning_in_content() -> None:
    body, _ = run(raw_stream(RAW_ANSWER, seed=3), OutputStyle(reasoning="think"))
    assert from_sse(body)["content"] == "<think>Simple.</think>Bonjour ✨"


def test_text_tool_mode_renders_calls_as_content() -> None:
    body, _ = run(raw_stream(RAW_TOOL_TURN), OutputStyle(tools="text"))
    result = from_sse(body)
    assert result["tool_calls"] == [] and result["finish_reason"] == "stop"
    assert "`get_weather`" in result["content"] and '{"city":"Paris"}' in result["content"]


def test_drop_tool_mode() -> None:
    body, _ = run(raw_stream(RAW_TOOL_TURN), OutputStyle(tools="drop"))
    assert from_sse(body)["tool_calls"] == [] and from_sse(body)["finish_reason"] == "stop"


def test_length_is_kept_when_cut_off() -> None:
    body, _ = run(raw_stream("<|channel|>analysis<|message|>long thou", finish="length"))
    assert from_sse(body) == {
        "content": None,
        "reasoning": "long thou",
        "tool_calls": [],
        "finish_reason": "length",
    }


def test_comments_and_unknown_json_pass_through_and_what_is_not_json_is_dropped() -> None:
    kept = b': keep-alive\n\ndata: {"error":{"message":"x"}}\n\ndata: [1]\n\n'
    body, _ = run(b"data: not json\n\n" + kept + b"data: \xff\n\n" + raw_stream(RAW_ANSWER))
    assert body.startswith(kept)
    assert from_sse(body[len(kept) :])["content"] == "Bonjour ✨"


def test_bad_utf8_is_replaced() -> None:
    upstream = sse(delta(content="<|channel|>final<|message|>caf"), delta("stop", content="\x00"))
    body, _ = run(upstream.replace(b"\\u0000", b"\xe9"))  # a Latin-1 byte, not UTF-8
    assert from_sse(body)["content"] == "caf\ufffd"


def test_stream_cut_short_still_finishes_and_says_so() -> None:
    body, _ = run(sse(delta(content="<|channel|>final<|message|>Hi"), done=False))
    assert from_sse(body) == {
        "content": "Hi",
        "reasoning": None,
        "tool_calls": [],
        "finish_reason": "stop",
    }
    assert sse_chunks(body)[-1]["error"]["code"] == "upstream_stream_cut_short"
    assert body.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "body",
    [
        sse(delta("stop", content="<|channel|>final<|message|>Hi"), done=False),
        sse(
            delta(content="<|channel|>final<|message|>Hi"), {"choices": [], "usage": {}}, done=False
        ),
        sse(delta(content="<|channel|>final<|message|>Hi")),
        b'data: {"error":{"message":"overloaded"}}\n\n',
    ],
    ids=["finished without DONE", "usage chunk without DONE", "DONE", "upstream error"],
)
def test_a_stream_that_ended_properly_gets_no_error(body: bytes) -> None:
    out, _ = run(body)
    assert b"upstream_stream_cut_short" not in out


def test_a_stream_cut_mid_event_says_only_that_it_was_cut_short() -> None:
    rewriter = StreamRewriter(RewriteConfig())
    body = sse(delta(content="<|channel|>final<|message|>Hi"), done=False) + b'data: {"choi'
    out = b"".join(rewriter(body) + rewriter(b""))
    assert from_sse(out)["content"] == "Hi" and rewriter.warnings == ["upstream-stream-cut-short"]


def test_an_empty_stream_is_cut_short() -> None:
    out, _ = run(b"")
    assert sse_chunks(out)[0]["error"]["code"] == "upstream_stream_cut_short"


def test_held_back_piece_returns_empty_list() -> None:
    rewriter = StreamRewriter(RewriteConfig())
    assert rewriter(b'data: {"choices":[{"index":0,"delta":{"content":"<|chan"}}]}\n\n') == []
    assert rewriter(b'data: {"cho') == []


def test_internal_error_degrades_to_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    rewriter = StreamRewriter(RewriteConfig())

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(rewriter, "_on_choice", boom)
    body = raw_stream(RAW_ANSWER)
    out = b"".join(rewriter(body) + rewriter(b""))
    assert out == body and rewriter.warnings == ["internal-error-passthrough"]


def test_internal_error_on_the_bytes_path_degrades_to_passthrough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same when the fast path for a steady event read on its own breaks."""
    rewriter = StreamRewriter(RewriteConfig())
    events = [event + b"\n\n" for event in raw_stream(RAW_ANSWER).split(b"\n\n")[:-1]]
    out, broken = [], False
    for event in events:
        steady = rewriter._steady
        if not broken and steady is not None and steady.frame is not None:
            monkeypatch.setattr(type(steady.frame), "rewrite", lambda *_: 1 / 0)
            broken, cut = True, len(out)
        out.append(b"".join(rewriter(event)))
    assert broken and rewriter.warnings == ["internal-error-passthrough"]
    assert out[cut:] == events[cut:]  # the rest as the upstream sent it
    assert b"<|" not in b"".join(out[:cut])  # what came before, rewritten


def test_no_final_timeout_ends_the_stream_cleanly() -> None:
    now = [0.0]
    rewriter = StreamRewriter(RewriteConfig(no_final_timeout=5), clock=lambda: now[0])
    thinking = raw_stream("<|channel|>analysis<|message|>" + "hmm " * 50)
    out = rewriter(thinking[:200])
    now[0] = 6
    out += rewriter(thinking[200:400])
    out += rewriter(thinking[400:]) + rewriter(b"")
    body = b"".join(out)
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"[DONE]") == 1
    error = sse_chunks(body)[-1]["error"]
    assert error["code"] == "no_final_timeout" and rewriter.timed_out


def test_no_final_timeout_spares_streams_that_answered() -> None:
    now = [0.0]
    rewriter = StreamRewriter(RewriteConfig(no_final_timeout=5), clock=lambda: now[0])
    body = raw_stream(RAW_ANSWER)
    cut = body.index(b"[DONE]")  # the whole answer, before the end of the stream
    out = rewriter(body[:cut])
    now[0] = 60
    out += rewriter(body[cut:]) + rewriter(b"")
    assert from_sse(b"".join(out))["content"] == "Bonjour ✨" and not rewriter.timed_out
