"""The /harmony-filter/ endpoints: in-process through mitmproxy's hooks, then end to end through a
real mitmdump in front of the replay upstream."""

import asyncio
import json
import re
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.proxy.layers.http import HttpResponseHook
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.proxy.mode_specs import ReverseMode
from mitmproxy.proxy.mode_specs import TransparentMode
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from procs import Process
from procs import mitmdump
from procs import replay_upstream
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from recordings_util import RECORDINGS_DIR

import harmony_filter
from harmony_filter.proxy.addon import HarmonyFilter
from harmony_filter.recordings.recording import load_recording
from harmony_filter.service.endpoints import Endpoints
from harmony_filter.service.metrics import OTHER
from harmony_filter.service.metrics import CappedLabel
from harmony_filter.service.metrics import Metrics
from harmony_filter.service.report import report_line

SDK_PARAMETERS = {"model", "messages", "stream", "stream_options", "tools", "tool_choice"}
CHAT = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hi"}]}


def endpoint_flow(
    path: str, method: str = "GET", mode: ProxyMode | None = None, body: bytes = b""
) -> http.HTTPFlow:
    flow = tflow.tflow(req=http.Request.make(method, f"http://127.0.0.1:3307{path}", body))
    if mode is not None:
        flow.client_conn.proxy_mode = mode
    return flow


def answer(endpoints: Endpoints, flow: http.HTTPFlow) -> http.Response:
    asyncio.run(endpoints.request(flow))
    assert flow.response is not None
    return flow.response


def test_health_reports_version_and_the_options_in_force() -> None:
    endpoints = Endpoints(CollectorRegistry())
    with taddons.context(HarmonyFilter(), endpoints) as tctx:
        tctx.configure(endpoints, harmony_reasoning="think")
        flow = endpoint_flow("/harmony-filter/health")
        response = answer(endpoints, flow)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = json.loads(response.content or b"")
        assert body["status"] == "ok" and body["version"] == harmony_filter.__version__
        assert body["options"]["harmony_reasoning"] == "think"
        assert body["options"]["harmony_models"] == "gpt[-_]?oss"
        assert all(name.startswith("harmony_") for name in body["options"])
        assert 0 <= body["uptime_s"] < 60


def test_metrics_serves_the_registry_as_prometheus_text() -> None:
    registry = CollectorRegistry()
    Counter("probe_events", "A probe.", registry=registry).inc(3)
    endpoints = Endpoints(registry)
    with taddons.context(endpoints):
        response = answer(endpoints, endpoint_flow("/harmony-filter/metrics?format=text"))
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        assert "probe_events_total 3.0" in response.text.splitlines()


def test_unknown_endpoints_and_methods_get_openai_style_errors() -> None:
    endpoints = Endpoints(CollectorRegistry())
    with taddons.context(endpoints):
        missing = answer(endpoints, endpoint_flow("/harmony-filter/nope"))
        assert missing.status_code == 404
        error = json.loads(missing.content or b"")["error"]
        assert "/harmony-filter/nope" in error["message"] and error["code"] == 404
        assert error["type"] == "invalid_request_error"
        wrong_method = answer(endpoints, endpoint_flow("/harmony-filter/health", method="POST"))
        assert wrong_method.status_code == 405


def test_other_paths_are_left_alone() -> None:
    endpoints = Endpoints(CollectorRegistry())
    with taddons.context(endpoints):
        for path in ("/v1/chat/completions", "/harmony-filterx/health", "/v1/harmony-filter/"):
            flow = endpoint_flow(path)
            asyncio.run(endpoints.request(flow))
            assert flow.response is None


def test_endpoint_flows_are_neither_filtered_nor_counted() -> None:
    """With the addons in harmony.py's order, a chat completion sent under the prefix is answered
    by Endpoints before HarmonyFilter could take it, and Metrics does not count it."""
    metrics = Metrics()
    endpoints = Endpoints(metrics.registry)

    async def main() -> http.HTTPFlow:
        with taddons.context(endpoints, HarmonyFilter(), metrics) as tctx:
            flow = endpoint_flow(
                "/harmony-filter/v1/chat/completions", "POST", body=json.dumps(CHAT).encode()
            )
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
            await tctx.master.addons.handle_lifecycle(HttpResponseHook(flow))
            return flow

    flow = asyncio.run(main())
    assert flow.response is not None and flow.response.status_code == 405
    assert "harmony" not in flow.metadata
    assert (
        "harmony_filter_requests_total{"
        not in answer(endpoints, endpoint_flow("/harmony-filter/metrics")).text
    )


