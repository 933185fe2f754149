"""The replay upstream on loopback: recorded bytes, recorded chunking, routing, keep-alive."""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mitmproxy import http
from recordings_util import RECORDINGS_DIR
from recordings_util import recording_paths

from harmony_filter.recordings.recording import load_recording
from harmony_filter.recordings.recording import make_recording
from harmony_filter.recordings.recording import save_recording
from harmony_filter.recordings.recording import upstream_chunks
from harmony_filter.tools.replay_upstream import Pace
from harmony_filter.tools.replay_upstream import choose
from harmony_filter.tools.replay_upstream import load_recordings
from harmony_filter.tools.replay_upstream import parse_pace
from harmony_filter.tools.replay_upstream import start_replay_upstream

CHAT = "/v1/chat/completions"


def with_upstream(
    scenario: Callable[[httpx.AsyncClient], Awaitable[None]],
    paths: list[Path] | None = None,
    pace: Pace = 0,
) -> None:
    """Run `scenario` against a replay upstream on a free loopback port."""

    async def main() -> None:
        server, _, port = await start_replay_upstream(
            paths or [RECORDINGS_DIR], "127.0.0.1", 0, pace
        )
        async with server:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await scenario(client)

    asyncio.run(main())


def chat_request(name: str | None = None, **body: object) -> dict:
    return {
        "headers": {"x-replay-recording": name} if name else {},
        "json": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], **body},
    }


@pytest.mark.parametrize(
    "name",
    [
        "lmstudio-blank-lines-between-messages-stream",
        "llamacpp-degenerate-header-call-stream",  # a chunk ends inside a UTF-8 character
        "ollama-reasoning-field-multi-turn-stream",
    ],
)
def test_sse_arrives_in_the_recorded_chunks(name: str) -> None:
    recorded = upstream_chunks(load_recording(RECORDINGS_DIR / f"{name}.flow"))
    assert len(recorded) > 1

    async def scenario(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", CHAT, **chat_request(name, stream=True)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in response.headers
            assert response.headers["x-replay-recording"] == name
            received = [chunk async for chunk in response.aiter_raw()]
        assert b"".join(received) == b"".join(recorded)
        assert received == recorded

    with_upstream(scenario)


def test_json_response_is_sent_whole_with_recorded_status() -> None:
    name = "openrouter-reasoning-mandatory-400-json"
    recorded = load_recording(RECORDINGS_DIR / f"{name}.flow").response
    assert recorded

    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post(CHAT, **chat_request(name))
        assert response.status_code == 400
        assert response.content == recorded.raw_content
        assert response.headers["content-length"] == str(len(response.content))
        assert response.json()["error"]["message"].startswith("Reasoning is mandatory")

    with_upstream(scenario)


THREE_CHUNKS = [b'data: {"a":1}\n\n', b'data: {"b":', b"2}\n\ndata: [DONE]\n\n"]


def three_chunk_stream() -> http.HTTPFlow:
    return make_recording(
        {"model": "gpt-oss-20b", "messages": [], "stream": True},
        200,
        {"content-type": "text/event-stream"},
        THREE_CHUNKS,
        "test",
    )


def test_pace_spaces_the_chunks(tmp_path: Path) -> None:
    chunks = THREE_CHUNKS
    save_recording(three_chunk_stream(), tmp_path / "three.flow")

    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        arrivals = []
        async with client.stream("POST", CHAT, **chat_request(stream=True)) as response:
            async for chunk in response.aiter_raw():
                arrivals.append((time.monotonic() - started, chunk))
        assert [chunk for _, chunk in arrivals] == chunks
        assert arrivals[-1][0] - arrivals[0][0] >= 2 * 0.05

    with_upstream(scenario, [tmp_path / "three.flow"], pace=0.05)


def test_pace_recorded_plays_the_chunks_at_their_recorded_times(tmp_path: Path) -> None:
    chunks = THREE_CHUNKS
    flow = three_chunk_stream()
    flow.metadata["harmony"]["upstream_chunk_times"] = [0.2, 0.2, 0.5]
    save_recording(flow, tmp_path / "timed.flow")

    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        arrivals = []
        async with client.stream("POST", CHAT, **chat_request(stream=True)) as response:
            async for chunk in response.aiter_raw():
                arrivals.append((time.monotonic() - started, chunk))
        assert b"".join(chunk for _, chunk in arrivals) == b"".join(chunks)
        assert arrivals[0][0] >= 0.2  # the first chunk came 0.2 s after the headers
        assert arrivals[-1][0] - arrivals[0][0] >= 0.3 - 0.02

    with_upstream(scenario, [tmp_path / "timed.flow"], pace="recorded")


@pytest.mark.parametrize("text, pace", [("recorded", "recorded"), ("0", 0.0), ("0.25", 0.25)])
def test_pace_is_seconds_or_recorded(text: str, pace: object) -> None:
    assert parse_pace(text) == pace


@pytest.mark.parametrize("text", ["-1", "fast", ""])
def test_other_paces_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_pace(text)


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        local_ports = set()
        for stream in (True, False, True):
            async with client.stream("POST", CHAT, **chat_request(stream=stream)) as response:
                await response.aread()
                assert response.status_code == 200
                network = response.extensions["network_stream"]
                local_ports.add(network.get_extra_info("client_addr")[1])
        models = await client.get("/v1/models")
        assert models.status_code == 200
        assert len(local_ports) == 1

    with_upstream(scenario)


def test_models_lists_the_models_of_the_recordings() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.get("/v1/models")
        assert response.status_code == 200
        listing = response.json()
        assert listing["object"] == "list"
        ids = [model["id"] for model in listing["data"]]
        assert len(ids) == len(set(ids))
        assert {"gpt-oss-20b", "gpt-oss:20b", "openai.gpt-oss-20b-1:0"} <= set(ids)

    with_upstream(scenario)


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("GET", "/v1/chat/completions", {}),
        ("POST", "/v1/completions", {}),
        ("GET", "/", {}),
        ("POST", CHAT, {"x-replay-recording": "no-such-recording"}),
    ],
)
def test_anything_else_is_a_404_in_openai_error_format(
    method: str, path: str, headers: dict[str, str]
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["message"] and error["code"] == "not_found"

    with_upstream(scenario)


def test_a_body_that_is_not_json_is_a_400() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post(CHAT, content=b"{not json")
        assert response.status_code == 400
        assert "error" in response.json()

    with_upstream(scenario)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            b"connection: close\r\ncontent-length: 2\r\n\r\n{}",
            200,
        ),
        (b"GET /v1/models HTTP/1.0\r\n\r\n", 200),
        (b"NONSENSE\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: x\r\n\r\n", 400),
    ],
)
def test_connection_closes_when_asked_or_after_a_bad_request(
    request_bytes: bytes, status: int
) -> None:
    async def main() -> None:
        server, _, port = await start_replay_upstream([RECORDINGS_DIR], "127.0.0.1", 0, 0)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes)
            response = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
            writer.close()
        assert response.startswith(b"HTTP/1.1 %d " % status)

    asyncio.run(main())


