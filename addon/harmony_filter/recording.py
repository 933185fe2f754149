"""Recorded upstream exchanges: the fixtures of the replay upstream and of the recording tests.

A recording is a mitmproxy `.flow` file holding one HTTPFlow: the chat request a client sent and
the response exactly as a gpt-oss server sent it (status, headers, raw body). A `.flow` keeps the
body but not how it was cut on the wire, and for a streaming filter the cuts are what matters (a
special token or a UTF-8 character split between two reads), so `flow.metadata["harmony"]` holds:

- `source`: where the case comes from (corpus id and public source);
- `upstream_chunks`: for an SSE response, the body as the list of byte chunks the server wrote;
- `demo` (optional, true): the replay upstream serves this one when no other recording matches.
"""

import json
import time
from pathlib import Path
from typing import Any

from mitmproxy import connection
from mitmproxy import http
from mitmproxy import io
from mitmproxy.net.http import status_codes

RECORDED_URL = "http://127.0.0.1:3308/v1/chat/completions"


def load_recording(path: str | Path) -> http.HTTPFlow:
    with open(path, "rb") as file:
        flows = list(io.FlowReader(file).stream())
    if len(flows) != 1 or not isinstance(flows[0], http.HTTPFlow) or not flows[0].response:
        raise ValueError(f"{path}: a recording holds exactly one HTTP flow with a response")
    return flows[0]


def save_recording(flow: http.HTTPFlow, path: str | Path) -> None:
    with open(path, "wb") as file:
        io.FlowWriter(file).add(flow)


def is_event_stream(response: http.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


def upstream_chunks(flow: http.HTTPFlow) -> list[bytes]:
    """The response body as the server wrote it: the recorded chunks, or the body in one piece."""
    assert flow.response
    chunks = flow.metadata.get("harmony", {}).get("upstream_chunks")
    return list(chunks) if chunks else [flow.response.raw_content or b""]


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
