"""Report: one aligned line per filtered request on the proxy's output (mitmproxy's log), so an
operator sees at a glance who asked what, how fast the answer came and what the filter did."""

import logging
from typing import Any

from mitmproxy import http
from mitmproxy.utils.strutils import escape_control_characters

from ..proxy.addon import META
from ..proxy.addon import handled

logger = logging.getLogger(__name__)

_LISTS = ("fixes", "repairs", "recoveries", "warnings")


def report_line(info: dict[str, Any], outcome: str, duration_s: float | None) -> str:
    """`cline  gpt-oss-20b  stream  ttfc 0.41s  took 1.23s  tokens 128  tools 1  rewritten  …`"""
    ttfc = info.get("ttfc_ms")
    tokens = info.get("completion_tokens")
    parts = [
        f"{info.get('client', 'unknown'):<12}",
        f"{info.get('model', '?'):<16}",
        "stream" if info.get("stream") else "json  ",
        f"ttfc {_seconds(None if ttfc is None else ttfc / 1e3)}",
        f"took {_seconds(duration_s)}",
        f"tokens {'-' if tokens is None else tokens:>5}",
        f"tools {info.get('tool_calls') or 0}",
        outcome,
    ]
    parts += [f"{key}={','.join(info[key])}" for key in _LISTS if info.get(key)]
    # The model name comes from the client: no terminal escapes from it.
    return "harmony-filter: " + escape_control_characters("  ".join(parts))


def _seconds(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:6.2f}s"


class Report:
    """Logs the report line at INFO when a filtered flow ends, with or without a response.
    Must come after HarmonyFilter."""

    def response(self, flow: http.HTTPFlow) -> None:
        found = handled(flow)
        if found is None:
            return
        info, response, outcome = found
        if outcome == "upstream-error":
            outcome += f" {response.status_code}"
        duration = (
            None
            if response.timestamp_end is None
            else response.timestamp_end - flow.request.timestamp_start
        )
        self._log(flow, report_line(info, outcome, duration))

    def error(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(META)
        if info is None or flow.error is None:
            return
        # A stream the client closed after [DONE] ends here too, with the filter's outcome.
        outcome = f"{info.get('outcome', 'error')} ({flow.error})"
        duration = flow.error.timestamp - flow.request.timestamp_start
        self._log(flow, report_line(info, outcome, duration))

    @staticmethod
    def _log(flow: http.HTTPFlow, line: str) -> None:
        # mitmproxy's log formatter shows `client` as the address in brackets.
        logger.info(line, extra={"client": flow.client_conn.peername})
