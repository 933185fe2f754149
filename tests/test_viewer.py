"""The replay viewer (./run.sh replay), and the whole record -> replay -> serve round trip through
real processes: a session recorded by a real mitmdump with harmony_record_dir replays in the
viewer with the result the client got, and served again it streams the same answer."""

import json
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import openai
import pytest
from mitmproxy import io
from procs import ROOT
from procs import Process
from procs import mitmdump
from procs import replay_upstream
from procs import wait_for_flows
from recordings_util import RECORDINGS_DIR
from rich.console import Console

from harmony_filter.recordings.recorder import REDACTED
from harmony_filter.recordings.recording import load_recording
from harmony_filter.recordings.recording import make_recording
from harmony_filter.recordings.recording import recorded_client_side
from harmony_filter.recordings.recording import save_recording
from harmony_filter.recordings.recording import upstream_chunk_times
from harmony_filter.recordings.recording import upstream_chunks
from harmony_filter.tools import viewer
from harmony_filter.tools.judge import accumulate
from harmony_filter.tools.judge import client_result
from harmony_filter.tools.judge import normalise

SOURCE = RECORDINGS_DIR / "raw-demo-get-weather-call-stream.flow"
"""What the upstream of the recorded session answers: raw Harmony, a get_weather call."""
CALL = {"name": "get_weather", "arguments": {"city": "Lisbon"}}
KEY = "sk-viewer-SECRET-0123456789"


def rendered(path: Path) -> str:
    reports, notes = viewer.report_path(path)
    console = Console(record=True, width=220, file=StringIO())
    for report in reports:
        console.print(viewer.render(report))
    for note in notes:
        console.print(note)
    return console.export_text()


# -- the viewer on the recordings of the repository ---------------------------------------------


def test_a_tool_call_recording_shows_raw_markup_the_call_and_the_fixes() -> None:
    [report], notes = viewer.report_path(SOURCE)
    assert not notes
    assert "<|channel|>" in (report.upstream.result or {})["content"]
    assert report.now.result == {
        "content": None,
        "reasoning": "The user wants the current weather in Lisbon. Call get_weather.",
        "tool_calls": [CALL],
        "finish_reason": "tool_calls",
    }
    assert report.now.did["outcome"] == "rewritten" and report.now.did["fixes"]
    assert report.differences == {"what raw-demo-get-weather-call-stream.expected.json expects": []}
    text = rendered(SOURCE)
    assert 'get_weather({"city": "Lisbon"})' in text
    assert "<|channel|>analysis<|message|>" in text
    assert "request fixes" in text and report.now.did["fixes"][0] in text
    assert "44 upstream chunks" in text
    assert "✓ The current code gives what raw-demo-get-weather-call-stream.expected.json" in text


def test_repairs_and_the_expected_answer_are_shown() -> None:
    path = RECORDINGS_DIR / "lmstudio-call-to-xml-tool-stream.flow"
    text = rendered(path)
    assert "call-rendered-as-xml" in text
    assert "<read_file>" in text  # the call, rendered in the client's XML tool syntax
    assert "1 other answer(s) accepted" in text
    assert "✓ The current code gives what lmstudio-call-to-xml-tool-stream.expected.json" in text


def test_a_known_failure_is_flagged_against_its_expectation() -> None:
    path = RECORDINGS_DIR / "llamacpp-degenerate-header-call-stream.flow"
    [report], _ = viewer.report_path(path)
    assert report.differences[f"what {path.stem}.expected.json expects"] == ["content"]
    text = rendered(path)
    assert "≠ content" in text and "known failure:" in text
    assert f"✗ The current code differs from what {path.stem}.expected.json expects" in text


def test_an_upstream_error_is_passed_on_and_shown() -> None:
    text = rendered(RECORDINGS_DIR / "openrouter-reasoning-mandatory-400-json.flow")
    assert "Reasoning is mandatory" in text and "upstream-error" in text and "400" in text
    assert "✓ The current code gives what" in text


def test_a_file_of_several_flows_shows_each_chat_flow(tmp_path: Path) -> None:
    """What `mitmdump -w` saves: any number of flows, some not chat completions."""
    flows = [
        load_recording(RECORDINGS_DIR / f"raw-demo-answer-{kind}.flow")
        for kind in "json stream".split()
    ]
    models = make_recording({"model": "gpt-oss-20b", "messages": []}, 200, {}, [b"{}"], "test")
    models.request.method, models.request.path = "GET", "/v1/models"
    path = tmp_path / "session.flow"
    with open(path, "wb") as file:
        writer = io.FlowWriter(file)
        for flow in [flows[0], models, flows[1]]:
            writer.add(flow)
    reports, notes = viewer.report_path(path)
    assert [r.label for r in reports] == ["session.flow #1", "session.flow #2"]
    assert notes == ["session.flow: 1 flow(s) left out: no chat completion request, or no response"]
    assert all(r.now.result and r.now.result["content"] for r in reports)
    assert all(not r.references for r in reports)  # no expectation for a many-flow file
    assert "Nothing to compare with" in rendered(path)


def test_unreadable_files_make_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text("not a flow")
    status = viewer.main(
        ["--width", "220", str(bad), str(RECORDINGS_DIR / "raw-demo-answer-json.flow")]
    )
    out = capsys.readouterr().out
    assert status == 2
    assert "bad.flow: not a mitmproxy flow file" in out
    assert "raw-demo-answer-json.flow" in out  # the others are still shown


