"""Metrics: Prometheus counters and histograms of what the filter did, read from the record
HarmonyFilter leaves in flow.metadata, and served by the Endpoints addon."""

from typing import Any

from mitmproxy import http
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram

from ..proxy.addon import META
from ..proxy.addon import handled

OTHER = "other"
MODEL_LABEL_LIMIT = 50
NAME_LABEL_LIMIT = 100
TTFC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class CappedLabel:
    """Keeps a free-text label (model names come from the client) to a bounded set of values:
    past `limit` distinct values, new ones are reported as "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value)
        if text not in self.seen:
            if len(self.seen) >= self.limit:
                return OTHER
            self.seen.add(text)
        return text


class Metrics:
    """Counts every filtered request in its own registry (not prometheus_client's global one, so
    several instances, as in tests, never clash). Must come after HarmonyFilter."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.model = CappedLabel(MODEL_LABEL_LIMIT)
        self.name = CappedLabel(NAME_LABEL_LIMIT)
        self.requests = Counter(
            "harmony_filter_requests",
            "Filtered chat completions, by client, model, outcome and streaming; outcome "
            '"error" when the flow failed before the filter could act (upstream unreachable).',
            ["client", "model", "outcome", "stream"],
            registry=self.registry,
        )
        self.fixes = self._named_counter("fixes", "Request fixes applied, by rule name.")
        self.repairs = self._named_counter("repairs", "Response repairs made, by name.")
        self.recoveries = self._named_counter(
            "recoveries", "Broken Harmony markup the decoder worked around, by name."
        )
        self.warnings = self._named_counter(
            "stream_warnings",
            "Streams the filter could not handle as usual, by name (no-final-timeout, "
            "internal-error-passthrough, …).",
        )
        self.tool_calls = Counter(
            "harmony_filter_tool_calls",
            "Tool calls sent to clients.",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "harmony_filter_upstream_errors",
            "Error responses from the upstream, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.flow_errors = Counter(
            "harmony_filter_flow_errors",
            "Filtered flows that ended in an error (upstream unreachable or cut off, client gone, "
            "also after a complete stream), by whether the response had begun.",
            ["phase"],
            registry=self.registry,
        )
        self.ttfc = Histogram(
            "harmony_filter_time_to_first_content_seconds",
            "From the client's request to the first content or tool call sent back.",
            buckets=TTFC_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "harmony_filter_request_duration_seconds",
            "From the client's request to the end of the response (or of the connection).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def _named_counter(self, what: str, description: str) -> Counter:
        return Counter(f"harmony_filter_{what}", description, ["name"], registry=self.registry)

    def response(self, flow: http.HTTPFlow) -> None:
        found = handled(flow)
        if found is None:
            return
        info, response, outcome = found
        self._count(info, outcome)
        if outcome == "upstream-error":
            self.upstream_errors.labels(status=str(response.status_code)).inc()
        self._observe(flow, info, response.timestamp_end)

    def error(self, flow: http.HTTPFlow) -> None:
        """A flow that failed, or a stream the client closed: the openai SDKs close it once they
        have read [DONE], often before the upstream's end of body reaches the proxy. When the
        stream went through the filter, its outcome is what the filter recorded."""
        info = flow.metadata.get(META)
        if info is None or flow.error is None:
            return
        self._count(info, str(info.get("outcome", "error")))
        phase = "before-response" if flow.response is None else "during-response"
        self.flow_errors.labels(phase=phase).inc()
        if flow.response is not None:
            self._observe(flow, info, flow.error.timestamp)

    def _observe(self, flow: http.HTTPFlow, info: dict[str, Any], end: float | None) -> None:
        if info.get("ttfc_ms") is not None:
            self.ttfc.observe(info["ttfc_ms"] / 1e3)
        if end is not None:
            self.duration.observe(end - flow.request.timestamp_start)

    def _count(self, info: dict[str, Any], outcome: str) -> None:
        """The request, and what the filter recorded for it: the request fixes always, repairs,
        recoveries and tool calls once an answer was rewritten."""
        self.requests.labels(
            client=info.get("client", "unknown"),
            model=self.model(info.get("model", "")),
            outcome=outcome,
            stream=str(bool(info.get("stream"))).lower(),
        ).inc()
        for counter, key in (
            (self.fixes, "fixes"),
            (self.repairs, "repairs"),
            (self.recoveries, "recoveries"),
            (self.warnings, "warnings"),
        ):
            for name in info.get(key) or ():
                counter.labels(name=self.name(name)).inc()
        self.tool_calls.inc(info.get("tool_calls") or 0)
