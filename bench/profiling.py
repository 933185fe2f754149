"""Where the proxy's time goes: py-spy samples a running mitmdump; the samples are summed per
function."""

import asyncio
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

OUR_CODE = "harmony_filter/"
SAMPLE_RATE = 250
TOP = 15


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def profile_during(work: Awaitable[Any], pid: int, output: Path) -> dict[str, Any]:
    """Sample `pid` while `work` runs; py-spy's collapsed stacks go to `output`."""
    command = py_spy()
    if command is None:
        await work
        return {"error": "py-spy is not installed (./run.sh bench installs the bench extra)"}
    spy = subprocess.Popen(
        [command, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format", "raw"]
        + ["--gil", "--output", str(output)],  # --gil: busy time only, not waits for input
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(1)  # attaching
        await work
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        _, errors = spy.communicate(timeout=30)
    if not output.exists():
        return {"error": f"py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}"}
    return summarize(output.read_text())


def summarize(collapsed: str) -> dict[str, Any]:
    """Own samples per function (the innermost frame), and the share spent in the addon."""
    total = ours = 0
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        ours += int(count) if OUR_CODE in stack else 0
        own[_short(stack.rsplit(";", 1)[-1])] += int(count)
    return {
        "samples": total,
        "addon_share": ours / total if total else 0.0,
        "functions": [(name, count / total) for name, count in own.most_common(TOP)],
    }


def _short(frame: str) -> str:
    """`feed (harmony_filter/sse.py:25)` -> `harmony_filter/sse.py:25 feed`."""
    name, _, place = frame.partition(" (")
    return f"{place.rstrip(')').split('site-packages/')[-1]} {name}"
