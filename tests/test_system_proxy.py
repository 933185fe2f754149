"""System-proxy mode end to end: clients that have the proxy set reach an HTTPS host through a
real mitmdump in regular mode. gpt-oss chats come back rewritten; every other flow arrives
byte-identical and unbuffered."""

import datetime
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Callable
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID
from mitmproxy.addons.proxyauth import ProxyAuth
from mitmproxy.test import taddons
from mitmproxy.utils.human import parse_size
from procs import mitmdump

from harmony_filter.proxy.addon import OUTCOME_HEADER
from harmony_filter.proxy.addon import STREAM_LARGE_BODIES
from harmony_filter.proxy.addon import HarmonyFilter

TOOL_TURN = (
    "<|channel|>analysis<|message|>Paris weather: call get_weather.<|end|><|start|>assistant"
    '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}'
    "<|call|>"
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
# Another model's stream, as sent: spacing that a proxy re-serialising the JSON would change.
LLAMA_REQUEST = (
    b'{"model":  "llama-3", "stream": true,\n "messages": [{"role": "user", "content": "hi"}]}'
)
LLAMA_EVENTS = [
    b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"<|channel|>not ours"}}]}\n\n',
    b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]
OTHER_STREAMS = {
    "text/event-stream": [b"event: tick\ndata: 1\n\n", b": keep-alive\n\n", b"data: 2\n\n"],
    "application/x-ndjson": [b'{"done":false}\n', b'{"done":true}\n'],
}
WAIT = 10  # seconds; a buffering proxy makes every gated stream wait this long, then fail


# -- the HTTPS upstream ------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A test CA and, signed by it, a certificate for 127.0.0.1 and gpt-oss.test; returns the
    CA's PEM and the upstream's PEM (certificate and key)."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harmony-filter test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpt-oss.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("gpt-oss.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, upstream_pem = directory / "ca.pem", directory / "upstream.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    upstream_pem.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, upstream_pem


class Upstream(ThreadingHTTPServer):
    """The HTTPS host behind the proxy. gpt-oss chats get raw Harmony, whole; every other
    stream is gated: its first part, then nothing until the client says it has that part."""

    daemon_threads = True

    def __init__(self, certificate: Path) -> None:
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.first_part_arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def gate(self) -> threading.Event:
        """A fresh gate for the next gated stream: the client sets it on its first part."""
        self.first_part_arrived = threading.Event()
        return self.first_part_arrived