# -- record through a real mitmdump, replay, serve again ----------------------------------------


def stream_through(port: int, request: dict, name: str | None = None) -> dict:
    """The recorded request sent again with the openai SDK, streaming; the answer normalised."""
    request = dict(request)
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30
    )
    stream = client.chat.completions.create(
        model=request.pop("model"),
        messages=request.pop("messages"),
        stream=request.pop("stream"),
        extra_body=request,
        extra_headers={"x-replay-recording": name} if name else None,
    )
    return normalise(*accumulate([chunk.model_dump() for chunk in stream]))


def wait_for_recording(directory: Path) -> Path:
    found = wait_for_flows(directory)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """A streamed tool call recorded by a real mitmdump in front of the replay upstream; yields
    (the recording, what the openai SDK got)."""
    record_dir = tmp_path_factory.mktemp("recorded")
    request = json.loads(load_recording(SOURCE).request.content or b"")
    with replay_upstream(SOURCE, pace=0.005) as upstream:
        with mitmdump(
            f"reverse:{upstream}",
            tmp_path_factory.mktemp("confdir"),
            "--set",
            f"harmony_record_dir={record_dir}",
        ) as (port, _):
            got = stream_through(port, request)
    yield wait_for_recording(record_dir), got


def test_the_recording_holds_both_sides_and_no_secret(session: tuple[Path, dict]) -> None:
    path, got = session
    assert got["tool_calls"] == [CALL]
    assert "-openai-sdk-gpt-oss-20b-stream-" in path.name
    assert KEY.encode() not in path.read_bytes()
    flow = load_recording(path)
    assert flow.request.headers["authorization"] == REDACTED
    chunks = upstream_chunks(flow)
    assert chunks == upstream_chunks(load_recording(SOURCE))  # as the upstream cut them
    times = upstream_chunk_times(flow)
    assert times is not None and times == sorted(times) and times[-1] > 0.1
    client = recorded_client_side(flow)
    assert client and client.status == 200 and client.event_stream
    assert client_result(client.body, True) == got
    assert flow.metadata["harmony"]["outcome"] == "rewritten"


def test_the_viewer_shows_what_the_client_got(session: tuple[Path, dict]) -> None:
    path, got = session
    result = subprocess.run(  # what `./run.sh replay DIR` runs
        [sys.executable, "-m", "harmony_filter.tools.viewer", "--width", "220", str(path.parent)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ The current code gives what the client got." in result.stdout
    assert 'get_weather({"city": "Lisbon"})' in result.stdout
    assert "client got (recorded)" in result.stdout and "client openai-sdk" in result.stdout
    [report], _ = viewer.report_path(path)
    assert report.now.result == got == report.references[0].result


def test_the_viewer_flags_what_the_current_code_changes(
    session: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client that got something else (a bug since fixed, say) is flagged, exit status 1."""
    flow = load_recording(session[0])
    before = flow.metadata["harmony"]["client_body"]
    flow.metadata["harmony"]["client_body"] = before.replace(b"Lisbon", b"Porto")
    save_recording(flow, tmp_path / "changed.flow")
    status = viewer.main(["--width", "220", str(tmp_path / "changed.flow")])
    out = capsys.readouterr().out
    assert status == 1
    assert "≠ tool calls" in out
    assert 'get_weather({"city": "Porto"})' in out
    assert "✗ The current code differs from what the client got: tool calls." in out


def test_served_again_it_streams_the_same_answer(
    session: tuple[Path, dict],
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`./run.sh serve RECORDING` (its upstream, paced as recorded) behind a real mitmdump: the
    openai SDK gets what the client got, the proxy sees the same chunks, and the SDK example the
    guide prints works."""
    path, got = session
    serve = Process(
        [
            sys.executable,
            "-m",
            "harmony_filter.tools.replay_upstream",
            "--port",
            "0",
            "--pace",
            "recorded",
            "--guide",
            str(path),
        ],
        env={"PYTHONPATH": str(ROOT / "addon")},
    )
    record_dir = tmp_path_factory.mktemp("recorded-again")
    try:
        upstream = serve.wait_for(r"listening on (http://\S+)").group(1)
        serve.wait_for(r"^PY$")  # the end of the guide
        with mitmdump(
            f"reverse:{upstream}",
            tmp_path_factory.mktemp("confdir"),
            "--set",
            f"harmony_record_dir={record_dir}",
        ) as (port, _):
            request = json.loads(load_recording(path).request.content or b"")
            assert stream_through(port, request, path.stem) == got
            again = load_recording(wait_for_recording(record_dir))
            exec(sdk_example(serve.output, port), {})  # as a user would paste it
    finally:
        serve.stop()
    assert f"serving {path.stem} (200)" in serve.output
    assert upstream_chunks(again) == upstream_chunks(load_recording(path))
    printed = capsys.readouterr().out
    assert "get_weather" in printed and "Lisbon" in printed
    assert "[finish_reason: tool_calls]" in printed


def sdk_example(guide: str, port: int) -> str:
    """The script the guide prints, pointed at this test's proxy."""
    script = guide.split("<<'PY'\n", 1)[1].split("\nPY", 1)[0]
    assert "127.0.0.1:3307" in script
    return script.replace("127.0.0.1:3307", f"127.0.0.1:{port}")
