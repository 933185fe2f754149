"""A test-only mitmproxy script (`mitmdump -s addon/harmony.py -s tests/state_probe.py`):
`GET /test-probe/state` answers with what the HarmonyFilter of this mitmdump holds, so a test can
check from outside that faults and disconnects leave nothing behind. `probed_mitmdump` starts
such a mitmdump for a test and reads the probe.

The answer: the size of each of the addon's dicts, lists and sets (its per-flow tables), of its
reasoning cache and that cache's bound, and how many of the flows this mitmdump has seen are
still alive (the probe's own flow counts one).
"""

import gc
import json
import re
import time
import urllib.request
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import ctx
from mitmproxy import http

PATH = "/test-probe/state"


def flow_tables(addon: object) -> dict[str, int]:
    """How many entries each of the addon's tables holds (per-flow state must not stay)."""
    return {
        name: len(value)
        for name, value in vars(addon).items()
        if isinstance(value, dict | list | set)
    }


class StateProbe:
    def __init__(self) -> None:
        self.flows: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.flows.add(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.path != PATH or flow.response is not None:
            return
        harmony = ctx.master.addons.get("harmonyfilter")
        tables = flow_tables(harmony)
        if len(self.flows) > 1:
            gc.collect()  # a flow in a reference cycle waits for the collector
        state = {
            "tables": tables,
            "reasoning_cache": len(harmony.reasoning_cache),
            "reasoning_cache_bound": harmony.reasoning_cache.max_entries,
            "live_flows": len(self.flows),
        }
        flow.response = http.Response.make(
            200, json.dumps(state), {"content-type": "application/json"}
        )


addons = [StateProbe()]


@dataclass
class ProbedProxy:
    """A running mitmdump with the addon and this probe, from the test's side."""

    base_url: str
    """For the openai SDK: `http://127.0.0.1:PORT/v1`."""
    port: int
    process: Any  # procs.Process

    def lines_since(self, start: int, pattern: str, timeout: float = 5) -> list[str]:
        """mitmdump's output lines from `start` on that match `pattern` (waiting for one)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.process.lines[start:] if re.search(pattern, line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{PATH}", timeout=10) as r:
            return json.load(r)

    def settled_state(self, timeout: float = 5) -> dict[str, Any]:
        """The addon's state once every flow that is gone has been let go (or the last seen)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if is_idle(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


def is_idle(state: dict[str, Any]) -> bool:
    """No per-flow table holds anything and no flow but the probe's own is alive."""
    return not any(state["tables"].values()) and state["live_flows"] <= 1


@contextmanager
def probed_mitmdump(upstream_url: str, confdir: Path, *args: str) -> Iterator[ProbedProxy]:
    from procs import mitmdump  # the test side only: mitmdump itself never needs it

    with mitmdump(f"reverse:{upstream_url}", confdir, "-s", __file__, *args) as (port, process):
        yield ProbedProxy(f"http://127.0.0.1:{port}/v1", port, process)
