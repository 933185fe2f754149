"""Load: concurrent streams through one mitmdump with the addon, each with its own marker. Every
client gets exactly its own stream, complete and in order, and afterwards the addon holds no
per-flow state and its caches are within their bounds. (`./run.sh bench --load` runs 100.)"""

import asyncio
import json
import time
from typing import Any

import openai
import pytest
from faulty_upstream import REASONING
from faulty_upstream import TOOL_PIECES
from faulty_upstream import FaultyUpstream
from faulty_upstream import answer_text
from faulty_upstream import stream_events
from mitmproxy import flow as mitmflow
from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from state_probe import ProbedProxy
from state_probe import flow_tables
from state_probe import is_idle

from harmony_filter.fixes.reasoning_cache import ReasoningCache
from harmony_filter.proxy.addon import HarmonyFilter
from harmony_filter.rewrite.outcome import REASONING_KEEP_LIMIT
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter
from harmony_filter.tools.judge import accumulate
from harmony_filter.tools.judge import normalise

STREAMS = 20
"""Concurrent answer streams (and a tool-call stream for every fourth)."""
NUMBERS = 60
"""Content events per answer stream: `<marker> 0 1 … 59.`"""
PACE = 0.01
"""Seconds between upstream events: each stream lasts long enough for all to overlap."""
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


async def one_stream(client: openai.AsyncOpenAI, marker: str, tool: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"tools": TOOLS} if tool else {}
    headers = {"x-fault": "tool" if tool else "ok", "x-numbers": str(NUMBERS), "x-pace": str(PACE)}
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="gpt-oss-20b",
        stream=True,
        messages=[{"role": "user", "content": marker}],
        extra_headers=headers,
        **kwargs,
    )
    got = normalise(*accumulate([chunk.model_dump() async for chunk in stream]))
    return got | {"started": started, "ended": time.monotonic()}


async def run_streams(base_url: str) -> list[dict[str, Any]]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
        return await asyncio.gather(
            *(one_stream(client, f"stream-{n:02d}", tool=n % 4 == 3) for n in range(STREAMS))
        )


def test_concurrent_streams_each_get_their_own_answer_whole_and_in_order(
    proxy: ProbedProxy, upstream: tuple[str, FaultyUpstream], capsys: pytest.CaptureFixture
) -> None:
    began = time.monotonic()
    results = asyncio.run(run_streams(proxy.base_url))
    took = time.monotonic() - began

    assert max(r["started"] for r in results) < min(r["ended"] for r in results), "no overlap"
    tool_calls = 0
    for n, got in enumerate(results):
        assert got["reasoning"] == REASONING, n
        if n % 4 == 3:
            assert got["content"] is None and got["finish_reason"] == "tool_calls"
            assert got["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
            tool_calls += 1
        else:
            assert got["content"] == answer_text(f"stream-{n:02d}", NUMBERS), n
            assert got["finish_reason"] == "stop" and got["tool_calls"] == []
    assert len(upstream[1].exchanges) == STREAMS
    delivered = sum(len(((r["content"] or "") + r["reasoning"]).encode()) for r in results)
    with capsys.disabled():
        print(
            f"\nload: {STREAMS} concurrent streams held for {took:.1f} s, "
            f"{delivered} bytes of answers delivered, 0 lost"
        )

    state = proxy.settled_state()
    assert is_idle(state), state
    # Every tool call's reasoning is kept for re-injection, within the cache's bound.
    assert state["reasoning_cache"] == tool_calls <= state["reasoning_cache_bound"]


# -- bounds, in process ------------------------------------------------------------------


def test_the_reasoning_cache_stays_within_its_bound_under_many_entries() -> None:
    cache = ReasoningCache()
    for n in range(20 * cache.max_entries):
        cache.remember([f"call_{n}"], f"reasoning {n}")
        assert len(cache) <= cache.max_entries
    last = 20 * cache.max_entries - 1
    assert cache.recall(f"call_{last}") == f"reasoning {last}"
    assert cache.recall(f"call_{last - cache.max_entries}") is None  # evicted


def test_a_long_reasoning_is_kept_only_up_to_its_limit() -> None:
    """One huge reasoning delta must not make a huge cache entry."""
    rewriter = StreamRewriter(RewriteConfig())
    long_reasoning = "<|channel|>analysis<|message|>" + "why " * REASONING_KEEP_LIMIT
    body = b"".join(stream_events([long_reasoning, *TOOL_PIECES[5:]]))
    rewriter(body)
    rewriter(b"")
    assert rewriter.outcome.tool_call_ids
    assert 0 < len(rewriter.outcome.reasoning) <= REASONING_KEEP_LIMIT


def test_many_flows_through_the_hooks_leave_nothing_behind_but_the_bounded_cache() -> None:
    addon = HarmonyFilter()
    addon.reasoning_cache = ReasoningCache(max_entries=8)
    body = b"".join(stream_events(TOOL_PIECES))
    with taddons.context(addon):
        for n in range(50):
            request = {"model": "gpt-oss-20b", "stream": True, "messages": [], "tools": TOOLS}
            flow = tflow.tflow(
                req=http.Request.make(
                    "POST", "http://127.0.0.1:8000/v1/chat/completions", json.dumps(request)
                )
            )
            addon.request(flow)
            flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
            addon.responseheaders(flow)
            assert callable(flow.response.stream)
            out = flow.response.stream(body) + flow.response.stream(b"")
            assert b"get_weather" in b"".join(out)
            if n % 2:
                addon.response(flow)
            else:
                flow.error = mitmflow.Error("Client disconnected.")
                addon.error(flow)
    assert len(addon.reasoning_cache) == 8
    tables = flow_tables(addon)
    assert not any(tables.values()), tables
