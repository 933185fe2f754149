"""HarmonyFilter: the mitmproxy glue. Decides which flows are ours, then hands the bodies to the
pure core (request fixes, response rewriting, the stream rewriter)."""

import fnmatch
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

from ..api.chat_completions import OutputStyle
from ..api.chat_completions import completion_as_sse
from ..api.errors import error_message
from ..api.errors import failed_generation
from ..api.errors import openai_error
from ..fixes.clients import detect_client
from ..fixes.reasoning_cache import ReasoningCache
from ..fixes.repairs import request_view
from ..fixes.request_fixes import FixSettings
from ..fixes.request_fixes import fix_request
from ..recordings.recorder import Capture
from ..recordings.recorder import StreamTap
from ..recordings.recorder import redacted_url
from ..recordings.recorder import scrub_body
from ..recordings.recorder import secret_values
from ..recordings.recorder import write_recording
from ..recordings.recording import is_event_stream
from ..rewrite.outcome import Outcome
from ..rewrite.pipeline import RewriteConfig
from ..rewrite.stream_rewriter import StreamRewriter
from ..rewrite.whole_response import rewrite_completion
from .modes import FORWARD_PROXY_MODES
from .modes import is_loopback
from .modes import proxy_modes
from .options import CHOICES
from .options import FIX_OPTIONS
from .options import load_options

logger = logging.getLogger(__name__)

OUTCOME_HEADER = "x-harmony-filter"
META = "harmony"
"""flow.metadata key: what the filter saw and did (serialisable, kept in recordings)."""
STREAMED_TYPES = ("text/event-stream", "application/x-ndjson")
"""Response types that arrive event by event: other flows of these types are passed on as they
come instead of being held until they end."""
STREAM_LARGE_BODIES = "10m"
"""stream_large_bodies when the user set none. mitmproxy holds each body in memory until it
ends; in front of every host (system-proxy mode) that stalls downloads and uploads. Chat
requests and answers stay far below this size: a body over it streams untouched, unfiltered."""


def handled(flow: http.HTTPFlow) -> tuple[dict[str, Any], http.Response, str] | None:
    """For the addons that report on a flow the filter handled, once it has its response: what
    the filter recorded, the response, the outcome."""
    info = flow.metadata.get(META)
    if info is None or flow.response is None:
        return None
    return info, flow.response, str(info.get("outcome", "passthrough"))


def outcome_header(info: dict[str, Any]) -> str:
    """`rewritten; fixes=a,b; repairs=c`: what the filter did, for the client to see."""
    parts = [str(info.get("outcome", "passthrough"))]
    for key in ("fixes", "repairs"):
        if info.get(key):
            parts.append(f"{key}={','.join(info[key])}")
    return "; ".join(parts)


def is_chat_request(method: str, path: str) -> bool:
    return method == "POST" and path.split("?", 1)[0].rstrip("/").endswith("/chat/completions")