async def ready(mode: ProxyMode) -> tuple[int, dict]:
    """The ready endpoint's answer for a request that came in on a listener in this mode."""
    endpoints = Endpoints(CollectorRegistry())
    with taddons.context(endpoints):
        flow = endpoint_flow("/harmony-filter/ready", mode=mode)
        await endpoints.request(flow)
        assert flow.response is not None
        return flow.response.status_code, json.loads(flow.response.content or b"")


def test_ready_when_the_reverse_upstream_accepts_connections() -> None:
    async def main() -> tuple[int, dict]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await ready(ReverseMode.parse(f"reverse:http://127.0.0.1:{port}"))

    status, body = asyncio.run(main())
    assert status == 200 and body["ready"] is True
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", body["upstream"])


def test_not_ready_when_the_reverse_upstream_refuses(free_port: Callable[[], int]) -> None:
    status, body = asyncio.run(ready(ReverseMode.parse(f"reverse:http://127.0.0.1:{free_port()}")))
    assert status == 503 and body["ready"] is False and body["error"]


def test_a_regular_or_transparent_proxy_has_no_single_upstream_and_is_ready() -> None:
    for mode in (ProxyMode.parse("regular"), TransparentMode.parse("transparent")):
        assert asyncio.run(ready(mode)) == (200, {"ready": True, "upstream": None})


def test_in_front_of_one_upstream_connections_wait_for_a_request() -> None:
    """Lazy connections in reverse mode, so the endpoints answer while the upstream is down; a
    forward proxy keeps mitmproxy's eager default."""

    async def strategy(mode: str) -> str:
        endpoints = Endpoints(CollectorRegistry())
        with taddons.context(Proxyserver(), endpoints) as tctx:
            tctx.configure(endpoints, mode=[mode])
            return tctx.options.connection_strategy

    async def main() -> list[str]:
        return [await strategy("reverse:http://127.0.0.1:9"), await strategy("regular")]

    assert asyncio.run(main()) == ["lazy", "eager"]


def test_the_report_line() -> None:
    info = {
        "client": "cline",
        "model": "gpt-oss-20b\x1b[2J",
        "stream": True,
        "ttfc_ms": 412.0,
        "completion_tokens": 128,
        "tool_calls": 1,
        "fixes": ["harmony-stops-added"],
        "repairs": ["tool-name-repaired", "arguments-repaired"],
    }
    assert report_line(info, "rewritten", 1.234) == (
        "harmony-filter: cline         gpt-oss-20b.[2J   stream  ttfc   0.41s  took   1.23s  "
        "tokens   128  tools 1  rewritten  fixes=harmony-stops-added  "
        "repairs=tool-name-repaired,arguments-repaired"
    )


def test_free_text_labels_are_capped() -> None:
    model = CappedLabel(limit=3)
    assert [model(f"m{i}") for i in (0, 1, 0, 2, 3, 4, 1)] == [
        "m0",
        "m1",
        "m0",
        "m2",
        OTHER,
        OTHER,
        "m1",
    ]


def recorded_request(name: str) -> dict[str, Any]:
    """The chat request a recording was made with, as openai SDK arguments (the replay upstream
    answers it by name)."""
    body = json.loads(load_recording(RECORDINGS_DIR / f"{name}.flow").request.content or b"")
    extra = {key: value for key, value in body.items() if key not in SDK_PARAMETERS}
    return {key: body[key] for key in body.keys() & SDK_PARAMETERS} | (
        {"extra_body": extra} if extra else {}
    )


