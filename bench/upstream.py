"""The benchmark upstream: a loopback HTTP/1.1 server that streams gpt-oss turns like llama.cpp
without a reasoning parser (Harmony text in delta.content, one token per event).

    python bench/upstream.py TURNS.json      # prints `listening on http://127.0.0.1:PORT`

TURNS.json maps a turn name to its pieces (see workload.py). A client picks the turn with the
`x-bench-turn` header and the pace with `x-bench-pace-us` (microseconds between events, 0: as
fast as the server can write). A paced event carries its send time (`time.monotonic_ns()`, the
same clock in every process) in an SSE `id:` line, which the filter keeps on the events it
rewrites, so the client can tell each event's delay; at full speed events go out as a real
server's do, one `data:` line each (delays there would only measure queueing). The JSON envelope
stays the same for the whole stream, as a real server's does. The response headers say when the
request arrived (`x-bench-received-ns`: the upstream's own time can be told from the proxy's) and
how many events follow (`x-bench-events`).
"""

import asyncio
import json
import sys
import time

YIELD_EVERY = 16
"""At full speed, let other streams have a turn after this many events."""

# llama.cpp writes its JSON with sorted keys (nlohmann::json), choices first.
_ENVELOPE_TAIL = (
    b'"created":1760000000,"id":"chatcmpl-bench","model":"gpt-oss-20b",'
    b'"object":"chat.completion.chunk","system_fingerprint":"b7010-c27efd2bd"}\n\n'
)


def sse_events(pieces: list[str]) -> list[bytes]:
    """The role first, one token an event, then the finish."""
    deltas = [{"role": "assistant", "content": None}] + [{"content": p} for p in pieces] + [{}]
    events = []
    for position, delta in enumerate(deltas):
        finish = "stop" if position == len(deltas) - 1 else None
        choice = {"delta": delta, "finish_reason": finish, "index": 0}
        choice_json = json.dumps(choice, ensure_ascii=False, separators=(",", ":")).encode()
        events.append(b'data: {"choices":[' + choice_json + b"]," + _ENVELOPE_TAIL)
    return events


def stamped(event: bytes) -> bytes:
    return b"id: %d\n%s" % (time.monotonic_ns(), event)


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream:
    def __init__(self, turns: dict[str, list[str]]) -> None:
        self.events = {name: sse_events(pieces) for name, pieces in turns.items()}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received = time.monotonic_ns()
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        events = self.events.get(headers.get("x-bench-turn", ""))
        if events is None:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        pace = int(headers.get("x-bench-pace-us", "0")) / 1e6
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n"
            b"x-bench-received-ns: %d\r\nx-bench-events: %d\r\n\r\n" % (received, len(events))
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        for position, event in enumerate(events):
            if pace:
                delay = start + position * pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif position % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            writer.write(chunked(stamped(event) if pace else event))
            await writer.drain()
        writer.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()


async def serve(turns_path: str) -> None:
    with open(turns_path, encoding="utf-8") as f:
        upstream = Upstream(json.load(f))
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, backlog=512)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1]))
    except KeyboardInterrupt:
        pass