def test_chunked_request_bodies_are_read() -> None:
    async def body():
        yield b'{"model": "gpt-oss-20b", "stream": false, '
        yield b'"messages": [{"role": "user", "content": "What is 1+1?"}]}'

    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post(CHAT, content=body())
        assert response.status_code == 200
        assert (
            response.headers["x-replay-recording"] == "lmstudio-blank-lines-between-messages-json"
        )

    with_upstream(scenario)


class TestChoose:
    recordings = load_recordings([RECORDINGS_DIR])

    def pick(self, stream: bool, text: str, tools: bool = False) -> str:
        request = {
            "model": "gpt-oss-20b",
            "stream": stream,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": text}]},
            ],
        }
        if tools:
            request["tools"] = [{"type": "function", "function": {"name": "get_weather"}}]
        return choose(self.recordings, request).name

    def test_same_last_user_message(self) -> None:
        assert self.pick(False, "What is 1+1?") == "lmstudio-blank-lines-between-messages-json"
        assert self.pick(True, " What is 1+1?\n") == "lmstudio-blank-lines-between-messages-stream"

    def test_stream_flag_comes_first(self) -> None:
        assert self.pick(True, "hello") != "vllm-reasoning-content-empty-tool-calls-json"
        assert self.pick(False, "hello") == "vllm-reasoning-content-empty-tool-calls-json"

    def test_anything_else_gets_the_demo(self) -> None:
        assert self.pick(True, "Tell me a joke") == "raw-demo-answer-stream"
        assert self.pick(False, "Tell me a joke") == "raw-demo-answer-json"
        assert self.pick(True, "Tell me a joke", tools=True) == "raw-demo-get-weather-call-stream"
        assert self.pick(False, "Tell me a joke", tools=True) == "raw-demo-get-weather-call-json"

    def test_user_text_beats_tools(self) -> None:
        assert self.pick(True, "What is harmony-filter?", tools=True) == "raw-demo-answer-stream"


def test_command_line_prints_the_address_and_serves(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "addon")}
    command = [sys.executable, "-m", "harmony_filter.tools.replay_upstream", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--pace", "0", str(RECORDINGS_DIR / "raw-demo-answer-json.flow")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        response = httpx.post(line.removeprefix("listening on ") + CHAT, json={"messages": []})
        assert response.status_code == 200
        content = response.json()["choices"][0]["message"]["content"]
        assert content.startswith("<|channel|>analysis")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_command_line_rejects_a_missing_path(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "addon")}
    result = subprocess.run(
        [sys.executable, "-m", "harmony_filter.tools.replay_upstream", str(tmp_path / "none.flow")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "none.flow" in result.stderr


def test_recordings_round_trip_their_chunks(tmp_path: Path) -> None:
    for path in recording_paths():
        flow = load_recording(path)
        save_recording(flow, tmp_path / path.name)
        again = load_recording(tmp_path / path.name)
        assert upstream_chunks(again) == upstream_chunks(flow)
        assert json.loads(again.request.content or b"") == json.loads(flow.request.content or b"")
