"""Recorded upstream exchanges: the fixtures of the replay upstream and of the recording tests.

A recording is a mitmproxy `.flow` file holding one HTTPFlow: the chat request a client sent and
the response exactly as a gpt-oss server sent it (status, headers, raw body). A `.flow` keeps the
body but not how it was cut on the wire, and for a streaming filter the cuts are what matters (a
special token or a UTF-8 character split between two reads), so `flow.metadata["harmony"]` holds:

- `source`: where the case comes from (corpus id and public source, or "recorded by
  harmony-filter");
- `upstream_chunks`: for an SSE response, the body as the list of byte chunks the server wrote;
- `upstream_chunk_times` (optional): when each chunk arrived, in seconds after the response
  headers (the replay upstream can play the stream back at its original pace);
- `demo` (optional, true): the replay upstream serves this one when no other recording matches.

Recordings made by the filter (harmony_record_dir, see recorder.py) also hold what the filter saw
and did (`model`, `client`, `stream`, `outcome`, `fixes`, `repairs`, `recoveries`, `warnings`,
…) and what the client got: `client_status`, `client_headers` and `client_body` (for a stream,
the bytes the client was sent).
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import connection
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy import io
from mitmproxy.net.http import status_codes

RECORDED_URL = "http://127.0.0.1:3308/v1/chat/completions"


def load_flows(path: str | Path) -> list[http.HTTPFlow]:
    """The HTTP flows of a flow file (a recording holds one, a `mitmdump -w` file any number)."""
    with open(path, "rb") as file:
        try:
            return [
                flow for flow in io.FlowReader(file).stream() if isinstance(flow, http.HTTPFlow)
            ]
        except exceptions.FlowReadException as e:
            raise ValueError(f"{path}: not a mitmproxy flow file ({e})") from e


def load_recording(path: str | Path) -> http.HTTPFlow:
    flows = load_flows(path)
    if len(flows) != 1 or not flows[0].response:
        raise ValueError(f"{path}: a recording holds exactly one HTTP flow with a response")
    return flows[0]


def save_recording(flow: http.HTTPFlow, path: str | Path) -> None:
    with open(path, "wb") as file:
        io.FlowWriter(file).add(flow)


def is_event_stream(response: http.Response) -> bool:
    return is_event_stream_type(response.headers.get("content-type"))


def is_event_stream_type(content_type: str | None) -> bool:
    return (content_type or "").lower().startswith("text/event-stream")


def flow_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their `*.flow` files (sorted by name)."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.flow")) if path.is_dir() else [path]
    return files


def upstream_chunks(flow: http.HTTPFlow) -> list[bytes]:
    """The response body as the server wrote it: the recorded chunks, or the body in one piece."""
    assert flow.response
    chunks = flow.metadata.get("harmony", {}).get("upstream_chunks")
    return list(chunks) if chunks else [flow.response.raw_content or b""]


def upstream_chunk_times(flow: http.HTTPFlow) -> list[float] | None:
    """When each upstream chunk arrived (seconds after the response headers), if recorded."""
    times = flow.metadata.get("harmony", {}).get("upstream_chunk_times")
    return list(times) if times and len(times) == len(upstream_chunks(flow)) else None


@dataclass(frozen=True)
class ClientSide:
    """What the client got when the recording was made."""

    status: int
    event_stream: bool
    body: bytes


def recorded_client_side(flow: http.HTTPFlow) -> ClientSide | None:
    """None for recordings that do not hold it (those built from public sources)."""
    assert flow.response
    metadata = flow.metadata.get("harmony", {})
    body = metadata.get("client_body")
    if body is None:
        return None
    client_headers = {k.lower(): v for k, v in metadata.get("client_headers") or []}
    content_type = client_headers.get("content-type", flow.response.headers.get("content-type"))
    return ClientSide(
        metadata.get("client_status", flow.response.status_code),
        is_event_stream_type(content_type),
        body,
    )


def make_recording(
    request_body: dict[str, Any],
    status: int,
    headers: dict[str, str],
    chunks: list[bytes],
    source: str,
    client_headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    """Build a recording. `headers` are the server's; framing headers it would have sent
    (content-length, or transfer-encoding for SSE) are added when missing."""
    now = time.time()
    request = http.Request.make(
        "POST",
        RECORDED_URL,
        json.dumps(request_body, ensure_ascii=False).encode(),
        http.Headers(host="127.0.0.1:3308", authorization="Bearer sk-redacted"),
    )
    client = {"content-type": "application/json"} | (client_headers or {})
    for name, value in client.items():
        request.headers[name] = value
    body = b"".join(chunks)
    response = http.Response(
        b"HTTP/1.1",
        status,
        status_codes.RESPONSES.get(status, "").encode(),
        http.Headers(),
        body,
        None,
        now,
        now,
    )
    for name, value in headers.items():
        response.headers[name] = value
    metadata: dict[str, Any] = {"source": source}
    if is_event_stream(response):
        response.headers.setdefault("transfer-encoding", "chunked")
        metadata["upstream_chunks"] = list(chunks)
    else:
        response.headers.setdefault("content-length", str(len(body)))
    flow = http.HTTPFlow(
        connection.Client(
            peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 3308), timestamp_start=now
        ),
        connection.Server(address=("127.0.0.1", 3308)),
    )
    flow.request, flow.response = request, response
    flow.metadata["harmony"] = metadata
    return flow
