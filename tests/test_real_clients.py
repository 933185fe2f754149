"""Real coding clients (OpenCode, the Cline CLI, the Continue CLI), headless, through a real
mitmdump with the addon, in front of a loopback upstream that speaks like a gpt-oss server which
does not parse Harmony: the model's raw text in delta.content, cut anywhere, in llama.cpp's chunk
envelope.

Turn 1 the model calls one of the tools the client declares, on a file in the client's own temp
workspace; the client runs it and sends the result back; turn 2 the model answers with the code
word it read. The code word is random per run, so it can only reach the answer through the tool.
Without the filter the same client gets the markup as its answer and runs no tool.

The clients are npm packages pinned in tests/real_clients/package.json; install them with
`./run.sh setup-clients`. Without them (or without node) these tests skip.
"""

import json
import os
import random
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from procs import ROOT
from procs import mitmdump
from procs import wait_for_flows

from harmony_filter.recordings.recording import load_recording

CLIENTS_DIR = ROOT / "tests" / "real_clients"
BIN = CLIENTS_DIR / "node_modules" / ".bin"
MODEL = "gpt-oss-20b"
CLIENT_TIMEOUT = 120
MARKUP = "<|"

# What the model "says" (raw Harmony, as a server without a Harmony parser passes it on).
TITLE = (
    "<|channel|>analysis<|message|>A short title.<|end|><|start|>assistant<|channel|>final"
    "<|message|>Code word lookup<|return|>"
)
CALL_REASONING = "The user wants the code word from notes.txt. Use a tool to read it."
CALL = (
    "<|channel|>analysis<|message|>{reasoning}"
    "<|end|><|start|>assistant<|channel|>commentary to=functions.{tool} <|constrain|>json"
    "<|message|>{arguments}<|call|>"
)
ANSWER = (
    "<|channel|>analysis<|message|>The tool output has the code word.<|end|><|start|>assistant"
    "<|channel|>final<|message|>The code word is {word}.<|return|>"
)
WORD = re.compile(r"CODEWORD-[0-9a-f]{8}")


FILE_READERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "read": lambda path: {"filePath": path},  # OpenCode
    "read_files": lambda path: {"files": [{"path": path}]},  # the Cline CLI (3.x)
    "Read": lambda path: {"filepath": path},  # the Continue CLI
}
"""The file-reading tool of each client, by name, and its arguments for a path."""


def tool_call(tools: set[str], workspace: Path) -> str:
    """Turn 1: a call of the file-reading tool this client declares, on the workspace's
    notes.txt."""
    name = next((name for name in FILE_READERS if name in tools), None)
    if name is None:
        raise AssertionError(f"no known file tool among {sorted(tools)}")
    arguments = FILE_READERS[name](str(workspace / "notes.txt"))
    return CALL.format(reasoning=CALL_REASONING, tool=name, arguments=json.dumps(arguments))


# --- the upstream ---------------------------------------------------------------------------


