"""API keys never leave the request they came in: not in the proxy's output (flow dumps and debug
logs included), recordings, metrics or error messages; and the proxy answers only this machine
unless told otherwise."""

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from conftest import _free_port
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons
from procs import mitmdump
from procs import replay_upstream
from procs import wait_for_flows
from recordings_util import RECORDINGS_DIR
from test_endpoints import recorded_request

from harmony_filter.service.loopback import Loopback

KEYS = {
    where: f"{where}-{secrets.token_hex(12)}"
    for where in ("bearer", "x-api-key", "api-key", "query", "cookie")
}
CREDENTIALS = {
    "headers": {
        "x-api-key": KEYS["x-api-key"],
        "api-key": KEYS["api-key"],
        "cookie": f"theme=dark; session={KEYS['cookie']}",
    },
    "query": {"key": KEYS["query"]},
}
ANSWER = (
    "<|channel|>analysis<|message|>Say hi.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Hi!<|return|>"
)


class KeyQuotingUpstream(BaseHTTPRequestHandler):
    """Keeps what each request carried; answers `/refuse/…` as some servers refuse a key,
    quoting it in a plain-text error, and anything else with a raw Harmony completion."""

    seen: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/refuse/"):
            status, kind = 401, "text/plain"
            body = f"Invalid API key: {self.headers.get('authorization')}".encode()
        else:
            status, kind = 200, "application/json"
            message = {"role": "assistant", "content": ANSWER}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            body = json.dumps({"object": "chat.completion", "choices": [choice]}).encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def key_quoting_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyQuotingUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_no_key_in_output_recordings_metrics_or_error_messages(
    tmp_path: Path, key_quoting_upstream: str
) -> None:
    """Every kind of request, each carrying a key in every place a key goes, through a mitmdump
    that dumps whole flows (flow_detail 4) and debug logs and records: answers, streams, upstream
    errors (one that quotes the key), a body that is not JSON, an unfiltered path, an unreachable
    upstream, the endpoints. Then no key is found anywhere; the upstream still got them all."""
    record_dir = tmp_path / "recorded"
    ports = {name: _free_port() for name in ("quoting", "dead")}
    with replay_upstream(RECORDINGS_DIR) as replay:
        with mitmdump(
            f"reverse:{replay}",
            tmp_path,
            "--mode",
            f"reverse:{key_quoting_upstream}@{ports['quoting']}",
            "--mode",
            f"reverse:http://127.0.0.1:{_free_port()}@{ports['dead']}",
            "--set",
            "termlog_verbosity=debug",
            "--set",
            f"harmony_record_dir={record_dir}",
            flow_detail=4,
        ) as (_, proxy):
            proxy.wait_for(rf"listening at \S*:{ports['dead']}")
            port = int(proxy.wait_for(r"reverse proxy to \S+ listening at \S*?:(\d+)").group(1))
            got = run_requests(
                f"http://127.0.0.1:{port}",
                f"http://127.0.0.1:{ports['quoting']}",
                f"http://127.0.0.1:{ports['dead']}",
            )
            assert len(wait_for_flows(record_dir, 6)) >= 6
            proxy.wait_for(r"harmony-filter: .* error \(")  # the unreachable upstream's line

    places = {"mitmdump output": proxy.output.encode(), **got}
    places |= {f"recording {path.name}": path.read_bytes() for path in record_dir.iterdir()}
    for place, data in places.items():
        for where, key in KEYS.items():
            assert key.encode() not in data, f"the {where} key leaked into the {place}"
    # Not vacuous: the keys were there to leak, and went where they should.
    assert b"authorization: REDACTED" in proxy.output.encode()
    assert b"key=REDACTED" in proxy.output.encode()
    assert all(b"REDACTED" in path.read_bytes() for path in record_dir.iterdir())
    assert "REDACTED" in got["the refused request's error"].decode()
    for path, headers in KeyQuotingUpstream.seen:
        assert path.endswith(f"?key={KEYS['query']}")
        assert headers["authorization"] == f"Bearer {KEYS['bearer']}"
        assert headers["x-api-key"] == KEYS["x-api-key"]
        assert headers["api-key"] == KEYS["api-key"]
        assert KEYS["cookie"] in headers["cookie"]
    assert len(KeyQuotingUpstream.seen) == 2


def run_requests(base: str, quoting: str, dead: str) -> dict[str, bytes]:
    """The requests, each with every key; returns what the clients got, by request."""
    got: dict[str, bytes] = {}

    def sdk(url: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{url}/v1",
            api_key=KEYS["bearer"],
            max_retries=0,
            timeout=20,
            default_headers=CREDENTIALS["headers"],
            default_query=CREDENTIALS["query"],
        )

    def replayed(name: str) -> bytes:
        headers = {"x-replay-recording": name}
        body = recorded_request(name)
        try:
            raw = sdk(base).chat.completions.with_raw_response.create(**body, extra_headers=headers)
        except openai.APIStatusError as e:
            return bytes(e.response.content) + str(e).encode()
        return raw.http_response.read() + str(raw.headers).encode()

    got["a streamed tool call"] = replayed("raw-demo-get-weather-call-stream")
    got["an answer"] = replayed("raw-demo-answer-json")
    got["an upstream 500"] = replayed("llamacpp-template-error-500-json")
    got["an upstream 400"] = replayed("openrouter-reasoning-mandatory-400-json")
    got["the model list (not filtered)"] = sdk(base).models.with_raw_response.list().content
    answer = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hi"}]}
    got["an answer from the key-quoting upstream"] = (
        sdk(quoting).chat.completions.with_raw_response.create(**answer).content
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(f"{quoting}/refuse").chat.completions.create(**answer)
    got["the refused request's error"] = (
        refused.value.response.content + str(refused.value).encode()
    )
    with pytest.raises(openai.APIStatusError) as unreachable:
        sdk(dead).chat.completions.create(**answer)
    got["the unreachable upstream's error"] = unreachable.value.response.content
    with httpx.Client(
        headers={"authorization": f"Bearer {KEYS['bearer']}", **CREDENTIALS["headers"]},
        params=CREDENTIALS["query"],
        timeout=20,
    ) as client:
        not_json = client.post(f"{base}/v1/chat/completions", content=b"model=gpt-oss")
        got["a body that is not JSON"] = not_json.content
        for endpoint in ("health", "ready", "metrics"):
            response = client.get(f"{base}/harmony-filter/{endpoint}")
            got[f"/harmony-filter/{endpoint}"] = response.raise_for_status().content
    return got


def test_the_proxy_listens_on_loopback_unless_told_otherwise() -> None:
    """mitmproxy's default (every interface) becomes 127.0.0.1; a host given in the mode stays.
    (In process, with no listener opened beforehand: nothing here listens beyond loopback.)"""

    async def listen(listen_host: str) -> list[tuple[str, int]]:
        proxyserver = Proxyserver()
        with taddons.context(proxyserver, Loopback()) as tctx:
            tctx.options.update(
                listen_host=listen_host,
                mode=["regular@0", "reverse:http://127.0.0.1:9@127.0.0.2:0"],
            )
            await tctx.master.addons.get("loopback").running()
            try:
                return [addr[:2] for addr in proxyserver.listen_addrs()]
            finally:
                await proxyserver.servers.update([])

    async def main() -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        return await listen(""), await listen("127.0.0.3")

    by_default, told_otherwise = asyncio.run(main())
    assert sorted(host for host, _ in by_default) == ["127.0.0.1", "127.0.0.2"]
    assert all(port > 0 for _, port in by_default)
    assert told_otherwise == []  # not touched (nor started: nothing else starts them here)