def sdk_call(client: openai.OpenAI, name: str) -> tuple[str, dict[str, Any]]:
    """Send a recording's request with the openai SDK; returns the outcome header and what the
    client made of the answer (content and tool calls)."""
    body = recorded_request(name)
    headers = {"x-replay-recording": name}
    if not body.get("stream"):
        raw = client.chat.completions.with_raw_response.create(**body, extra_headers=headers)
        message = raw.parse().choices[0].message
        calls = [call.function.name for call in message.tool_calls or ()]
        return raw.headers["x-harmony-filter"], {"content": message.content, "calls": calls}
    with client.chat.completions.with_streaming_response.create(
        **body, extra_headers=headers
    ) as response:
        content, calls = "", []
        for chunk in response.parse():
            for choice in chunk.choices:
                content += choice.delta.content or ""
                calls += [c.function.name for c in choice.delta.tool_calls or () if c.function]
        return response.headers["x-harmony-filter"], {"content": content or None, "calls": calls}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text, parsed: (sample name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Service:
    """One mitmdump with three listeners, in front of: the replay upstream (`base`), a port
    nobody listens on (`dead`), and the replay upstream sending a chunk every 0.1 s (`slow`);
    with harmony_no_final_timeout=1."""

    base: str
    dead: str
    slow: str
    upstream: str
    proxy: Process


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from conftest import _free_port

    dead, slow = _free_port(), _free_port()
    with (
        replay_upstream(RECORDINGS_DIR) as upstream,
        replay_upstream(RECORDINGS_DIR, pace=0.1) as slow_upstream,
        mitmdump(
            f"reverse:{upstream}",
            tmp_path_factory.mktemp("confdir"),
            "--mode",
            f"reverse:http://127.0.0.1:{_free_port()}@127.0.0.1:{dead}",
            "--mode",
            f"reverse:{slow_upstream}@127.0.0.1:{slow}",
            "--set",
            "harmony_no_final_timeout=1",
        ) as (port, proxy),
    ):
        for listener in (dead, slow):
            proxy.wait_for(rf"listening at \S*:{listener}")
        local = "http://127.0.0.1:{}".format
        yield Service(local(port), local(dead), local(slow), upstream, proxy)


def test_health_and_readiness_through_a_real_mitmdump(service: Service) -> None:
    base, dead, upstream = service.base, service.dead, service.upstream
    with httpx.Client(timeout=10) as client:
        for url in (base, dead):  # answered by the proxy itself, upstream or not
            health = client.get(f"{url}/harmony-filter/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert health.json()["version"] == harmony_filter.__version__
        ready = client.get(f"{base}/harmony-filter/ready")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "upstream": upstream}
        not_ready = client.get(f"{dead}/harmony-filter/ready")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"] == "application/json"
        reason = not_ready.json()
        assert reason["ready"] is False and reason["upstream"].startswith("http://127.0.0.1:")
        assert "refused" in reason["error"].lower(), reason


def test_metrics_and_report_lines_after_real_sdk_requests(service: Service) -> None:
    """Four answers (JSON and stream, text and tool call), an upstream error and an unreachable
    upstream, all through the openai SDK: the metrics count each, by what the filter did, the
    outcome header says it, and the proxy prints one line per request."""
    base, dead, proxy = service.base, service.dead, service.proxy
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=20)
    headers, results = {}, {}
    for name in (
        "raw-demo-answer-json",
        "raw-demo-answer-stream",
        "raw-demo-get-weather-call-json",
        "raw-demo-get-weather-call-stream",
    ):
        headers[name], results[name] = sdk_call(client, name)
    for name in ("raw-demo-answer-json", "raw-demo-answer-stream"):
        assert results[name]["content"].startswith("harmony-filter is a small mitmproxy addon")
    for name in ("raw-demo-get-weather-call-json", "raw-demo-get-weather-call-stream"):
        assert results[name] == {"content": None, "calls": ["get_weather"]}
    for header in headers.values():
        assert header == "rewritten; fixes=harmony-stops-added"
    with pytest.raises(openai.InternalServerError) as failed:  # an upstream 500, passed on
        sdk_call(client, "llamacpp-template-error-500-json")
    assert failed.value.response.headers["x-harmony-filter"].startswith("upstream-error; fixes=")
    unreachable = openai.OpenAI(base_url=f"{dead}/v1", api_key="k", max_retries=0, timeout=20)
    with pytest.raises(openai.APIStatusError) as cannot_connect:
        sdk_call(unreachable, "raw-demo-answer-json")
    assert cannot_connect.value.status_code == 502

    for line in (
        r"openai-sdk +gpt-oss-20b +json .*tools 0 +rewritten +fixes=harmony-stops-added$",
        r"openai-sdk +gpt-oss-20b +stream .*tools 0 +rewritten( \(.*\))? +fixes=harmony-stops-\S+$",
        r"openai-sdk +gpt-oss-20b +json .*tools 1 +rewritten +fixes=harmony-stops-added$",
        r"openai-sdk +gpt-oss-20b +stream .*tools 1 +rewritten( \(.*\))? +fixes=harmony-stops-\S+$",
        r"openai-sdk +gpt-oss-20b +stream .*tools 0 +upstream-error 500 ",
        r"openai-sdk +gpt-oss-20b +json .*tools 0 +error \(.*\)",
    ):
        proxy.wait_for(r"\] harmony-filter: " + line)
    for endpoint in ("health", "ready"):  # neither filtered nor counted
        httpx.get(f"{base}/harmony-filter/{endpoint}", timeout=10).raise_for_status()
    values = samples(httpx.get(f"{base}/harmony-filter/metrics", timeout=10).text)

    def metric(sample: str, /, **labels: str) -> float | None:
        return values.get((sample, frozenset(labels.items())))

    def requests(outcome: str, stream: str) -> float | None:
        labels = {"client": "openai-sdk", "model": "gpt-oss-20b", "stream": stream}
        return metric("harmony_filter_requests_total", **labels, outcome=outcome)

    assert requests("rewritten", "false") == 2 and requests("rewritten", "true") == 2
    assert requests("upstream-error", "true") == 1 and requests("error", "false") == 1
    counted = [
        value
        for (name, labels), value in values.items()
        if name == "harmony_filter_requests_total" and ("model", "gpt-oss-20b") in labels
    ]
    assert sum(counted) == 6
    assert metric("harmony_filter_fixes_total", name="harmony-stops-added") == 6
    assert metric("harmony_filter_tool_calls_total") == 2
    assert metric("harmony_filter_upstream_errors_total", status="500") == 1
    assert metric("harmony_filter_flow_errors_total", phase="before-response") == 1
    assert metric("harmony_filter_time_to_first_content_seconds_count") == 4
    assert metric("harmony_filter_request_duration_seconds_count") == 5
    assert metric("harmony_filter_request_duration_seconds_bucket", le="+Inf") == 5


