"""Redact: once a request has gone upstream, its credentials are no longer needed in the flow
mitmproxy keeps, where they would show in flow dumps, saved flows and mitmweb."""

from typing import Any

from mitmproxy import ctx
from mitmproxy import http

from ..recordings.recorder import redact_request


class Redact:
    """Replaces API keys (authorization, x-api-key, api-key, cookies, key-like query parameters)
    in each flow's request when the flow ends: after our other addons, before mitmproxy's own
    dumper (`flow_detail`), `-w` saving and mitmweb see it. The response is left alone: it may
    not have reached the client yet. Must come last among the addons."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            "harmony_redact",
            bool,
            True,
            "Replace the credentials in every request with REDACTED once it has gone upstream, so "
            "mitmproxy's flow output (any flow_detail), saved flows and mitmweb never show them. "
            "Turn off to debug authentication.",
        )

    def response(self, flow: http.HTTPFlow) -> None:
        if ctx.options.harmony_redact:
            redact_request(flow.request)

    def error(self, flow: http.HTTPFlow) -> None:
        if ctx.options.harmony_redact:
            redact_request(flow.request)
