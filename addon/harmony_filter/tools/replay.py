"""Replay a recording through the filter offline, with the current code.

The real addon runs hook by hook as mitmproxy drives a live flow: request, responseheaders, the
upstream's recorded chunks through the stream callable (then b"") or the response hook for a
JSON body. The test suite, `./run.sh replay` and `./run.sh record-expectations` use this.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from ..proxy.addon import META
from ..proxy.addon import HarmonyFilter
from ..recordings.recording import is_event_stream
from ..recordings.recording import upstream_chunks


@dataclass(frozen=True)
class Replayed:
    status: int
    body: bytes
    """What the client receives."""
    event_stream: bool
    info: dict[str, Any]
    """What the filter saw and did (flow.metadata["harmony"])."""
    log: list[str] = field(default_factory=list)
    """What the filter logged (warnings and worse)."""


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextmanager
def _mitmproxy_context(addon: HarmonyFilter) -> Iterator[taddons.context]:
    """taddons.context, minus the log handler it leaves on the root logger: outside pytest that
    handler outlives the event loop it posts to, and the next replay's log call would raise."""
    with taddons.context(addon) as tctx:
        try:
            yield tctx
        finally:
            tctx.master._legacy_log_events.uninstall()


def replay_flow(recorded: http.HTTPFlow, **options: Any) -> Replayed:
    """Run one recording through a fresh HarmonyFilter; `options` set addon options."""
    assert recorded.response
    addon = HarmonyFilter()
    collector = _Collector()
    logger = logging.getLogger(__package__)
    logger.addHandler(collector)
    try:
        flow, body = _replay(addon, recorded, options)
    finally:
        logger.removeHandler(collector)
    assert flow.response
    return Replayed(
        flow.response.status_code,
        body,
        is_event_stream(flow.response),
        dict(flow.metadata.get(META, {})),
        collector.lines,
    )


def _replay(
    addon: HarmonyFilter, recorded: http.HTTPFlow, options: dict[str, Any]
) -> tuple[http.HTTPFlow, bytes]:
    """The flow as the filter left it, and the body the client receives."""
    assert recorded.response
    with _mitmproxy_context(addon) as tctx:
        if options:
            tctx.configure(addon, **options)
        flow = tflow.tflow(req=recorded.request.copy(), live=True)
        addon.request(flow)
        flow.response = recorded.response.copy()
        flow.response.data.content = None  # at responseheaders the body is not read yet
        addon.responseheaders(flow)
        stream = flow.response.stream
        if callable(stream):
            sent: list[bytes] = []
            for chunk in [*upstream_chunks(recorded), b""]:
                out = stream(chunk)
                pieces = [out] if isinstance(out, bytes) else list(out)
                # An empty piece before the end would end an HTTP/1 body.
                if chunk and not all(pieces):
                    raise AssertionError(f"empty piece returned for {chunk!r}")
                sent += pieces
            body = b"".join(sent)
        elif stream:
            body = b"".join(upstream_chunks(recorded))
        else:
            flow.response.content = recorded.response.content  # mitmproxy buffered it
        addon.response(flow)
        if not stream:
            body = flow.response.content or b""
    return flow, body