def test_a_stream_without_an_answer_ends_at_the_no_final_timeout(service: Service) -> None:
    """27 chunks of reasoning, 0.1 s apart, that never reach an answer: after 1 s the client
    gets an OpenAI error event (the openai SDK raises it and hangs up), long before the upstream
    would have finished; the report line and the metrics say why."""
    name = "raw-truncated-in-analysis-length-stream"
    client = openai.OpenAI(base_url=f"{service.slow}/v1", api_key="k", max_retries=0, timeout=10)
    arguments = recorded_request(name) | {"model": "gpt-oss-slow"}  # its own metrics labels
    started = time.monotonic()
    with pytest.raises(openai.APIError) as timed_out:
        for _ in client.chat.completions.create(
            **arguments, extra_headers={"x-replay-recording": name}
        ):
            pass
    took = time.monotonic() - started
    assert timed_out.value.body["code"] == "no_final_timeout"
    assert "no answer or tool call within 1 s" in timed_out.value.message
    assert 1 <= took < 2.2, took  # the upstream alone takes 2.6 s
    service.proxy.wait_for(
        r"harmony-filter: openai-sdk +gpt-oss-slow +stream .*ttfc +- .*rewritten "
        r"\(Client disconnected\.\) .*warnings=no-final-timeout"
    )
    metrics = samples(httpx.get(f"{service.base}/harmony-filter/metrics", timeout=10).text)
    warned = ("harmony_filter_stream_warnings_total", frozenset({("name", "no-final-timeout")}))
    assert metrics[warned] == 1
