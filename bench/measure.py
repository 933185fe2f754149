"""The benchmark's processes (upstream, proxies) and its measurements: streams through each way
to the upstream, timed per event, with the proxy's CPU time and memory from /proc."""

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import ExitStack
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client import Response
from client import stream
from procs import MITMDUMP  # tests/procs.py: the end-to-end tests' process helpers
from procs import ROOT
from procs import Process
from workload import FINAL_MARKER
from workload import request_body

BENCH = Path(__file__).resolve().parent

RSS_SAMPLE_S = 0.02


# -- /proc ----------------------------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of all threads of `pid` in ns, from schedstat (the ticks in /proc/PID/stat are
    10 ms: too coarse for a few thousand events)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise KeyError("VmRSS")


class PeakRss:
    """Samples a process's RSS while streams run (VmHWM cannot tell this scenario's peak from
    an earlier one's)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> "PeakRss":
        if self.pid is not None:
            self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))  # type: ignore[arg-type]

    async def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))  # type: ignore[arg-type]
            await asyncio.sleep(RSS_SAMPLE_S)


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One way to the upstream: `direct`, `mitmdump` (plain, streaming) or `harmony` (the
    addon)."""

    mode: str
    port: int
    proxy: Process | None

    @property
    def pid(self) -> int | None:
        return self.proxy.proc.pid if self.proxy else None


@contextmanager
def upstream(turns_file: Path) -> Iterator[str]:
    """The URL of the benchmark upstream serving the turns in `turns_file`."""
    child = Process([sys.executable, str(BENCH / "upstream.py"), str(turns_file)])
    try:
        yield child.wait_for(r"listening on (http://\S+)").group(1)
    finally:
        child.stop()


PROXY_ARGS = {
    "mitmdump": ["--set", "stream_large_bodies=1"],
    "held": ["-s", str(BENCH / "hold_requests.py")],
    "harmony": ["-s", str(ROOT / "addon" / "harmony.py")],
}
"""Plain mitmdump streaming every body as it comes; the same holding request bodies until they
are whole (as any addon that edits requests must: the filter reads the request, and streams
event streams itself); mitmdump with the filter."""


def start_proxy(mode: str, upstream_url: str, confdir: Path) -> Process:
    """mitmdump in reverse mode in front of the upstream, as `mode` (see PROXY_ARGS) says."""
    return Process(
        [
            MITMDUMP,
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--mode",
            f"reverse:{upstream_url}",
            "--set",
            f"confdir={confdir}",
            "--set",
            "flow_detail=0",
            *PROXY_ARGS[mode],
        ]
    )


@contextmanager
def targets(modes: Sequence[str], upstream_url: str) -> Iterator[list[Target]]:
    """A target per mode; the proxies start side by side."""
    with ExitStack() as stack:
        confdirs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hf-bench-")))
        proxies = {}
        for mode in modes:
            if mode != "direct":
                proxies[mode] = start_proxy(mode, upstream_url, confdirs / mode)
                stack.callback(proxies[mode].stop)
        found = []
        for mode in modes:
            if mode == "direct":
                found.append(Target(mode, int(upstream_url.rsplit(":", 1)[1]), None))
            else:
                port = int(proxies[mode].wait_for(r"listening at \S*?:(\d+)").group(1))
                found.append(Target(mode, port, proxies[mode]))
        yield found


# -- one stream -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """One stream, timed. First content means the same in every mode: the event that brings
    the client the first character of the final answer. Through the filter that is the first
    non-empty `delta.content`; from a raw upstream the first event whose Harmony text goes past
    `<|channel|>final<|message|>`. In a tool-call turn it is the event that completes the call:
    the first `tool_calls` delta through the filter (it hands a call out whole), the finish
    event from a raw upstream (only then is the call known to be whole)."""

    upstream_events: int
    """Events the upstream sent (it says how many in a header)."""
    events: int
    """Events received ([DONE] aside)."""
    delays_ns: list[int]
    """Per stamped event received: arrival time - the upstream's send time."""
    ttfc_ms: float | None
    """Request sent -> first content received."""
    path_ms: float | None
    """The time to first content minus the upstream's own part of it (request read -> first
    content sent, when stamped): what the way there and back costs."""
    error: str | None