def llamacpp_sse(text: str, include_usage: bool, seed: int) -> list[bytes]:
    """How llama-server streams: a role chunk, the text in delta.content pieces, an empty delta
    with finish_reason, a usage chunk with timings when asked, [DONE]; the bytes then go out in
    arbitrary writes (cut inside events, special tokens and UTF-8 characters)."""
    rng = random.Random(seed)
    envelope = {
        "created": 1762855699,
        "id": f"chatcmpl-{seed:032x}",
        "model": MODEL,
        "system_fingerprint": "b7010-c27efd2bd",
        "object": "chat.completion.chunk",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"finish_reason": finish, "index": 0, "delta": delta}], **envelope}

    events = [chunk({"role": "assistant", "content": None})]
    i = 0
    while i < len(text):
        j = i + rng.randint(1, 8)
        events.append(chunk({"content": text[i:j]}))
        i = j
    events.append(chunk({}, "stop"))
    if include_usage:
        usage = {"completion_tokens": len(text) // 4, "prompt_tokens": 900, "total_tokens": 0}
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        events.append({"choices": [], **envelope, "usage": usage, "timings": {"predicted_n": 1}})
    body = b"".join(
        b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events
    )
    body += b"data: [DONE]\n\n"
    cuts = sorted(rng.sample(range(1, len(body)), min(60, len(body) - 1)))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


@dataclass
class Exchange:
    headers: dict[str, str]
    body: dict[str, Any]
    answer: str


@dataclass
class ScriptedUpstream:
    """A loopback gpt-oss server without a Harmony parser: it answers each chat request from
    what the request holds (no tools: a title; a tool result: the answer; else: the call), so
    a client's extra or retried requests get sensible answers too."""

    workspace: Path
    exchanges: list[Exchange] = field(default_factory=list)

    def answer(self, body: dict[str, Any]) -> str:
        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        if not tools:
            return TITLE
        messages = body.get("messages") or []
        results = [m for m in messages if m.get("role") == "tool"]
        if results:
            found = WORD.search(json.dumps([m.get("content") for m in results]))
            return ANSWER.format(word=found.group(0) if found else "not in the tool result")
        return tool_call(tools, self.workspace)

    def tool_results(self) -> list[str]:
        """The contents of every tool message the clients sent back."""
        return [
            json.dumps(m.get("content"))
            for e in self.exchanges
            for m in e.body.get("messages") or ()
            if m.get("role") == "tool"
        ]

    def reasoning_given_back(self) -> list[str]:
        """The reasoning of every assistant tool-call message in the requests that carried
        tool results (in whichever field it came: the filter sends reasoning_content)."""
        return [
            str(m.get("reasoning_content") or m.get("reasoning") or "")
            for e in self.exchanges
            if any(m.get("role") == "tool" for m in e.body.get("messages") or ())
            for m in e.body["messages"]
            if m.get("role") == "assistant" and m.get("tool_calls")
        ]

    @property
    def handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # /v1/models, as llama-server lists its one model
                self._send_json({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                text = upstream.answer(body)
                upstream.exchanges.append(Exchange(dict(self.headers), body, text))
                if not body.get("stream"):
                    message = {"role": "assistant", "content": text}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    self._send_json({"object": "chat.completion", "model": MODEL,
                                     "choices": [choice]})  # fmt: skip
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("server", "llama.cpp")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                for piece in llamacpp_sse(text, include_usage, len(upstream.exchanges)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _send_json(self, value: dict[str, Any]) -> None:
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """The client's working directory, with the file the model will have it read."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text(f"The code word is CODEWORD-{secrets.token_hex(4)}.\n")
    return work


@pytest.fixture
def upstream(workspace: Path) -> Iterator[tuple[str, ScriptedUpstream]]:
    script = ScriptedUpstream(workspace)
    server = ThreadingHTTPServer(("127.0.0.1", 0), script.handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def filtered(
    upstream: tuple[str, ScriptedUpstream], tmp_path: Path
) -> Iterator[tuple[str, ScriptedUpstream, Path]]:
    """(proxy base URL, the upstream, the directory where the filter records each exchange)."""
    url, script = upstream
    records = tmp_path / "records"
    with mitmdump(
        f"reverse:{url}", tmp_path / "confdir", "--set", f"harmony_record_dir={records}"
    ) as (port, _):
        yield f"http://127.0.0.1:{port}/v1", script, records


def filter_saw(records: Path, count: int) -> list[dict[str, Any]]:
    """What the filter wrote in flow.metadata for each exchange it recorded, once there are
    `count` recordings (a client may exit before mitmdump has written the last one) or 10 s
    have passed."""
    return [load_recording(path).metadata["harmony"] for path in wait_for_flows(records, count)]


# --- running the clients --------------------------------------------------------------------


def client_env(home: Path) -> dict[str, str]:
    """A private HOME (so no user config is read and nothing is left behind), no proxy for
    loopback, and none of the caller's other variables."""
    home.mkdir(exist_ok=True)
    keep = ("PATH", "LANG", "TERM", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
    return {
        **{k: os.environ[k] for k in keep if k in os.environ},
        "HOME": str(home),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs a client to the end, within CLIENT_TIMEOUT, in its own process group (so nothing
    it spawns outlives it)."""
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        pytest.fail(
            f"{args[0]} did not finish in {CLIENT_TIMEOUT} s:\n{out[-3000:]}\n{err[-3000:]}"
        )
    finally:
        try:
            os.killpg(process.pid, 9)  # anything the client left behind in its group
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


PROMPT = "What is the code word in notes.txt?"


def opencode(binary: str, base_url: str, workspace: Path, env: dict[str, str]) -> list[str]:
    """OpenCode reads its provider from opencode.json in the project directory."""
    config = json.loads((CLIENTS_DIR / "opencode.json").read_text())
    config["provider"]["gpt-oss"]["options"]["baseURL"] = base_url
    (workspace / "opencode.json").write_text(json.dumps(config, indent=2))
    return [binary, "run", "--format", "json", PROMPT]


def cline(binary: str, base_url: str, workspace: Path, env: dict[str, str]) -> list[str]:
    """The Cline CLI keeps its provider in ~/.cline, written by `cline auth`."""
    auth = [binary, "auth", "-p", "openai", "-k", "sk-local", "-m", MODEL, "-b", base_url]
    result = run(auth, workspace, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return [binary, "--json", "--retries", "1", "--timeout", str(CLIENT_TIMEOUT - 20), PROMPT]


def continue_cli(binary: str, base_url: str, workspace: Path, env: dict[str, str]) -> list[str]:
    """The Continue CLI (cn) takes a config.yaml with an OpenAI-compatible model."""
    config = workspace.parent / "continue.yaml"
    config.write_text(
        "name: harmony-filter test\nversion: 0.0.1\nschema: v1\nmodels:\n"
        f"  - name: gpt-oss\n    provider: openai\n    model: {MODEL}\n"
        f"    apiBase: {base_url}\n    apiKey: sk-local\n    roles: [chat]\n"
    )
    return [binary, "-p", "--format", "json", "--config", str(config), PROMPT]


@dataclass(frozen=True)
class Client:
    binary: str
    """Its executable in node_modules/.bin."""
    command: Callable[[str, str, Path, dict[str, str]], list[str]]
    """(executable, base URL, workspace, environment) -> the command line; writes the config
    it needs."""
    answer: Callable[[list[dict[str, Any]]], str]
    """The answer the user sees, from the JSON lines the client printed."""
    env: dict[str, str]
    """Variables that keep the client offline and in this process."""
    sends_reasoning_back: bool
    """Whether the client itself returns a tool-calling turn's reasoning_content (if not, the
    filter must re-inject it)."""


CLIENTS = {  # keyed by the name the filter detects them as
    "opencode": Client(
        "opencode",
        opencode,
        lambda events: "".join(e["part"]["text"] for e in events if e.get("type") == "text"),
        {
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        },
        sends_reasoning_back=True,
    ),
    "cline": Client(
        "cline",
        cline,
        lambda events: "".join(e["text"] for e in events if e.get("type") == "run_result"),
        # local: run the session in this process, not in a background hub daemon it would start
        {"CLINE_SESSION_BACKEND_MODE": "local", "CLINE_NO_AUTO_UPDATE": "1"},
        sends_reasoning_back=True,
    ),
    "continue": Client(
        "cn",
        continue_cli,
        lambda events: "".join(e["response"] for e in events if "response" in e),
        {"CONTINUE_CLI_ENABLE_TELEMETRY": "0", "CONTINUE_METRICS_ENABLED": "0"},
        sends_reasoning_back=False,
    ),
}


def run_client(name: str, base_url: str, workspace: Path) -> tuple[str, str]:
    """Runs the client once on PROMPT; returns (its whole stdout, the answer it shows)."""
    client = CLIENTS[name]
    env = client_env(workspace.parent / "home") | client.env
    command = client.command(str(BIN / client.binary), base_url, workspace, env)
    result = run(command, workspace, env)
    assert result.returncode == 0, (
        f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout, client.answer(json_lines(result.stdout))


# --- the tests ------------------------------------------------------------------------------

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed (these tests need node and npm)"
)
INSTALLED = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            not (BIN / client.binary).exists(),
            reason=f"{client.binary} is not installed: run ./run.sh setup-clients",
        ),
    )
    for name, client in CLIENTS.items()
]


@pytest.mark.parametrize("name", INSTALLED)
def test_client_runs_the_tool_and_shows_a_clean_answer(
    name: str, filtered: tuple[str, ScriptedUpstream, Path], workspace: Path
) -> None:
    base_url, upstream, records = filtered
    word = WORD.search((workspace / "notes.txt").read_text())
    assert word
    stdout, answer = run_client(name, base_url, workspace)

    assert f"The code word is {word.group(0)}." in answer  # it came through the tool
    assert MARKUP not in stdout
    assert any(word.group(0) in result for result in upstream.tool_results())
    # gpt-oss saw its own reasoning again with the tool result, from the client or the filter
    assert upstream.reasoning_given_back() == [CALL_REASONING]
    saw = filter_saw(records, len(upstream.exchanges))
    assert len(saw) == len(upstream.exchanges)
    assert {s["client"] for s in saw} == {name}
    assert {s["outcome"] for s in saw} == {"rewritten"}
    reinjected = any("reasoning-reinjected" in s["fixes"] for s in saw)
    assert reinjected is not CLIENTS[name].sends_reasoning_back


@pytest.mark.parametrize("name", INSTALLED)
def test_without_the_filter_the_client_shows_markup_and_runs_no_tool(
    name: str, upstream: tuple[str, ScriptedUpstream], workspace: Path
) -> None:
    url, script = upstream
    stdout, answer = run_client(name, f"{url}/v1", workspace)

    assert "<|channel|>commentary to=functions." in answer
    assert script.tool_results() == []
