"""Every recording replayed through the real addon, hook by hook as mitmproxy drives a live flow:
request, responseheaders, then the upstream's chunks through the stream callable (and b"" at
the end) or the response hook for a JSON body. What the client gets, accumulated as the openai
SDK accumulates a stream, must match NAME.expected.json and must hold no Harmony markup."""

import json
from functools import cache
from pathlib import Path

import pytest
from recordings_util import RECORDINGS_DIR
from recordings_util import expected_for
from recordings_util import normalise_body
from recordings_util import recording_paths

from harmony_filter.recording import is_event_stream
from harmony_filter.recording import load_recording
from harmony_filter.recording import upstream_chunks
from harmony_filter.replay import replay_flow

KNOWN_FAILURES: dict[str, str] = {
    "llamacpp-degenerate-header-call-json": "the headerless first message (no `<|channel|>`, "
    "closed by `<|end|>`) reaches the client as content; expected: dropped or as reasoning",
    "llamacpp-degenerate-header-call-stream": "the headerless first message (no `<|channel|>`, "
    "closed by `<|end|>`) reaches the client as content; expected: dropped or as reasoning",
}
"""Recording name -> why the filter does not give the expected answer yet (strict xfail)."""

FIELDS = ("content", "reasoning", "tool_calls", "finish_reason")


def with_known_failures(paths: list[Path]) -> list[object]:
    return [
        pytest.param(
            path,
            id=path.stem,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[path.stem])]
            if path.stem in KNOWN_FAILURES
            else [],
        )
        for path in paths
    ]


@cache
def through_filter(path: Path) -> tuple[int, bytes, bool]:
    """(status, body the client receives, whether it is an event stream)."""
    replayed = replay_flow(load_recording(path))
    return replayed.status, replayed.body, replayed.event_stream


def is_chat_completion(body: bytes, event_stream: bool) -> bool:
    if event_stream:
        return True
    try:
        return isinstance(json.loads(body).get("choices"), list)
    except (ValueError, AttributeError):
        return False


@pytest.mark.parametrize("path", with_known_failures(recording_paths()))
def test_client_gets_the_expected_answer(path: Path) -> None:
    expected = expected_for(path)
    status, body, event_stream = through_filter(path)
    if "status" in expected:
        assert status == expected["status"]
        assert "error" in json.loads(body)
        assert body == load_recording(path).response.content  # type: ignore[union-attr]
    elif expected.get("expected", ...) is None:
        # No unambiguous answer: the filter must not crash, and a chat completion stays one.
        assert status == 200
        if is_chat_completion(body, event_stream):
            normalise_body(body, event_stream)
    else:
        assert status == 200
        answers = [expected, *expected.get("also_accepted", [])]
        got = normalise_body(body, event_stream)
        assert got in [{key: answer[key] for key in FIELDS} for answer in answers], got


@pytest.mark.parametrize("path", recording_paths(), ids=lambda p: p.stem)
def test_no_markup_reaches_the_client(path: Path) -> None:
    status, body, event_stream = through_filter(path)
    if status != 200 or not is_chat_completion(body, event_stream):
        return  # errors and non-completions pass through as the server sent them
    assert "<|" not in json.dumps(normalise_body(body, event_stream), ensure_ascii=False)


def test_every_recording_has_an_expectation_and_no_secret() -> None:
    paths = recording_paths()
    assert len(paths) >= 20
    assert {p.name for p in RECORDINGS_DIR.glob("*.expected.json")} == {
        p.stem + ".expected.json" for p in paths
    }
    for path in paths:
        flow = load_recording(path)
        assert flow.response
        authorization = flow.request.headers.get("authorization", "Bearer sk-redacted")
        assert authorization == "Bearer sk-redacted", path.name
        assert flow.metadata["harmony"]["source"]
        body = json.loads(flow.request.content or b"")
        assert body["model"] and body["messages"]
        if is_event_stream(flow.response):
            chunks = upstream_chunks(flow)
            assert len(chunks) > 1 and b"".join(chunks) == flow.response.content, path.name
