"""The load run: waves of concurrent streams, each with its own marker, through one mitmdump with
the addon to the fault-test upstream (tests/faulty_upstream.py, answering well here). Every
client must get exactly its own answer. The proxy's memory is read before, at the peak of and
after each wave: level from one wave to the next means nothing is kept per flow."""

import asyncio
import os
import re
import sys
import time
from typing import Any

from client import Response
from client import stream
from faulty_upstream import REASONING  # in tests/
from faulty_upstream import answer_pieces
from faulty_upstream import answer_text
from measure import PeakRss
from measure import Target
from measure import cpu_ns
from measure import rss_kib
from measure import targets
from procs import ROOT
from procs import Process

from harmony_filter.tools.judge import from_sse

PACE_S = 0.01
"""Between events of a stream: a busy batched server."""
SETTLE_S = 1.0
"""After a wave, before its RSS counts as `after`."""
MARKER = re.compile(r"load-\d+-\d+")


def marker(wave: int, number: int) -> str:
    return f"load-{wave}-{number:03d}"


async def load_run(streams: int, numbers: int, waves: int) -> dict[str, Any]:
    upstream = Process(
        [sys.executable, str(ROOT / "tests" / "faulty_upstream.py"), "--port", "0"],
        env={"PYTHONPATH": str(ROOT / "addon")},
    )
    try:
        url = upstream.wait_for(r"listening on (http://\S+)").group(1)
        with targets(["harmony"], url) as (proxy,):
            await _wave(proxy.port, 0, 4, numbers)  # warm-up: imports, first flows
            results = [
                await _measured_wave(proxy, n, streams, numbers) for n in range(1, waves + 1)
            ]
    finally:
        upstream.stop()
    return {
        "streams": streams,
        "events_per_stream": len(answer_pieces("", numbers)) + 1,  # and the finish
        "pace_s": PACE_S,
        "waves": results,
    }


async def _wave(port: int, wave: int, streams: int, numbers: int) -> list[Response]:
    headers = {"x-numbers": str(numbers), "x-pace": str(PACE_S)}
    return await asyncio.gather(
        *(
            stream(
                port,
                {
                    "model": "gpt-oss-20b",
                    "stream": True,
                    "messages": [{"role": "user", "content": marker(wave, n)}],
                },
                headers,
            )
            for n in range(streams)
        )
    )


async def _measured_wave(proxy: Target, wave: int, streams: int, numbers: int) -> dict[str, Any]:
    pid, port = proxy.pid, proxy.port
    assert pid is not None
    before = rss_kib(pid)
    cpu_before = cpu_ns(pid)
    start = time.monotonic()
    with PeakRss(pid) as peak:
        responses = await _wave(port, wave, streams, numbers)
    seconds = time.monotonic() - start
    cpu_s = (cpu_ns(pid) - cpu_before) / 1e9
    await asyncio.sleep(SETTLE_S)
    checks = [check(r, marker(wave, n), numbers) for n, r in enumerate(responses)]
    events = sum(len(r.events) for r in responses)
    return {
        "wave": wave,
        "streams": streams,
        "exact": sum(c["exact"] for c in checks),
        "mixed": sum(c["mixed"] for c in checks),
        "incomplete": sum(not c["complete"] for c in checks),
        "chars_lost": sum(c["chars_lost"] for c in checks),
        "problems": [c["problem"] for c in checks if c["problem"]][:5],
        "seconds": seconds,
        "events_per_s": events / seconds,
        "proxy_cpu_s": cpu_s,
        "rss_before_mib": before / 1024,
        "rss_peak_mib": peak.peak_kib / 1024,
        "rss_after_mib": rss_kib(pid) / 1024,
    }


def check(response: Response, own: str, numbers: int) -> dict[str, Any]:
    """Did this client get exactly its own stream?"""
    expected = {
        "content": answer_text(own, numbers),
        "reasoning": REASONING,
        "tool_calls": [],
        "finish_reason": "stop",
    }
    ended = bool(response.events) and response.events[-1][1] == b"data: [DONE]"
    complete = response.error is None and response.complete and ended
    try:
        got = from_sse(response.body)
    except ValueError as e:
        got = {"content": None, "error": str(e)}
    content = got.get("content") or ""
    lost = len(expected["content"]) - len(os.path.commonprefix([expected["content"], content]))
    exact = complete and got == expected
    return {
        "exact": exact,
        "complete": complete,
        "mixed": bool(set(MARKER.findall(content)) - {own}),
        "chars_lost": lost,
        "problem": None if exact else f"{own}: {response.error or got}"[:300],
    }
