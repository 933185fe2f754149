"""Recording filtered exchanges, so a user who hit a bug can replay it with the current code.

A recording (see recording.py) holds the client's request as it was sent, the upstream response
exactly as received (for an event stream, its chunks as they arrived), what the client finally
got, and what the filter did. Secrets never reach the disk: credentials in headers, cookies and
keys in URLs are replaced before anything is written.
"""

import re
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from mitmproxy import http

from .recording import save_recording

REDACTED = "REDACTED"
SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
    "x-goog-api-key",
    "openai-organization",
    "openai-project",
)
MIN_SECRET_LENGTH = 8
"""Shorter values (a cookie flag, `1`) are not scrubbed from bodies: they match innocent text."""
_SECRET_PARAM = re.compile(r"key|token|secret|signature|sig|auth|password", re.IGNORECASE)


def redact_headers(headers: http.Headers) -> None:
    # One pass over the fields (a lookup per secret name would scan them all each time).
    fields = headers.fields
    if any(name.lower().decode("latin-1") in SECRET_HEADERS for name, _ in fields):
        headers.fields = tuple(
            (name, REDACTED.encode() if name.lower().decode("latin-1") in SECRET_HEADERS else value)
            for name, value in fields
        )


def redact_query(query: str) -> str:
    """`a=1&api_key=sk-…` -> `a=1&api_key=REDACTED`; a query without secrets is kept as is."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_SECRET_PARAM.search(k) for k, _ in pairs):
        return query
    return urlencode([(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs])


def redact_request(request: http.Request) -> None:
    redact_headers(request.headers)
    path, sep, query = request.path.partition("?")
    if sep:
        request.path = f"{path}?{redact_query(query)}"


def secret_values(*requests: http.Request) -> list[str]:
    """The credentials the requests carry (secret header values and their token and cookie
    parts, key-like query values), each once, longest first, for scrubbing from bodies that might
    quote them."""
    values: set[str] = set()
    for request in requests:
        for name in SECRET_HEADERS:
            for value in request.headers.get_all(name):
                values.update((value, *value.split()))  # "Bearer sk-…"
                values.update(part.partition("=")[2] for part in value.split(";"))  # cookies
        values.update(v for k, v in request.query.items(multi=True) if _SECRET_PARAM.search(k))
    kept = {value.strip() for value in values if len(value.strip()) >= MIN_SECRET_LENGTH}
    return sorted(kept, key=len, reverse=True)


def scrub(data: bytes, secrets: list[str]) -> bytes:
    """`data` with every occurrence of each secret replaced."""
    for secret in secrets:
        data = data.replace(secret.encode(), REDACTED.encode())
    return data


def scrub_body(message: http.Message, secrets: list[str]) -> None:
    """Scrub a body as it goes over the wire (a compressed one holds no readable secret)."""
    raw = message.raw_content
    scrubbed = scrub(raw, secrets) if raw else raw
    if scrubbed != raw:
        message.raw_content = scrubbed
        if "content-length" in message.headers:
            message.headers["content-length"] = str(len(scrubbed or b""))


def redacted_url(request: http.Request) -> str:
    """The request's URL, for logs: key-like query parameters replaced."""
    url, sep, query = request.pretty_url.partition("?")
    return f"{url}?{redact_query(query)}" if sep else url


def recording_name(started: float, info: dict[str, Any], flow_id: str) -> str:
    """`20261123-101502-cline-gpt-oss-20b-stream-1a2b3c4d.flow`: findable by time, client and
    model."""
    parts = [
        time.strftime("%Y%m%d-%H%M%S", time.localtime(started)),
        str(info.get("client", "unknown")),
        str(info.get("model", "model")),
        "stream" if info.get("stream") else "json",
        flow_id[:8],
    ]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)) + ".flow"


@dataclass
class Capture:
    """What one flow's recording needs, gathered as the flow goes."""

    client_request: http.Request
    upstream_headers: http.Headers | None = None
    upstream_body: bytes | None = None
    upstream_chunks: list[bytes] = field(default_factory=list)
    upstream_chunk_times: list[float] = field(default_factory=list)
    """Wall-clock arrival time of each upstream chunk."""
    client_chunks: list[bytes] = field(default_factory=list)


class StreamTap:
    """Wraps the stream rewriter to keep what came in and what went out."""

    def __init__(self, inner: Any, capture: Capture) -> None:
        self.inner = inner
        self.capture = capture

    def __call__(self, data: bytes) -> list[bytes]:
        if data:
            self.capture.upstream_chunks.append(data)
            self.capture.upstream_chunk_times.append(time.time())
        out = self.inner(data)
        self.capture.client_chunks.extend(out)
        return out


def write_recording(
    directory: Path, flow: http.HTTPFlow, capture: Capture, info: dict[str, Any]
) -> Path:
    """Save the flow as a recording; returns its path."""
    secrets = secret_values(capture.client_request, flow.request)
    recorded = flow.copy()
    recorded.request = capture.client_request
    redact_request(recorded.request)
    response = flow.response
    metadata: dict[str, Any] = {"source": "recorded by harmony-filter", **info}
    if response is not None:
        client_headers = response.headers.copy()
        redact_headers(client_headers)
        metadata["client_status"] = response.status_code
        metadata["client_headers"] = [[k, v] for k, v in client_headers.items(multi=True)]
        upstream = recorded.response  # flow.copy() copied it
        if capture.upstream_headers is not None:
            upstream.headers = capture.upstream_headers
        redact_headers(upstream.headers)
        if capture.upstream_chunks:
            upstream.content = b"".join(capture.upstream_chunks)
            metadata["upstream_chunks"] = list(capture.upstream_chunks)
            metadata["upstream_chunk_times"] = [
                round(max(0.0, t - response.timestamp_start), 4)
                for t in capture.upstream_chunk_times
            ]
            metadata["client_body"] = b"".join(capture.client_chunks)
        else:
            metadata["client_body"] = response.content
            if capture.upstream_body is not None:
                upstream.content = capture.upstream_body
    _scrub_recording(recorded, metadata, secrets)
    recorded.metadata = {"harmony": metadata}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / recording_name(flow.timestamp_created, info, flow.id)
    partial = path.with_suffix(".partial")
    save_recording(recorded, partial)
    partial.replace(path)  # readers never see half a file
    return path


def _scrub_recording(recorded: http.HTTPFlow, metadata: dict[str, Any], secrets: list[str]) -> None:
    """Credentials anywhere in the bodies: a key in the request body, an upstream error that
    quotes the key it refused."""
    for message in (recorded.request, recorded.response):
        if message is not None:
            scrub_body(message, secrets)
    for key, value in metadata.items():
        if isinstance(value, bytes):
            metadata[key] = scrub(value, secrets)
        elif key == "upstream_chunks":
            metadata[key] = [scrub(chunk, secrets) for chunk in value]
