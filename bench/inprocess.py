"""In-process measurements: the Harmony decoder next to openai-harmony's StreamableParser on the
same text, the whole stream rewriter (what the addon runs per event) on the same turn as SSE, and
the memory one stream's rewriter holds as the stream gets longer."""

import gc
import io
import sys
import time
from collections.abc import Callable
from types import BuiltinFunctionType
from types import CodeType
from types import FunctionType
from types import MethodType
from types import ModuleType
from typing import Any

from upstream import sse_events
from workload import Tokenizer
from workload import Turn
from workload import answer_turn

from harmony_filter.harmony.decoder import HarmonyDecoder
from harmony_filter.rewrite.pipeline import RewriteConfig
from harmony_filter.rewrite.stream_rewriter import StreamRewriter

HELD_ANALYSIS_SHARE = 0.5
"""The held-memory turn reasons long enough to pass the reasoning the filter keeps (64 KiB)."""
HELD_CHECKPOINTS = 4


def measure(tokenizer: Tokenizer, tokens: int, seconds: float, held_tokens: int) -> dict[str, Any]:
    turn = answer_turn(tokenizer, tokens)
    size = len(turn.text.encode())
    events = [*sse_events(turn.pieces), b"data: [DONE]\n\n"]
    token_ids = [token for ids in turn.token_ids for token in ids]

    def throughput(work: Callable[[], object]) -> dict[str, float]:
        best = _best_seconds(work, seconds)
        return {"mb_per_s": size / best / 1e6, "us_per_token": best / len(turn.pieces) * 1e6}

    def decoder() -> None:
        harmony = HarmonyDecoder()
        for piece in turn.pieces:
            harmony.feed(piece)
        harmony.close()

    def parser() -> None:
        from openai_harmony import Role
        from openai_harmony import StreamableParser

        streamable = StreamableParser(tokenizer.encoding, Role.ASSISTANT)
        for token in token_ids:
            streamable.process(token)
        streamable.process_eos()

    def rewriter() -> None:
        stream = StreamRewriter(RewriteConfig())
        for event in events:
            stream(event)
        stream(b"")

    return {
        "tokens": len(turn.pieces),
        "text_mb": size / 1e6,
        "harmony_decoder": throughput(decoder),
        "streamable_parser": throughput(parser),
        "stream_rewriter": throughput(rewriter),
        "held": held_memory(answer_turn(tokenizer, held_tokens, HELD_ANALYSIS_SHARE)),
    }


def _best_seconds(work: Callable[[], object], budget: float) -> float:
    """The fastest of the runs of `work` in `budget` seconds (at least three)."""
    best = float("inf")
    deadline = time.perf_counter() + budget
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
        runs += 1
    return best


def held_memory(turn: Turn) -> list[dict[str, int]]:
    """Bytes reachable from one stream's rewriter at even steps through the turn: exactly what
    the stream holds, unlike a process's RSS (or tracemalloc, which counts free lists)."""
    events = sse_events(turn.pieces)
    marks = {len(events) * step // HELD_CHECKPOINTS for step in range(1, HELD_CHECKPOINTS + 1)}
    rewriter = StreamRewriter(RewriteConfig())
    points = []
    for position, event in enumerate(events, 1):
        rewriter(event)
        if position in marks:
            points.append({"events": position, "bytes": reachable_bytes(rewriter)})
    return points


_SHARED = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, CodeType)


def reachable_bytes(root: object) -> int:
    """sys.getsizeof summed over everything `root` references, directly or not (classes,
    modules and functions are shared by all streams: neither counted nor followed)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, io.StringIO):  # its buffer is neither in its size nor a referent
            total += sys.getsizeof(obj.getvalue())
        stack.extend(gc.get_referents(obj))
    return total
