"""A loopback HTTP/1.1 server that plays recordings back as a gpt-oss upstream.

It lets the filter be demonstrated and tested end to end without a GPU: a recorded response goes
out byte for byte, and an SSE body goes out in the chunks the real server wrote, so whatever cuts
a special token or a UTF-8 character in two reaches the proxy cut the same way.

    python -m harmony_filter.tools.replay_upstream [--host H] [--port P] [--pace S|recorded]
                                             [--guide] PATH...

`--pace recorded` plays each stream at the pace it was recorded at (recordings made with
harmony_record_dir keep when each chunk arrived); `--guide` (`./run.sh serve`) prints how to put
the filter in front and replay a recording with the openai SDK, and logs each request served.
"""

import argparse
import asyncio
import json
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from typing import Literal

from ..api.errors import openai_error
from ..recordings.recording import flow_files
from ..recordings.recording import is_event_stream
from ..recordings.recording import load_recording
from ..recordings.recording import upstream_chunk_times
from ..recordings.recording import upstream_chunks

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
MAX_HEAD = 64 * 1024
DEFAULT_PACE = 0.02
"""Seconds between SSE chunks; with `recorded`, for recordings that do not say when chunks came."""

Pace = float | Literal["recorded"]


@dataclass(frozen=True)
class Recording:
    path: Path
    name: str
    model: str
    stream: bool
    last_user: str | None
    has_tools: bool
    demo: bool
    status: int
    reason: str
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    chunk_times: list[float] | None
    """When each chunk arrived, in seconds after the response headers (if recorded)."""
    event_stream: bool

    def offsets(self, pace: Pace) -> list[float]:
        """When to send each chunk, in seconds after the response headers."""
        if pace == "recorded" and self.chunk_times:
            return self.chunk_times
        step = DEFAULT_PACE if pace == "recorded" else pace
        return [number * step for number in range(len(self.chunks))]


