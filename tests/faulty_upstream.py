"""A loopback gpt-oss upstream that misbehaves on purpose, for the fault and load tests.

Each request picks its behaviour with the `x-fault` header (see FAULTS; `ok` when absent) and
names its marker in the last user message. The server writes raw bytes on the socket, so a fault
can cut the connection anywhere (mid-event, mid-special-token, mid-tool-arguments, mid-body) and
split an event over as many TCP reads as it likes. The answers are what llama.cpp without a
reasoning parser streams: Harmony text in `delta.content`, a few characters per event.

It also notes what became of every exchange, so a test can check that the proxy released the
upstream connection when its client went away.

    python tests/faulty_upstream.py [--port P]     # prints `listening on http://HOST:PORT`
"""

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from http import HTTPStatus
from typing import Any

from procs import served_in_thread

from harmony_filter.tools.replay_upstream import last_user_text
from harmony_filter.tools.replay_upstream import read_body

ENVELOPE = {
    "id": "chatcmpl-faulty",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-oss-20b",
}
REASONING = "Think first."
BIG_EVENT_BYTES = 5 * 1024 * 1024
RETRY_AFTER = "7"
"""The retry-after header of every 429."""
MAX_HEAD = 64 * 1024


THINK_FIRST = [
    "<|channel|>",
    "analysis",
    "<|message|>",
    "Think",
    " first.",
    "<|end|>",
    "<|start|>",
    "assistant",
    "<|channel|>",
]
"""The reasoning every answer starts with, up to the next message's channel."""


def answer_pieces(marker: str, numbers: int = 0) -> list[str]:
    """A reasoned answer cut like a tokenizer would: `<marker> 0 1 … n-1.` after the analysis."""
    return [
        *THINK_FIRST,
        "final",
        "<|message|>",
        marker,
        *(f" {n}" for n in range(numbers)),
        ".",
        "<|return|>",
    ]


def answer_text(marker: str, numbers: int = 0) -> str:
    """The content a client should end up with for `answer_pieces(marker, numbers)`."""
    return marker + "".join(f" {n}" for n in range(numbers)) + "."


TOOL_PIECES = [
    *THINK_FIRST,
    "commentary to=functions.get_weather <|constrain|>json",
    "<|message|>",
    '{"city":',
    '"Paris"}',
    "<|call|>",
]


def event(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    chunk = ENVELOPE | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | extra
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


def stream_events(pieces: list[str], finish: str = "stop") -> list[bytes]:
    return [event(piece) for piece in pieces] + [event(finish=finish), b"data: [DONE]\n\n"]


def completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-faulty",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-oss-20b",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    ).encode()


@dataclass
class Script:
    """How to answer one request: the body as pieces (one socket write each), how it is framed,
    and whether it ends properly."""

    pieces: list[bytes] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/event-stream"
    framing: str = "chunked"
    """`chunked`, `length` (a content-length for the whole body) or `close` (the body ends when
    the connection does)."""
    complete: bool = True
    """False: close the connection before the body is complete (a crash, a dropped link)."""
    pause: float = 0.0
    """Seconds between pieces, so each one reaches the proxy in its own TCP read."""
    hang: bool = False
    """Never answer: wait until the peer goes away."""


def _cut(events: list[bytes], at: int, keep: int) -> list[bytes]:
    """The first `at` events, then the first `keep` bytes of the next one."""
    return [*events[:at], events[at][:keep]]


def _stream_or_json(pieces: list[str], request: dict[str, Any], headers: dict[str, str]) -> Script:
    if request.get("stream") is True:
        return Script(stream_events(pieces), pause=float(headers.get("x-pace", "0")))
    return Script([completion("".join(pieces))], content_type="application/json", framing="length")


def _ok(request: dict[str, Any], headers: dict[str, str]) -> Script:
    marker = last_user_text(request.get("messages")) or "no marker"
    return _stream_or_json(
        answer_pieces(marker, int(headers.get("x-numbers", "0"))), request, headers
    )


def _tool(request: dict[str, Any], headers: dict[str, str]) -> Script:
    return _stream_or_json(TOOL_PIECES, request, headers)


def _status(status: int, body: str) -> Script:
    """`json`: an OpenAI-format error; `text`: an HTML page (a reverse proxy's); `empty`."""
    if body == "json":
        error = {"error": {"message": f"upstream says {status}", "type": "server_error"}}
        return Script([json.dumps(error).encode()], status, "application/json", "length")
    if body == "text":
        page = f"<html><body><h1>{status} {HTTPStatus(status).phrase}</h1></body></html>"
        return Script([page.encode()], status, "text/html", "length")
    return Script([], status, "text/plain", "length")


