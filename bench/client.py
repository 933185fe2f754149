"""The benchmark client: one streaming chat request over a raw loopback HTTP/1.1 connection
(h11, which mitmproxy depends on), every SSE event kept with the time it arrived.

Lighter than an SDK on purpose (nothing is parsed while the stream runs), so at full speed the
proxy, not the client, is the bottleneck.
"""

import asyncio
import json
import time
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import h11

READ_SIZE = 256 * 1024


@dataclass(slots=True)
class Response:
    sent_ns: int = 0
    """When the request was written."""
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    """(arrival time in ns, the event without its blank line), in order."""
    complete: bool = False
    """The body ended as HTTP says it should."""
    error: str | None = None

    @property
    def body(self) -> bytes:
        return b"".join(event + b"\n\n" for _, event in self.events)


async def stream(port: int, body: dict[str, Any], headers: dict[str, str]) -> Response:
    """POST `body` to /v1/chat/completions on 127.0.0.1:`port`; errors end up in `.error`."""
    response = Response()
    try:
        await _stream(response, port, json.dumps(body).encode(), headers)
    except (OSError, ValueError, h11.ProtocolError, asyncio.IncompleteReadError) as e:
        response.error = f"{type(e).__name__}: {e}"
    return response


async def _stream(response: Response, port: int, payload: bytes, headers: dict[str, str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        http = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[
                ("host", f"127.0.0.1:{port}"),
                ("content-type", "application/json"),
                ("accept", "text/event-stream"),
                ("connection", "close"),
                ("content-length", str(len(payload))),
                *headers.items(),
            ],
        )
        response.sent_ns = time.monotonic_ns()
        writer.write(http.send(request) + http.send(h11.Data(data=payload)))
        writer.write(http.send(h11.EndOfMessage()))
        pending = b""
        now = 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                now = time.monotonic_ns()
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise ValueError(f"HTTP {event.status_code}")
                response.headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                *events, pending = (pending + event.data).split(b"\n\n")
                response.events += [(now, e) for e in events]
            elif isinstance(event, h11.EndOfMessage):
                response.complete = True
                break
            else:  # the connection closed early
                break
    finally:
        writer.close()