def last_user_text(messages: Any) -> str | None:
    """The text of the last user message (string content or text parts), whitespace-trimmed."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(
                    part.get("text", "") for part in content if isinstance(part, dict)
                )
            return content.strip() if isinstance(content, str) else None
    return None


def read_recording(path: Path) -> Recording:
    flow = load_recording(path)
    assert flow.response
    request = json.loads(flow.request.content or b"{}")
    return Recording(
        path=path,
        name=path.name.removesuffix(".flow"),
        model=str(request.get("model", "")),
        stream=bool(request.get("stream")),
        last_user=last_user_text(request.get("messages")),
        has_tools=bool(request.get("tools")),
        demo=bool(flow.metadata.get("harmony", {}).get("demo")),
        status=flow.response.status_code,
        reason=flow.response.reason,
        headers=[(k, v) for k, v in flow.response.headers.items(multi=True)],
        chunks=upstream_chunks(flow),
        chunk_times=upstream_chunk_times(flow),
        event_stream=is_event_stream(flow.response),
    )


def load_recordings(paths: Iterable[str | Path]) -> list[Recording]:
    """Recordings from files and directories (their `*.flow` files, sorted by name)."""
    return [read_recording(file) for file in flow_files(paths)]


def choose(recordings: list[Recording], request: dict[str, Any]) -> Recording:
    """The best match: same `stream` flag, then same last user message, then tools declared or
    not alike, then a demo recording, then the first one."""
    stream = bool(request.get("stream"))
    candidates = [r for r in recordings if r.stream == stream] or recordings
    last_user = last_user_text(request.get("messages"))
    has_tools = bool(request.get("tools"))
    return max(
        candidates,
        key=lambda r: (
            last_user is not None and r.last_user == last_user,
            r.has_tools == has_tools,
            r.demo,
        ),
    )


def request_error(message: str, code: str) -> dict[str, Any]:
    return openai_error(message, code, kind="invalid_request_error")


class ReplayUpstream:
    def __init__(self, recordings: list[Recording], pace: Pace, log: bool = False) -> None:
        if not recordings:
            raise ValueError("no recordings to serve")
        self.recordings = recordings
        self.pace = pace
        self.log = log
        self.received: deque[bytes] = deque(maxlen=100)
        """The latest chat request bodies, as they arrived (to check what a proxy sent)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.serve_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection should close."""
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in lines[1:] if line)
            }
            body = await read_body(reader, headers)
        except ValueError:
            await self.send_json(writer, 400, request_error("malformed request", "bad_request"))
            return False
        path = target.split("?", 1)[0].rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            await self.chat(writer, headers, body)
        elif method == "GET" and path.endswith("/models"):
            models = dict.fromkeys(r.model for r in self.recordings)
            listing = [
                {"id": m, "object": "model", "created": 0, "owned_by": "replay"} for m in models
            ]
            await self.send_json(writer, 200, {"object": "list", "data": listing})
        else:
            await self.send_json(
                writer, 404, request_error(f"no route for {method} {path}", "not_found")
            )
        return version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"

    async def chat(
        self, writer: asyncio.StreamWriter, headers: dict[str, str], body: bytes
    ) -> None:
        self.received.append(body)
        name = headers.get("x-replay-recording")
        if name:
            recording = next((r for r in self.recordings if r.name == name), None)
            if recording is None:
                error = request_error(f"no recording named {name!r}", "not_found")
                return await self.send_json(writer, 404, error)
        else:
            try:
                request = json.loads(body)
            except ValueError:
                request = None
            if not isinstance(request, dict):
                error = request_error("the request body is not a JSON object", "invalid_json")
                return await self.send_json(writer, 400, error)
            recording = choose(self.recordings, request)
        headers_out = [(k, v) for k, v in recording.headers if k.lower() not in HOP_BY_HOP]
        headers_out.append(("x-replay-recording", recording.name))
        if self.log:
            print(f"serving {recording.name} ({recording.status})", file=sys.stderr, flush=True)
        await self.send(
            writer,
            recording.status,
            recording.reason,
            headers_out,
            recording.chunks,
            recording.offsets(self.pace) if recording.event_stream else None,
        )

    async def send_json(self, writer: asyncio.StreamWriter, status: int, value: Any) -> None:
        headers = [("content-type", "application/json")]
        body = json.dumps(value).encode()
        await self.send(writer, status, HTTPStatus(status).phrase, headers, [body])

    async def send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        chunks: list[bytes],
        offsets: list[float] | None = None,
    ) -> None:
        """Send a response: whole with a content-length, or (given when to send each chunk, in
        seconds after the headers) one HTTP chunk per recorded chunk."""
        framing = (
            ("transfer-encoding", "chunked")
            if offsets is not None
            else ("content-length", str(sum(map(len, chunks))))
        )
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in [*headers, framing]
        )
        writer.write(head.encode("latin-1") + b"\r\n")
        if offsets is None:
            writer.write(b"".join(chunks))
            return await writer.drain()
        previous = 0.0
        for chunk, offset in zip(chunks, offsets, strict=True):
            if not chunk:
                continue  # an empty chunk would end the body
            if offset > previous:  # at least the recorded gap between two chunks
                await asyncio.sleep(offset - previous)
            previous = offset
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]  # the chunk, without its CRLF
        await reader.readuntil(b"\r\n")  # the blank line after the last chunk (no trailers)
        return body
    return await reader.readexactly(int(headers.get("content-length", "0")))


async def start_replay_upstream(
    paths: Iterable[str | Path],
    host: str = "127.0.0.1",
    port: int = 3308,
    pace: Pace = DEFAULT_PACE,
    log: bool = False,
) -> tuple[asyncio.Server, ReplayUpstream, int]:
    """Start serving; returns the server, the upstream and the port it listens on (useful with
    port 0)."""
    upstream = ReplayUpstream(load_recordings(paths), pace, log)
    server = await asyncio.start_server(upstream.handle, host, port, limit=MAX_HEAD)
    return server, upstream, server.sockets[0].getsockname()[1]


async def serve(paths: list[str], host: str, port: int, pace: Pace, guide: bool) -> None:
    server, upstream, port = await start_replay_upstream(paths, host, port, pace, log=guide)
    print(f"listening on http://{host}:{port}", flush=True)
    if guide:
        print(guide_text(upstream.recordings, f"http://{host}:{port}", pace), flush=True)
    async with server:
        await server.serve_forever()


def parse_pace(text: str) -> Pace:
    if text == "recorded":
        return "recorded"
    try:
        pace = float(text)
    except ValueError:
        pace = -1
    if pace < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds, nor `recorded`: {text!r}")
    return pace


PROXY_PORT = 3307
"""Where the guide puts the filter: ./run.sh serve-demo's default port."""