def parse_json_object(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class HarmonyFilter:
    """Rewrites gpt-oss chat completions (Harmony markup, reasoning fields, tool calls) into the
    clean OpenAI shape clients expect; everything else passes untouched."""

    def __init__(self) -> None:
        self.models = re.compile(r"gpt[-_]?oss", re.IGNORECASE)
        self.style = OutputStyle()
        self.fix_settings = FixSettings()
        self.reasoning_cache = ReasoningCache()
        self._configs: dict[str, RewriteConfig] = {}  # per flow id, from request to response
        self._streams: dict[str, StreamRewriter] = {}
        self._captures: dict[str, Capture] = {}  # flows being recorded
        self._listening = False  # running: listen addresses settled, worth checking

    def load(self, loader: Any) -> None:
        load_options(loader)

    def configure(self, updated: set[str]) -> None:
        if "harmony_models" in updated:
            try:
                self.models = re.compile(ctx.options.harmony_models, re.IGNORECASE)
            except re.error as e:
                raise exceptions.OptionsError(f"Invalid harmony_models pattern: {e}") from e
        for name, allowed in CHOICES.items():
            if name in updated and getattr(ctx.options, name) not in allowed:
                raise exceptions.OptionsError(f"{name} must be one of: {', '.join(allowed)}")
        if updated & {"harmony_reasoning", "harmony_tools"}:
            self.style = OutputStyle(ctx.options.harmony_reasoning, ctx.options.harmony_tools)
        if updated & FIX_OPTIONS:
            try:
                self.fix_settings = FixSettings.from_options(ctx.options)
            except ValueError as e:
                raise exceptions.OptionsError(f"Invalid request-fix option: {e}") from e
        if "stream_large_bodies" in updated:
            self._default_stream_large_bodies()
        if self._listening and updated & {"mode", "listen_host", "proxyauth", "server"}:
            self._warn_if_open_proxy()

    def running(self) -> None:
        # Not before: an addon loaded ahead of this one (Loopback) may still move listen_host.
        self._listening = True
        self._warn_if_open_proxy()

    @staticmethod
    def _default_stream_large_bodies() -> None:
        """Unset (mitmproxy's default: buffer every body whole), it becomes STREAM_LARGE_BODIES;
        a value the user set stays."""
        if "stream_large_bodies" in ctx.options and ctx.options.stream_large_bodies is None:
            ctx.options.update(stream_large_bodies=STREAM_LARGE_BODIES)
            logger.info(
                "harmony-filter: bodies over %s stream through untouched (stream_large_bodies)",
                STREAM_LARGE_BODIES,
            )

    @staticmethod
    def _warn_if_open_proxy() -> None:
        """A forward proxy that other machines reach and that asks for no password relays anyone's
        traffic, and reads it once they trust its CA. (No proxyauth option: no proxy server.)"""
        if not ctx.options.server or "proxyauth" not in ctx.options or ctx.options.proxyauth:
            return
        for mode in proxy_modes():
            host = mode.listen_host(ctx.options.listen_host)
            if mode.type_name in FORWARD_PROXY_MODES and not is_loopback(host):
                logger.warning(
                    "harmony-filter: warning: the %s proxy listens on %s without proxyauth: "
                    "anyone who reaches it can use it. Listen on 127.0.0.1 (--listen-host) or "
                    "require a password (--set proxyauth=USER:PASS).",
                    mode.type_name,
                    host or "every interface",
                )

    # -- hooks ----------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        # A flow read from a file (-r) arrives with its response: still ours to rewrite.
        if flow.error or (flow.response and flow.live) or not self._is_ours(flow):
            return
        if flow.request.stream:
            logger.warning(
                "harmony-filter: %s: request body larger than stream_large_bodies was streamed "
                "upstream; passing through unfiltered",
                redacted_url(flow.request),
            )
            return
        body = parse_json_object(flow.request.get_content(strict=False))
        if body is None:
            logger.warning(
                "harmony-filter: %s: request body is not a JSON object; passing through",
                redacted_url(flow.request),
            )
            return
        model = body.get("model")
        if not isinstance(model, str) or not self.models.search(model):
            return
        client = detect_client(flow.request.headers.items(multi=True), body)
        info = flow.metadata[META] = {
            "model": model,
            "client": client,
            "stream": body.get("stream") is True,
        }
        if ctx.options.harmony_record_dir:
            self._captures[flow.id] = Capture(flow.request.copy())  # as the client sent it
        fixed = fix_request(body, client, self.fix_settings, self.reasoning_cache)
        if fixed.applied and flow.live:
            # UTF-8, as JSON must be; no debug line: mitmproxy runs a hook per log record,
            # filtered or not, and the request's report line names the fixes.
            flow.request.content = json.dumps(fixed.body, ensure_ascii=False).encode()
            info["fixes"] = fixed.applied
        view = request_view(
            body,
            client,
            wrap_completion=ctx.options.harmony_wrap_completion,
            calls_forbidden=fixed.drop_tool_calls,
            stops=tuple(fixed.client_stops),
        )
        self._configs[flow.id] = RewriteConfig(
            self.style,
            view,
            ctx.options.harmony_builtin_tools,
            ctx.options.harmony_no_final_timeout,
        )
        if flow.live:
            # Compressed SSE cannot be rewritten chunk by chunk; the hop is local anyway.
            flow.request.headers["accept-encoding"] = "identity"

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(META)
        response = flow.response
        if response is None:
            return
        if info is None:
            if not response.stream and _arrives_in_parts(response):
                response.stream = True  # not ours: each event on as it comes, unchanged
            return
        capture = self._captures.get(flow.id)
        if capture is not None:
            capture.upstream_headers = response.headers.copy()
        if response.status_code != 200 or not is_event_stream(response):
            return
        if response.headers.get("content-encoding", "identity") != "identity":
            logger.warning(
                "harmony-filter: %s: compressed event stream; passing through",
                redacted_url(flow.request),
            )
            info["outcome"] = "passthrough"
            response.stream = True
            return
        response.headers.pop("content-length", None)
        # Sent before the body: what is known now (repairs are in the log and the metadata).
        response.headers[OUTCOME_HEADER] = outcome_header(info | {"outcome": "rewritten"})
        rewriter = StreamRewriter(self._config(flow))
        self._streams[flow.id] = rewriter
        response.stream = StreamTap(rewriter, capture) if capture is not None else rewriter

    def response(self, flow: http.HTTPFlow) -> None:
        info = flow.metadata.get(META)
        response = flow.response
        rewriter = self._streams.pop(flow.id, None)
        config = self._configs.pop(flow.id, None) or RewriteConfig(self.style)
        capture = self._captures.pop(flow.id, None)
        if info is None or response is None:
            return
        if capture is not None and not capture.upstream_chunks:
            capture.upstream_body = response.get_content(strict=False)
        self._rewrite(flow, info, config, rewriter)
        if not callable(response.stream):
            response.headers[OUTCOME_HEADER] = outcome_header(info)
        if capture is not None:
            self._save(flow, capture, info)

    def _rewrite(
        self,
        flow: http.HTTPFlow,
        info: dict[str, Any],
        config: RewriteConfig,
        rewriter: StreamRewriter | None,
    ) -> None:
        response = flow.response
        assert response is not None
        if response.status_code != 200:
            self._on_upstream_error(flow, info, config)
            return
        if rewriter is not None and rewriter.calls:
            self._record(flow, info, rewriter.outcome, rewriter.warnings)
        elif is_event_stream(response):
            self._rewrite_sse_body(flow, info, config)
        else:
            self._rewrite_json_body(flow, info, config)

    def error(self, flow: http.HTTPFlow) -> None:
        rewriter = self._streams.pop(flow.id, None)
        self._configs.pop(flow.id, None)
        capture = self._captures.pop(flow.id, None)
        info = flow.metadata.get(META)
        if info is not None and rewriter is not None and rewriter.calls:
            # What the client got so far. The openai SDKs close the connection as soon as they
            # read [DONE], often before the upstream's end of body reaches us: then the answer
            # was complete, and only this hook runs.
            self._record(flow, info, rewriter.outcome, rewriter.warnings)
        if capture is not None and info is not None and flow.response is not None:
            info["error"] = str(flow.error)
            self._save(flow, capture, info)  # a stream cut short is worth replaying too

    # -- helpers --------------------------------------------------------------------------

    def _is_ours(self, flow: http.HTTPFlow) -> bool:
        request = flow.request
        if not is_chat_request(request.method, request.path):
            return False
        hosts = ctx.options.harmony_hosts
        return not hosts or any(fnmatch.fnmatch(request.pretty_host, h) for h in hosts)

    @staticmethod
    def _save(flow: http.HTTPFlow, capture: Capture, info: dict[str, Any]) -> None:
        try:
            path = write_recording(Path(ctx.options.harmony_record_dir), flow, capture, info)
        except (OSError, ValueError) as e:
            logger.warning("harmony-filter: cannot save the recording: %s", e)
            return
        info["recording"] = path.name

    def _config(self, flow: http.HTTPFlow) -> RewriteConfig:
        return self._configs.get(flow.id) or RewriteConfig(self.style)

    def _rewrite_json_body(
        self, flow: http.HTTPFlow, info: dict[str, Any], config: RewriteConfig
    ) -> None:
        assert flow.response
        raw = flow.response.get_content(strict=False) or b""
        try:
            body = json.loads(raw)
        except ValueError:
            self._not_json(flow, info, raw)
            return
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            logger.warning(
                "harmony-filter: %s: response is not a chat completion; passing through",
                redacted_url(flow.request),
            )
            info["outcome"] = "passthrough"
            return
        outcome = rewrite_completion(body, config)
        flow.response.text = json.dumps(body, ensure_ascii=False)
        self._record(flow, info, outcome, [])

    @staticmethod
    def _not_json(flow: http.HTTPFlow, info: dict[str, Any], raw: bytes) -> None:
        """A 200 answer that is not JSON (cut short, an HTML page) is of no use to the client;
        an OpenAI error that says so is."""
        assert flow.response
        logger.warning(
            "harmony-filter: %s: the upstream's answer is not JSON (cut short?); answering 502",
            redacted_url(flow.request),
        )
        info["outcome"] = "upstream-error"
        start = raw[:200].decode(errors="replace")
        error = openai_error(f"harmony-filter: the upstream's answer is not JSON: {start!r}", 502)
        flow.response.status_code = 502
        flow.response.reason = "Bad Gateway"
        flow.response.headers["content-type"] = "application/json"
        flow.response.text = json.dumps(error)

    def _rewrite_sse_body(
        self, flow: http.HTTPFlow, info: dict[str, Any], config: RewriteConfig
    ) -> None:
        """A whole event stream in hand: a flow read from a file, or a server-replayed one
        (mitmproxy does not call stream callables there)."""
        assert flow.response
        raw = flow.response.raw_content
        if not raw or flow.response.headers.get("content-encoding", "identity") != "identity":
            return
        rewriter = StreamRewriter(config)
        flow.response.content = b"".join(rewriter(raw) + rewriter(b""))
        self._record(flow, info, rewriter.outcome, rewriter.warnings)

    def _on_upstream_error(
        self, flow: http.HTTPFlow, info: dict[str, Any], config: RewriteConfig
    ) -> None:
        """A tool-parse error that carries the model's text may be a good answer after all;
        any other error reaches the client in OpenAI's error format."""
        assert flow.response
        body = flow.response.get_content(strict=False) or b""  # as sent, if it does not decode
        generation = failed_generation(body)
        if generation is not None:
            completion = {
                "id": f"chatcmpl-{flow.id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": info["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "message": {"role": "assistant", "content": generation},
                    }
                ],
            }
            outcome = rewrite_completion(completion, config)
            if outcome.tool_call_ids:  # the call the upstream failed on, made good
                logger.info(
                    "harmony-filter: recovered an answer from an upstream %d error",
                    flow.response.status_code,
                )
                outcome.add_repairs(["upstream-error-recovered"])
                self._answer(flow, completion, info["stream"])
                self._record(flow, info, outcome, [])
                return
        info["outcome"] = "upstream-error"
        message = error_message(body, f"{flow.response.status_code} {flow.response.reason}")
        if message is not None:
            error = openai_error(message, flow.response.status_code)
            flow.response.text = json.dumps(error)
            flow.response.headers["content-type"] = "application/json"
        # An upstream may quote the key it refused; clients log error messages.
        scrub_body(flow.response, secret_values(flow.request))

    @staticmethod
    def _answer(flow: http.HTTPFlow, completion: dict[str, Any], stream: bool) -> None:
        assert flow.response
        flow.response.status_code = 200
        flow.response.reason = "OK"
        if stream:
            flow.response.headers["content-type"] = "text/event-stream"
            flow.response.content = completion_as_sse(completion)
        else:
            flow.response.headers["content-type"] = "application/json"
            flow.response.text = json.dumps(completion, ensure_ascii=False)

    def _record(
        self, flow: http.HTTPFlow, info: dict[str, Any], outcome: Outcome, warnings: list[str]
    ) -> None:
        if outcome.tool_call_ids and (reasoning := outcome.reasoning):
            # Clients drop this reasoning when they send the tool results back; we put it back.
            self.reasoning_cache.remember(outcome.tool_call_ids, reasoning)
        info.update(outcome.summary())
        info["outcome"] = "rewritten"
        if outcome.first_output_at is not None and flow.live:
            # (A loaded or replayed flow's request time is from the recording, not from now.)
            info["ttfc_ms"] = round(
                (outcome.first_output_at - flow.request.timestamp_start) * 1e3, 1
            )
        if warnings:
            info["warnings"] = list(warnings)


def _arrives_in_parts(response: http.Response) -> bool:
    content_type = response.headers.get("content-type", "").lower()
    return any(kind in content_type for kind in STREAMED_TYPES)
