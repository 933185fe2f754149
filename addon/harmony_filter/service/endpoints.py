"""Endpoints: the proxy answers health checks, readiness probes and Prometheus scrapes itself, on
a reserved path prefix, so it can be run and watched like any other service."""

import asyncio
import json
import logging
import os
import time
from typing import Any

from mitmproxy import ctx
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.proxy.mode_specs import UpstreamMode
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest

from .. import __version__
from ..api.errors import openai_error
from ..proxy.modes import proxy_modes

PREFIX = "/harmony-filter/"
READY_TIMEOUT = 1.0
"""Seconds the upstream gets to accept a TCP connection before we report not ready (probes such
as Kubernetes' wait 1 s by default)."""

logger = logging.getLogger(__name__)


class Endpoints:
    """Answers `GET /harmony-filter/{health,ready,metrics}` on any host without an upstream call.
    Must come first among the addons, so nothing else sees these requests."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.started = time.monotonic()

    def configure(self, updated: set[str]) -> None:
        # In front of one upstream, mitmproxy's default (eager) connects to it as soon as a client
        # connects, and drops the client when that fails: the endpoints could not answer while
        # the upstream is down, and every health check would cost an upstream connection.
        if (
            updated & {"mode", "connection_strategy"}
            and "connection_strategy" in ctx.options  # no proxy server, as in tests: no option
            and ctx.options.connection_strategy == "eager"
            and any(isinstance(mode, ReverseMode | UpstreamMode) for mode in proxy_modes())
        ):
            ctx.options.connection_strategy = "lazy"
            logger.debug("harmony-filter: connection_strategy set to lazy for the endpoints")

    async def request(self, flow: http.HTTPFlow) -> None:
        path = flow.request.path.split("?", 1)[0]
        if flow.response is not None or not path.startswith(PREFIX):
            return
        name = path.removeprefix(PREFIX).rstrip("/")
        if flow.request.method != "GET":
            flow.response = _error(405, f"{path} only answers GET")
        elif name == "health":
            flow.response = _json(200, self.health())
        elif name == "ready":
            flow.response = await ready(flow)
        elif name == "metrics":
            flow.response = http.Response.make(
                200, generate_latest(self.registry), {"content-type": CONTENT_TYPE_LATEST}
            )
        else:
            flow.response = _error(404, f"Unknown endpoint {path}: try health, ready or metrics")

    def health(self) -> dict[str, Any]:
        options = {
            name: getattr(ctx.options, name)
            for name in sorted(ctx.options.keys())
            if name.startswith("harmony_")
        }
        return {
            "status": "ok",
            "version": __version__,
            "options": options,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }


async def ready(flow: http.HTTPFlow) -> http.Response:
    """Ready when the upstream (reverse mode) or upstream proxy (upstream mode) of the listener
    this request came in on accepts a TCP connection; a regular, transparent or system proxy has
    no single upstream, so it is ready as soon as it runs."""
    mode = flow.client_conn.proxy_mode
    if not isinstance(mode, ReverseMode | UpstreamMode):
        return _json(200, {"ready": True, "upstream": None})
    host, port = mode.address
    upstream = f"{mode.scheme}://{host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), READY_TIMEOUT)
    except TimeoutError:
        reason = f"no connection within {READY_TIMEOUT:g} s"
        return _json(503, {"ready": False, "upstream": upstream, "error": reason})
    except OSError as e:
        # asyncio's message for a refused connection hides the reason; errno still has it
        reason = os.strerror(e.errno) if e.errno and e.errno > 0 else str(e)
        return _json(503, {"ready": False, "upstream": upstream, "error": reason})
    writer.close()
    return _json(200, {"ready": True, "upstream": upstream})


def _json(status: int, body: dict[str, Any]) -> http.Response:
    return http.Response.make(status, json.dumps(body), {"content-type": "application/json"})


def _error(status: int, message: str) -> http.Response:
    return _json(status, openai_error(message, status, kind="invalid_request_error"))
