"""Every recording replayed through the real addon, hook by hook as mitmproxy drives a live flow:
request, responseheaders, then the upstream's chunks through the stream callable (and b"" at
the end) or the response hook for a JSON body. What the client gets, accumulated as the openai
SDK accumulates a stream, must match NAME.expected.json and must hold no Harmony markup."""

import json
from functools import cache
from pathlib import Path

import pytest
from recordings_util import RECORDINGS_DIR
from recordings_util import recording_paths

from harmony_filter.recordings.recorder import REDACTED
from harmony_filter.recordings.recording import is_event_stream
from harmony_filter.recordings.recording import load_recording
from harmony_filter.recordings.recording import make_recording
from harmony_filter.recordings.recording import save_recording
from harmony_filter.recordings.recording import upstream_chunks
from harmony_filter.tools import expectations
from harmony_filter.tools.expectations import accepted_answers
from harmony_filter.tools.expectations import expectation_of
from harmony_filter.tools.expectations import read_expected
from harmony_filter.tools.judge import client_result
from harmony_filter.tools.replay import Replayed
from harmony_filter.tools.replay import replay_flow


def with_known_failures(paths: list[Path]) -> list[object]:
    """A recording whose expectation names a `known_failure` is a strict xfail: the day the
    filter gets it right, the test says so (and the key must go)."""
    params = []
    for path in paths:
        reason = (read_expected(path) or {}).get("known_failure")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@cache
def through_filter(path: Path) -> Replayed:
    return replay_flow(load_recording(path))


def is_chat_completion(body: bytes, event_stream: bool) -> bool:
    if event_stream:
        return True
    try:
        return isinstance(json.loads(body).get("choices"), list)
    except (ValueError, AttributeError):
        return False


@pytest.mark.parametrize("path", with_known_failures(recording_paths()))
def test_client_gets_the_expected_answer(path: Path) -> None:
    expected = read_expected(path)
    assert expected is not None, f"no expectation: ./run.sh record-expectations {path}"
    replayed = through_filter(path)
    if "status" in expected:
        assert expectation_of(replayed) == {"status": expected["status"], "error": True}
        assert "error" in json.loads(replayed.body)
        assert replayed.body == load_recording(path).response.content  # type: ignore[union-attr]
    elif expected.get("expected", ...) is None:
        # No unambiguous answer: the filter must not crash, and a chat completion stays one.
        assert replayed.status == 200
        if is_chat_completion(replayed.body, replayed.event_stream):
            client_result(replayed.body, replayed.event_stream)
    else:
        got = expectation_of(replayed)
        assert got in accepted_answers(expected), got


@pytest.mark.parametrize("path", recording_paths(), ids=lambda p: p.stem)
def test_no_markup_reaches_the_client(path: Path) -> None:
    replayed = through_filter(path)
    if replayed.status != 200 or not is_chat_completion(replayed.body, replayed.event_stream):
        return  # errors and non-completions pass through as the server sent them
    got = client_result(replayed.body, replayed.event_stream)
    assert "<|" not in json.dumps(got, ensure_ascii=False)


def test_every_recording_has_an_expectation_and_no_secret() -> None:
    paths = recording_paths()
    assert len(paths) >= 20
    assert {p.name for p in RECORDINGS_DIR.glob("*.expected.json")} == {
        p.stem + ".expected.json" for p in paths
    }
    for path in paths:
        flow = load_recording(path)
        assert flow.response
        authorization = flow.request.headers.get("authorization", REDACTED)
        assert authorization in ("Bearer sk-redacted", REDACTED), path.name
        assert flow.metadata["harmony"]["source"]
        body = json.loads(flow.request.content or b"")
        assert body["model"] and body["messages"]
        if is_event_stream(flow.response):
            chunks = upstream_chunks(flow)
            assert len(chunks) > 1 and b"".join(chunks) == flow.response.content, path.name


# -- regenerating expectations (./run.sh record-expectations) ------------------------------------

ANSWER_SSE = [
    b'data: {"choices":[{"index":0,"delta":{"content":"<|channel|>analysis<|message|>Hm.<|end|>',
    b'<|start|>assistant<|channel|>final<|message|>Four."}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n',
]
ANSWER = {"content": "Four.", "reasoning": "Hm.", "tool_calls": [], "finish_reason": "stop"}


def dropped_in(directory: Path, name: str = "new-case-stream") -> Path:
    """A recording as a user drops it into recordings/: no expectation yet."""
    path = directory / f"{name}.flow"
    request = {
        "model": "gpt-oss-20b",
        "stream": True,
        "messages": [{"role": "user", "content": "2+2"}],
    }
    headers = {"content-type": "text/event-stream"}
    save_recording(make_recording(request, 200, headers, ANSWER_SSE, "test"), path)
    return path


def regenerate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = expectations.main(list(args))
    return status, capsys.readouterr().out


def test_a_dropped_in_recording_gets_its_expectation_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dropped_in(tmp_path)
    status, out = regenerate(capsys, "--check", str(tmp_path))
    assert status == 1 and "new-case-stream.expected.json: new" in out
    assert read_expected(path) is None, "--check writes nothing"

    status, out = regenerate(capsys, str(tmp_path))
    assert status == 0
    assert read_expected(path) == ANSWER
    assert '    content: "Four."' in out and "1 new" in out

    status, out = regenerate(capsys, "--check", str(path))
    assert status == 0 and "1 unchanged" in out


def test_a_stale_expectation_is_rewritten_keeping_its_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = dropped_in(tmp_path)
    stale = ANSWER | {"content": "Five.", "note": "reviewed by hand"}
    expectations.expected_path(path).write_text(json.dumps(stale))
    status, out = regenerate(capsys, str(path))
    assert status == 0
    assert read_expected(path) == ANSWER | {"note": "reviewed by hand"}
    assert '    content: "Five." -> "Four."' in out
    assert '    note kept: "reviewed by hand"' in out and "1 changed" in out


@pytest.mark.parametrize(
    "by_hand, remark",
    [
        ({"expected": None, "note": "ambiguous"}, "no unambiguous answer"),
        (ANSWER | {"content": "Five.", "known_failure": "bug 1"}, "known failure, still failing"),
        (ANSWER | {"known_failure": "bug 1"}, "known failure, now met: remove known_failure"),
        (ANSWER | {"content": "Five.", "also_accepted": [ANSWER]}, None),
    ],
)
def test_hand_written_expectations_are_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], by_hand: dict, remark: str | None
) -> None:
    path = dropped_in(tmp_path)
    expectations.expected_path(path).write_text(json.dumps(by_hand))
    status, out = regenerate(capsys, str(path))
    assert status == 0 and read_expected(path) == by_hand
    if remark:
        assert f"new-case-stream.expected.json: kept ({remark})" in out
    else:
        assert "1 unchanged" in out


def test_upstream_errors_are_expected_as_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "error-json.flow"
    error = json.dumps({"error": {"message": "model overloaded"}}).encode()
    request = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]}
    flow = make_recording(request, 503, {"content-type": "application/json"}, [error], "test")
    save_recording(flow, path)
    assert regenerate(capsys, str(path))[0] == 0
    assert read_expected(path) == {"status": 503, "error": True}


def test_a_missing_path_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        expectations.main([str(tmp_path / "none.flow")])
    assert exit.value.code == 2
    assert "none.flow" in capsys.readouterr().err
