"""Real processes for end-to-end tests: mitmdump with the addon, the replay upstream."""

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    from harmony_filter.tools.replay_upstream import ReplayUpstream

ROOT = Path(__file__).resolve().parent.parent
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")


class Process:
    """A child process whose output is collected (and searched) as it runs."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"no {pattern!r} from {self.proc.args}:\n{self.output}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def replay_upstream(*paths: Path, pace: float = 0) -> Iterator[str]:
    process = Process(
        [
            sys.executable,
            "-m",
            "harmony_filter.tools.replay_upstream",
            "--port",
            "0",
            "--pace",
            str(pace),
            *map(str, paths),
        ],
        env={"PYTHONPATH": str(ROOT / "addon")},
    )
    try:
        yield process.wait_for(r"listening on (http://\S+)").group(1)
    finally:
        process.stop()


def wait_for_flows(directory: Path, count: int = 1, timeout: float = 10) -> list[Path]:
    """The `*.flow` files in `directory` (sorted), once there are `count` of them or `timeout`
    seconds have passed: mitmdump writes a recording after its client has its answer."""
    deadline = time.monotonic() + timeout
    while len(found := sorted(directory.glob("*.flow"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@contextmanager
def mitmdump(
    mode: str, confdir: Path, *args: str, flow_detail: int = 0
) -> Iterator[tuple[int, Process]]:
    """mitmdump with the addon on a free loopback port; yields (port, process), the port of the
    first listener up."""
    process = Process(
        [
            MITMDUMP,
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--mode",
            mode,
            "-s",
            str(ROOT / "addon" / "harmony.py"),
            "--set",
            f"confdir={confdir}",
            "--set",
            f"flow_detail={flow_detail}",
            *args,
        ]
    )
    try:
        port = int(process.wait_for(r"listening at \S*?:(\d+)").group(1))
        yield port, process
    finally:
        process.stop()


@contextmanager
def served_in_thread(handle: Handler, **server_options: Any) -> Iterator[str]:
    """An asyncio server for `handle` on a free loopback port, run by a thread of this process
    (so a test can look at its state); yields its base URL."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0, **server_options))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextmanager
def replay_upstream_in_thread(*paths: Path) -> Iterator[tuple[str, "ReplayUpstream"]]:
    """The replay upstream in this process (its `received` bodies can be inspected); yields
    (base URL, upstream)."""
    from harmony_filter.tools.replay_upstream import ReplayUpstream
    from harmony_filter.tools.replay_upstream import load_recordings

    upstream = ReplayUpstream(load_recordings(paths), pace=0)
    with served_in_thread(upstream.handle) as url:
        yield url, upstream
