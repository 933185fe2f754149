"""Replay a recording through the filter offline, with the current code.

The real addon runs hook by hook as mitmproxy drives a live flow: request, responseheaders, the
upstream's recorded chunks through the stream callable (then b"") or the response hook for a
JSON body. The test suite and `./run.sh replay` both use this.
"""

from dataclasses import dataclass
from typing import Any

from mitmproxy import http
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from .addon import META
from .addon import HarmonyFilter
from .recording import is_event_stream
from .recording import upstream_chunks


@dataclass(frozen=True)
class Replayed:
    status: int
    body: bytes
    """What the client receives."""
    event_stream: bool
    info: dict[str, Any]
    """What the filter saw and did (flow.metadata["harmony"])."""


def replay_flow(recorded: http.HTTPFlow, **options: Any) -> Replayed:
    """Run one recording through a fresh HarmonyFilter; `options` set addon options."""
    assert recorded.response
    addon = HarmonyFilter()
    with taddons.context(addon) as tctx:
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
    return Replayed(
        flow.response.status_code,
        body,
        is_event_stream(flow.response),
        dict(flow.metadata.get(META, {})),
    )