def timing(response: Response, rewritten: bool, tool_turn: bool) -> Timing:
    delays = []
    events = 0
    first: tuple[int, int | None] | None = None  # (arrival, upstream send time)
    raw_text = ""
    for arrived, event in response.events:
        sent = None
        if event.startswith(b"id: "):
            stamp, _, event = event.partition(b"\n")
            sent = int(stamp[4:])
            delays.append(arrived - sent)
        if not event.startswith(b"data: {"):
            continue  # [DONE]
        events += 1
        if first is not None:
            continue
        choice = (json.loads(event[6:]).get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        if tool_turn:
            found = delta.get("tool_calls") if rewritten else choice.get("finish_reason")
        elif rewritten:
            found = delta.get("content")
        else:
            raw_text += delta.get("content") or ""
            found = FINAL_MARKER in raw_text and not raw_text.endswith(FINAL_MARKER)
        if found:
            first = (arrived, sent)
    ttfc = path = None
    if first is not None and response.error is None:
        arrived, sent = first
        ttfc = (arrived - response.sent_ns) / 1e6
        if sent is not None:
            path = ttfc - (sent - int(response.headers["x-bench-received-ns"])) / 1e6
    error = response.error or (None if response.complete else "incomplete body")
    upstream_events = int(response.headers.get("x-bench-events", 0))
    return Timing(upstream_events, events, delays, ttfc, path, error)


# -- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    turn: str
    pace_us: int
    """Between events; 0: as fast as the upstream can write."""
    streams: int
    """At once."""
    rounds: int = 1
    """The modes take turns round by round, so load from elsewhere hits them alike."""
    reference: bool = False
    """Also through the `held` reference proxy (for time to first content)."""


async def run_streams(to: Target, turn: str, pace_us: int, streams: int) -> list[Timing]:
    body = request_body(turn)
    headers = {"x-bench-turn": turn, "x-bench-pace-us": str(pace_us)}
    rewritten = to.mode == "harmony"
    responses = await asyncio.gather(*(stream(to.port, body, headers) for _ in range(streams)))
    return [timing(r, rewritten, turn.startswith("tool")) for r in responses]


async def run_scenario(scenario: Scenario, to: Sequence[Target]) -> dict[str, dict[str, Any]]:
    """The scenario through every target (the reference only if the scenario asks for it); a
    summary per mode."""
    to = [t for t in to if scenario.reference or t.mode != "held"]
    timings: dict[str, list[Timing]] = {t.mode: [] for t in to}
    rounds: dict[str, list[Round]] = {t.mode: [] for t in to}
    for number in range(scenario.rounds):
        shift = number % len(to)
        for t in [*to[shift:], *to[:shift]]:
            cpu_before = cpu_ns(t.pid) if t.pid else 0
            start = time.monotonic()
            with PeakRss(t.pid) as rss:
                streams = await run_streams(t, scenario.turn, scenario.pace_us, scenario.streams)
            cpu_s = (cpu_ns(t.pid) - cpu_before) / 1e9 if t.pid else 0.0
            events = sum(s.upstream_events for s in streams)
            rounds[t.mode].append(Round(events, time.monotonic() - start, cpu_s, rss.peak_kib))
            timings[t.mode] += streams
    return {mode: summary(scenario, timings[mode], rounds[mode]) for mode in timings}


@dataclass(frozen=True, slots=True)
class Round:
    events: int
    wall_s: float
    proxy_cpu_s: float
    proxy_peak_kib: int


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(scenario: Scenario, timings: list[Timing], rounds: list[Round]) -> dict[str, Any]:
    """Latencies over every stream; throughput and CPU from the best round (other work on the
    machine only ever makes them worse)."""
    delays_ms = [d / 1e6 for t in timings for d in t.delays_ns]
    ttfc = [t.ttfc_ms for t in timings if t.ttfc_ms is not None]
    path = [t.path_ms for t in timings if t.path_ms is not None]
    cpu = [r.proxy_cpu_s * 1e6 / r.events for r in rounds if r.proxy_cpu_s and r.events]
    return {
        "scenario": scenario.name,
        "turn": scenario.turn,
        "pace_us": scenario.pace_us,
        "streams": scenario.streams,
        "requests": len(timings),
        "errors": sorted({t.error for t in timings if t.error}),
        "missing_first_content": sum(1 for t in timings if t.ttfc_ms is None),
        "upstream_events": sum(t.upstream_events for t in timings),
        "received_events": sum(t.events for t in timings),
        "events_per_s": max(r.events / r.wall_s for r in rounds),
        "ttfc_ms": statistics.median(ttfc) if ttfc else None,
        "path_ms": statistics.median(path) if path else None,
        "delay_ms_p50": percentile(delays_ms, 0.5),
        "delay_ms_p99": percentile(delays_ms, 0.99),
        "proxy_cpu_us_per_event": min(cpu, default=None),
        "proxy_peak_rss_mib": max(r.proxy_peak_kib for r in rounds) / 1024 or None,
    }


async def memory_growth(to: Target, streams: int, short: int, long: int) -> dict[str, Any]:
    """`streams` streams of `short` events at once, then as many of `long` events, at full
    speed, through a proxy that has seen only a warm-up: memory a stream kept per event would
    show as the second peak above the first."""
    peaks = []
    errors = set()
    for turn in (f"answer-{short}", f"answer-{long}"):
        with PeakRss(to.pid) as rss:
            errors |= {t.error for t in await run_streams(to, turn, 0, streams) if t.error}
        peaks.append(rss.peak_kib)
    return {
        "mode": to.mode,
        "streams": streams,
        "errors": sorted(errors),
        "peak_short_mib": peaks[0] / 1024,
        "peak_long_mib": peaks[1] / 1024,
    }