def guide_text(recordings: list[Recording], url: str, pace: Pace) -> str:
    """How to run the filter in front of this upstream and replay the first recording."""
    lines = [f"\nServing {len(recordings)} recording(s) (SSE pace: {pace_text(pace)}):"]
    for recording in recordings:
        kind = f"{len(recording.chunks)} chunks" if recording.event_stream else "json"
        if recording.event_stream and recording.chunk_times and pace == "recorded":
            kind += f" over {recording.chunk_times[-1]:.2f} s"
        lines.append(f"  {recording.name}  ({recording.model}, {recording.status}, {kind})")
    first = recordings[0]
    lines += [
        "",
        "A request carrying the header `x-replay-recording: NAME` gets that recording; any other",
        "gets the best match (same stream flag, last user message, tools or not).",
        "",
        "Put the filter in front of it, in another terminal:",
        f"  UPSTREAM={url} ./run.sh serve-demo",
        f"  (or: mitmdump -s addon/harmony.py --mode reverse:{url}@{PROXY_PORT})",
        "",
        f"Then send {first.name}'s request again through it with the openai SDK:",
        "",
        sdk_example(first, f"http://127.0.0.1:{PROXY_PORT}/v1"),
    ]
    return "\n".join(lines)


def pace_text(pace: Pace) -> str:
    if pace == "recorded":
        return f"as recorded ({DEFAULT_PACE} s between chunks where the recording has no times)"
    return f"{pace} s between chunks"


SHOW_STREAM = """\
for chunk in stream:
    for choice in chunk.choices:
        delta = choice.delta.model_dump(exclude_none=True)
        if delta.get("reasoning_content"):
            print(f"\\x1b[2m{delta['reasoning_content']}\\x1b[0m", end="", flush=True)
        if delta.get("content"):
            print(delta["content"], end="", flush=True)
        for call in delta.get("tool_calls") or ():
            print(f"\\ntool call: {call}", flush=True)
        if choice.finish_reason:
            print(f"\\n[finish_reason: {choice.finish_reason}]")"""
SHOW_MESSAGE = """\
print(answer.choices[0].message.model_dump(exclude_none=True))"""


def sdk_example(recording: Recording, base_url: str) -> str:
    """A script that sends the recording's request again, as it was, and prints the answer."""
    result, show = ("stream", SHOW_STREAM) if recording.stream else ("answer", SHOW_MESSAGE)
    return f"""{sys.executable} - <<'PY'
import json

from openai import OpenAI

from harmony_filter.recordings.recording import load_recording

request = json.loads(load_recording("{recording.path.resolve()}").request.content)
client = OpenAI(base_url="{base_url}", api_key="unused")
{result} = client.chat.completions.create(
    model=request.pop("model"),
    messages=request.pop("messages"),
    stream=request.pop("stream", False),
    extra_body=request,
    extra_headers={{"x-replay-recording": "{recording.name}"}},
)
{show}
PY"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harmony_filter.tools.replay_upstream",
        description="Serve recorded gpt-oss responses as an OpenAI-compatible upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3308)
    parser.add_argument(
        "--pace",
        type=parse_pace,
        default=DEFAULT_PACE,
        help=f"seconds between SSE chunks (default {DEFAULT_PACE}), or `recorded`: the timing "
        "the recording holds",
    )
    parser.add_argument(
        "--guide",
        action="store_true",
        help="print how to put the filter in front and replay a recording; log each request",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help=".flow files or directories")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.paths, args.host, args.port, args.pace, args.guide))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as e:
        parser.exit(2, f"replay_upstream: {e}\n")


if __name__ == "__main__":
    main()