def _scripted(fault: str, request: dict[str, Any], headers: dict[str, str]) -> Script:
    marker = last_user_text(request.get("messages")) or "no marker"
    events = stream_events(answer_pieces(marker))
    final = events.index(event(marker))  # the first event of the final answer
    match fault:
        case "cut-mid-event":  # the answer's first event arrives, the next breaks off inside
            return Script(_cut(events, final + 1, 20), complete=False)
        case "cut-mid-event-close":  # the same, where the body ends with the connection
            return Script(_cut(events, final + 1, 20), framing="close")
        case "cut-mid-token":  # `<|ret` of the closing `<|return|>`, then nothing
            pieces = answer_pieces(marker)
            pieces[-1:] = ["<|ret", "urn|>"]
            return Script(stream_events(pieces)[: len(pieces) - 1], complete=False)
        case "cut-mid-tool-arguments":
            return Script(
                stream_events(TOOL_PIECES)[: TOOL_PIECES.index('"Paris"}')], complete=False
            )
        case "ping-comments":
            return Script([piece for e in events for piece in (b": ping\n\n", e)])
        case "event-id-fields":
            return Script([b"event: message\nid: %d\n" % n + e for n, e in enumerate(events)])
        case "crlf-line-ends":
            return Script([e.replace(b"\n", b"\r\n") for e in events])
        case "data-without-space":
            return Script([e.replace(b"data: ", b"data:", 1) for e in events])
        case "event-split-across-reads":  # the answer's first event, 3 bytes per read
            split = [events[final][i : i + 3] for i in range(0, len(events[final]), 3)]
            return Script([*events[:final], *split, *events[final + 1 :]], pause=0.001)
        case "one-5mb-event":
            big = ("All work and no play. " * (BIG_EVENT_BYTES // 22 + 1))[:BIG_EVENT_BYTES]
            whole = "".join(answer_pieces(marker)).replace(marker, big + marker)
            return Script(stream_events([whole]))
        case "invalid-utf8":
            bad = event("café").replace("é".encode(), b"\xe9")  # a Latin-1 byte, not UTF-8
            return Script([*events[:final], bad, *events[final:]])
        case "invalid-json":
            return Script(
                [*events[:final], b'data: {"choices": [{"delta": {"content\n\n', *events[final:]]
            )
        case "json-cut-short":
            body = completion("".join(answer_pieces(marker)))
            return Script(
                [body[: len(body) // 2]], 200, "application/json", "length", complete=False
            )
        case "json-cut-short-close":
            body = completion("".join(answer_pieces(marker)))
            return Script([body[: len(body) // 2]], 200, "application/json", "close")
        case "never-answers":
            return Script(hang=True)
        case _ if fault.startswith("status-"):
            _, status, body = fault.split("-")
            return _status(int(status), body)
        case _:
            return _status(400, "json")


FAULTS = (
    "cut-mid-event",
    "cut-mid-event-close",
    "cut-mid-token",
    "cut-mid-tool-arguments",
    "ping-comments",
    "event-id-fields",
    "crlf-line-ends",
    "data-without-space",
    "event-split-across-reads",
    "one-5mb-event",
    "invalid-utf8",
    "invalid-json",
    "json-cut-short",
    "json-cut-short-close",
    "never-answers",
    *(f"status-{s}-{b}" for s in (429, 500, 502, 503) for b in ("json", "text", "empty")),
)
"""Faults besides `ok` (a good answer, `x-numbers: N` numbers long, `x-pace: S` seconds apart)
and `tool` (a good tool call)."""


@dataclass
class Exchange:
    """One request as the upstream saw it, and what became of its connection."""

    fault: str
    body: bytes
    released: threading.Event = field(default_factory=threading.Event)
    """Set when the peer closed the connection (or we did, after a complete answer)."""


class FaultyUpstream:
    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.open_connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        exchange: Exchange | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, value in (line.split(":", 1) for line in lines[1:] if line)
                }
                body = await read_body(reader, headers)
                exchange = Exchange(headers.get("x-fault", "ok"), body)
                self.exchanges.append(exchange)
                if not await self.answer(reader, writer, exchange, headers):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the peer went away
        finally:
            self.open_connections -= 1
            writer.close()
            if exchange is not None:
                exchange.released.set()

    async def answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: Exchange,
        headers: dict[str, str],
    ) -> bool:
        """Answer one request; False when the connection must close."""
        try:
            request = json.loads(exchange.body)
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        if exchange.fault == "ok":
            script = _ok(request, headers)
        elif exchange.fault == "tool":
            script = _tool(request, headers)
        else:
            script = _scripted(exchange.fault, request, headers)
        if script.hang:
            await reader.read()  # until the peer closes
            return False
        await self.send(reader, writer, script)
        return script.complete and script.framing != "close"

    @staticmethod
    async def send(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, script: Script
    ) -> None:
        size = sum(map(len, script.pieces))
        framing = {
            "chunked": "transfer-encoding: chunked\r\n",
            "length": f"content-length: {size * (1 if script.complete else 2)}\r\n",
            "close": "connection: close\r\n",
        }[script.framing]
        head = (
            f"HTTP/1.1 {script.status} {HTTPStatus(script.status).phrase}\r\n"
            f"content-type: {script.content_type}\r\n{framing}"
            + (f"retry-after: {RETRY_AFTER}\r\n" if script.status == 429 else "")
            + "\r\n"
        )
        chunked = script.framing == "chunked"
        wire = [b"%x\r\n%s\r\n" % (len(p), p) if chunked else p for p in script.pieces]
        if script.complete and chunked:
            # With the last piece, as servers do: a proxy that reads [DONE] apart from the end
            # of the body may see the client leave (on [DONE]) before the body ends.
            wire[-1:] = [b"".join(wire[-1:]) + b"0\r\n\r\n"]
        writer.write(head.encode())
        for number, data in enumerate(wire):
            if reader.at_eof() or writer.is_closing():
                return  # the proxy let go of this stream
            if number and script.pause:
                await asyncio.sleep(script.pause)
            writer.write(data)
            await writer.drain()


@contextmanager
def faulty_upstream() -> Iterator[tuple[str, FaultyUpstream]]:
    """The faulty upstream on a free loopback port in a thread of this process; yields (base URL,
    upstream)."""
    upstream = FaultyUpstream()
    with served_in_thread(upstream.handle, limit=MAX_HEAD) as url:
        yield url, upstream


async def _serve(port: int) -> None:
    server = await asyncio.start_server(FaultyUpstream().handle, "127.0.0.1", port, limit=MAX_HEAD)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args().port))