class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.received.append((self.path, dict(self.headers.items()), body))
        request = json.loads(body)
        if request["model"] != "gpt-oss-20b":
            self.send_gated("text/event-stream", LLAMA_EVENTS)
        elif request.get("stream"):
            self.send_gated("text/event-stream", harmony_events(TOOL_TURN), gated=False)
        else:
            self.send_whole("application/json", harmony_completion(TOOL_TURN))

    def do_GET(self) -> None:
        self.server.received.append((self.path, dict(self.headers.items()), b""))
        if self.path == "/download":
            self.send_gated("application/octet-stream", large_body(), chunked=False)
        else:
            content_type = self.path.removeprefix("/v1/stream/").replace("_", "/")
            self.send_gated(content_type, OTHER_STREAMS[content_type])

    def send_whole(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_gated(
        self, content_type: str, parts: list[bytes], gated: bool = True, chunked: bool = True
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(sum(map(len, parts))))
        self.end_headers()
        for i, part in enumerate(parts):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if i == 0 and gated and not self.server.first_part_arrived.wait(WAIT):
                self.close_connection = True  # the proxy held the first part back
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def harmony_events(text: str) -> list[bytes]:
    """What llama.cpp without --jinja streams: Harmony text in delta.content, a few bytes a time."""
    base = {"id": "chatcmpl-sp", "object": "chat.completion.chunk", "model": "gpt-oss-20b"}
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    events = [base | {"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [b"data: %s\n\n" % json.dumps(e).encode() for e in events] + [b"data: [DONE]\n\n"]


def harmony_completion(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return json.dumps(
        {
            "id": "chatcmpl-sp",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-oss-20b",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        }
    ).encode()


def large_body() -> list[bytes]:
    """Just over the size from which the addon has mitmproxy stream bodies, in two parts."""
    size = parse_size(STREAM_LARGE_BODIES)
    assert size is not None
    pattern = bytes(range(256)) * 256
    first = pattern  # 64 KiB
    rest = pattern * (size // len(pattern))
    return [first, rest]


# -- fixtures ----------------------------------------------------------------------------------


class Setup:
    def __init__(
        self, upstream: Upstream, proxy: str, mitm_ca: Path, output: Callable[[], str]
    ) -> None:
        self.upstream = upstream
        self.proxy = proxy
        self.mitm_ca = mitm_ca  # what clients trust instead of the upstream's own CA
        self.output = output  # mitmdump's log so far

    def http_client(self) -> httpx.Client:
        """An httpx client configured the explicit way: proxy and the proxy's CA."""
        return httpx.Client(
            proxy=self.proxy,
            verify=ssl.create_default_context(cafile=self.mitm_ca),
            timeout=httpx.Timeout(WAIT / 2),
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    certificates = tmp_path_factory.mktemp("certificates")
    confdir = tmp_path_factory.mktemp("confdir")  # mitmdump makes its own CA in here
    test_ca, upstream_pem = make_certificates(certificates)
    upstream = Upstream(upstream_pem)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    trust_upstream = f"ssl_verify_upstream_trusted_ca={test_ca}"
    try:
        with mitmdump("regular", confdir, "--set", trust_upstream) as (port, process):
            yield Setup(
                upstream,
                f"http://127.0.0.1:{port}",
                confdir / "mitmproxy-ca-cert.pem",
                lambda: process.output,
            )
    finally:
        upstream.shutdown()
        upstream.server_close()


# -- gpt-oss chats are rewritten ---------------------------------------------------------------


def ask_for_the_weather(client: openai.OpenAI, stream: bool) -> dict[str, Any]:
    """The answer as the SDK hands it over (a stream accumulated by the SDK's own helper)."""
    request: dict[str, Any] = {
        "model": "gpt-oss-20b",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
    }
    if stream:
        with client.chat.completions.stream(**request) as events:
            choice: Any = events.get_final_completion().choices[0]
    else:
        choice = client.chat.completions.create(**request).choices[0]
    message = choice.message
    return {
        "content": message.content,
        "reasoning": (message.model_extra or {}).get("reasoning_content"),
        "tool_calls": [(c.function.name, c.function.arguments) for c in message.tool_calls or ()],
        "finish_reason": choice.finish_reason,
    }


REWRITTEN = {
    "content": None,
    "reasoning": "Paris weather: call get_weather.",
    "tool_calls": [("get_weather", '{"city":"Paris"}')],
    "finish_reason": "tool_calls",
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gpt_oss_answer_is_rewritten_over_https(setup: Setup, stream: bool) -> None:
    with openai.OpenAI(
        base_url=setup.upstream.url + "/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=setup.http_client(),
    ) as client:
        assert ask_for_the_weather(client, stream) == REWRITTEN


def test_sdk_configured_by_environment_alone(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README tells users: HTTPS_PROXY and SSL_CERT_FILE, nothing in the code."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", setup.proxy)
    monkeypatch.setenv("SSL_CERT_FILE", str(setup.mitm_ca))
    with openai.OpenAI(base_url=setup.upstream.url + "/v1", api_key="sk", max_retries=0) as client:
        assert ask_for_the_weather(client, stream=True) == REWRITTEN


# -- every other flow passes untouched and unbuffered ------------------------------------------


def read_gated(response: httpx.Response, first_part: bytes, gate: threading.Event) -> bytes:
    """The whole body as received; the gate opens once the first part is in, and only then
    does the upstream send the rest. A proxy that buffers never delivers the first part."""
    received = b""
    for data in response.iter_raw():
        received += data
        if not gate.is_set() and len(received) >= len(first_part):
            assert received == first_part  # nothing more can have been sent yet
            gate.set()
    return received


def test_other_models_chat_stream_passes_byte_identical_and_unbuffered(setup: Setup) -> None:
    gate = setup.upstream.gate()
    with setup.http_client() as client:
        with client.stream(
            "POST",
            setup.upstream.url + "/v1/chat/completions",
            content=LLAMA_REQUEST,
            headers={"content-type": "application/json", "accept-encoding": "gzip, br"},
        ) as response:
            body = read_gated(response, LLAMA_EVENTS[0], gate)
    assert body == b"".join(LLAMA_EVENTS)
    assert OUTCOME_HEADER not in response.headers
    path, headers, sent = setup.upstream.received[-1]
    assert (path, sent) == ("/v1/chat/completions", LLAMA_REQUEST)
    assert headers["accept-encoding"] == "gzip, br"  # not made identity: not ours


@pytest.mark.parametrize("content_type", OTHER_STREAMS)
def test_other_event_streams_pass_byte_identical_and_unbuffered(
    setup: Setup, content_type: str
) -> None:
    parts = OTHER_STREAMS[content_type]
    gate = setup.upstream.gate()
    with setup.http_client() as client:
        url = f"{setup.upstream.url}/v1/stream/{content_type.replace('/', '_')}"
        with client.stream("GET", url) as response:
            body = read_gated(response, parts[0], gate)
    assert body == b"".join(parts)
    assert response.headers["content-type"] == content_type


def test_large_bodies_stream(setup: Setup) -> None:
    """Without stream_large_bodies set, the addon has mitmproxy stream bodies over
    STREAM_LARGE_BODIES instead of holding them in memory until the end."""
    parts = large_body()
    gate = setup.upstream.gate()
    with setup.http_client() as client:
        with client.stream("GET", setup.upstream.url + "/download") as response:
            body = read_gated(response, parts[0], gate)
    assert body == b"".join(parts)


def test_no_open_proxy_warning_on_loopback(setup: Setup) -> None:
    assert "proxyauth" not in setup.output()


# -- the open-proxy warning --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "listen_host", "proxyauth", "warning"),
    [
        ("regular", "", None, "regular proxy listens on every interface"),
        ("regular", "0.0.0.0", None, "regular proxy listens on 0.0.0.0"),
        ("regular@192.168.1.5:8080", "127.0.0.1", None, "listens on 192.168.1.5"),
        ("socks5", "::", None, "socks5 proxy listens on ::"),
        ("regular", "0.0.0.0", "user:pass", None),
        ("regular", "127.0.0.1", None, None),
        ("regular@[::1]:8080", "", None, None),
        ("regular", "localhost", None, None),
        ("reverse:http://127.0.0.1:8000", "0.0.0.0", None, None),
    ],
)
def test_open_proxy_warning(
    caplog: pytest.LogCaptureFixture,
    mode: str,
    listen_host: str,
    proxyauth: str | None,
    warning: str | None,
) -> None:
    addon = HarmonyFilter()
    with caplog.at_level(logging.WARNING), taddons.context(addon, ProxyAuth()) as tctx:
        tctx.configure(addon, mode=[mode], listen_host=listen_host, proxyauth=proxyauth)
        assert open_proxy_warnings(caplog) == []  # not yet: Loopback may still move listen_host
        addon.running()
    warnings = open_proxy_warnings(caplog)
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0] and "proxyauth" in warnings[0]


def test_open_proxy_warning_follows_option_changes(caplog: pytest.LogCaptureFixture) -> None:
    addon = HarmonyFilter()
    with caplog.at_level(logging.WARNING), taddons.context(addon, ProxyAuth()) as tctx:
        tctx.configure(addon, listen_host="127.0.0.1")
        addon.running()
        assert open_proxy_warnings(caplog) == []
        tctx.configure(addon, listen_host="0.0.0.0")
        assert len(open_proxy_warnings(caplog)) == 1


def open_proxy_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without proxyauth" in r.getMessage()]
