"""harmony-filter benchmark: the filter next to plain mitmdump and no proxy at all, on loopback.

    python bench/bench.py [--smoke] [--profile] [--out DIR]     (./run.sh bench [ARGS])
    python bench/bench.py --load [--smoke] [--out DIR]          (./run.sh bench --load)

A loopback upstream (upstream.py, a process of its own) streams gpt-oss turns as llama.cpp without
a reasoning parser does, one token per event, paced events stamped with their send time. The
client (this process) streams them directly, through plain mitmdump (reverse mode, streaming on,
no addon) and through mitmdump with the addon, for one stream and for 50 at once, at a GPU's pace
and at full speed (and, for time to first content, through plain mitmdump holding request bodies
as the addon must: hold_requests.py), and reports per mode: time to first content, per-event
delay, events/s, the proxy's CPU per event and its peak RSS; then whether a stream's memory
grows with its length, and the decoder on its own next to openai-harmony's StreamableParser.
`--profile` also samples the proxy with py-spy under full load.

`--load`: 100 concurrent streams, each with its own marker, through one mitmdump with the addon
(waves of them): does every client get exactly its own stream, and does the proxy's memory stay
level from one wave to the next?

Tables go to the terminal; DIR (default: bench/) gets latest.{json,md,png} or load.{json,md}.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# harmony_filter, also from a plain checkout; the tests' process helpers and fault upstream
sys.path[1:1] = [str(BENCH.parent / "addon"), str(BENCH.parent / "tests")]

import inprocess  # noqa: E402
import report  # noqa: E402
from measure import Scenario  # noqa: E402
from measure import memory_growth  # noqa: E402
from measure import run_scenario  # noqa: E402
from measure import targets  # noqa: E402
from measure import upstream  # noqa: E402
from workload import Tokenizer  # noqa: E402
from workload import named_turn  # noqa: E402

from harmony_filter.harmony.vocab import ensure_vocab  # noqa: E402

MODES = ("direct", "mitmdump", "held", "harmony")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much a run does (the full size must stay well under 3 minutes on 2 cores)."""

    crowd: int = 50  # streams at once
    gpu_pace_us: int = 2000  # 2 ms a token: one stream on a fast GPU
    crowd_pace_us: int = 20000  # 20 ms a token: each of many streams on a batched server
    paced_tokens: int = 60  # one stream at a GPU's pace: time to first content, delays
    paced_rounds: int = 40  # (a millisecond is within the noise of a few: many short ones)
    tool_rounds: int = 6
    crowd_paced_tokens: int = 150
    full_tokens: int = 4000  # one stream at full speed
    full_rounds: int = 8
    crowd_full_tokens: int = 300
    crowd_full_rounds: int = 4
    memory_streams: int = 4  # proxy memory: streams at once, short then long
    memory_short: int = 500
    memory_long: int = 6000
    held_tokens: int = 40000  # in-process: what one stream's rewriter holds along the stream
    decoder_tokens: int = 20000
    decoder_seconds: float = 1.0
    load_streams: int = 100
    load_numbers: int = 200  # numbers in each load answer: an event each
    load_waves: int = 3


SMOKE = Sizes(
    crowd=3,
    gpu_pace_us=100,
    crowd_pace_us=1000,
    paced_tokens=30,
    paced_rounds=1,
    tool_rounds=1,
    crowd_paced_tokens=10,
    full_tokens=100,
    full_rounds=1,
    crowd_full_tokens=30,
    crowd_full_rounds=1,
    memory_streams=1,
    memory_short=20,
    memory_long=60,
    held_tokens=800,
    decoder_tokens=200,
    decoder_seconds=0.01,
    load_streams=5,
    load_numbers=10,
    load_waves=2,
)


def scenarios(s: Sizes) -> list[Scenario]:
    return [
        Scenario("paced 1×", f"answer-{s.paced_tokens}", s.gpu_pace_us, 1, s.paced_rounds, True),
        Scenario("tool call 1×", "tool", s.gpu_pace_us, 1, s.tool_rounds, True),
        Scenario(f"paced {s.crowd}×", f"answer-{s.crowd_paced_tokens}", s.crowd_pace_us, s.crowd),
        Scenario("full 1×", f"answer-{s.full_tokens}", 0, 1, s.full_rounds),
        Scenario(
            f"full {s.crowd}×", f"answer-{s.crowd_full_tokens}", 0, s.crowd, s.crowd_full_rounds
        ),
    ]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "mitmproxy": metadata.version("mitmproxy"),
        "openai_harmony": metadata.version("openai-harmony"),
        "load_average": os.getloadavg(),
    }


async def benchmark(sizes: Sizes, profile: bool) -> dict[str, Any]:
    started = time.monotonic()
    info = machine()
    ensure_vocab()  # openai-harmony's vocabulary from the local cache, never the network
    tokenizer = Tokenizer()
    plan = scenarios(sizes)
    turns = {s.turn for s in plan} | {
        f"answer-{n}" for n in (sizes.memory_short, sizes.memory_long)
    }
    pieces = {turn: named_turn(tokenizer, turn).pieces for turn in turns}
    modes: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="hf-bench-") as tmp:
        turns_file = Path(tmp) / "turns.json"
        turns_file.write_text(json.dumps(pieces, ensure_ascii=False))
        with upstream(turns_file) as upstream_url, targets(MODES, upstream_url) as to:
            await run_scenario(Scenario("warm-up", plan[0].turn, 0, 1, reference=True), to)
            report.progress("proxy memory, short streams then long ones")
            memory = [
                await memory_growth(t, sizes.memory_streams, sizes.memory_short, sizes.memory_long)
                for t in to
                if t.mode in ("mitmdump", "harmony")
            ]
            for scenario in plan:
                report.progress(scenario.name)
                for mode, summary in (await run_scenario(scenario, to)).items():
                    modes[mode][scenario.name] = summary
            profiled = None
            if profile:
                from profiling import profile_during

                report.progress("profiling the addon at full speed (py-spy)")
                work = run_scenario(plan[-1], to[-1:])
                profiled = await profile_during(work, to[-1].pid, Path(tmp) / "py-spy.txt")
    report.progress("in-process: decoders, rewriter, memory held")
    results = {
        "size": "smoke" if sizes == SMOKE else "full",
        "machine": info,
        "sizes": dataclasses.asdict(sizes),
        "modes": modes,
        "first_content_scenario": plan[0].name,
        "memory": memory,
        "in_process": inprocess.measure(
            tokenizer, sizes.decoder_tokens, sizes.decoder_seconds, sizes.held_tokens
        ),
        "profile": profiled,
    }
    results["targets"] = report.targets(results)
    results["seconds"] = time.monotonic() - started
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", action="store_true", help="the load run instead (issue 7)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it all run?")
    parser.add_argument("--profile", action="store_true", help="also sample the addon (py-spy)")
    parser.add_argument("--out", type=Path, default=BENCH, help="where results go (bench/)")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes()
    # A SIGTERM stops us as Ctrl-C does: through the `finally`s that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.load:
        from load import load_run

        results = asyncio.run(load_run(sizes.load_streams, sizes.load_numbers, sizes.load_waves))
        results["machine"] = machine()
        heading, tables, name = report.load_heading(results), report.load_tables(results), "load"
    else:
        results = asyncio.run(benchmark(sizes, args.profile))
        heading, tables, name = (
            report.bench_heading(results),
            report.bench_tables(results),
            "latest",
        )
    report.show(heading, tables)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(report.markdown(heading, tables))
    if not args.load and not report.plot(results, args.out / "latest.png"):
        report.progress("matplotlib (the `bench` extra) is not installed: no latest.png")
    if results.get("profile"):
        report.show_profile(results["profile"])
    if args.load:
        problems = [p for wave in results["waves"] for p in wave["problems"]]
    else:
        problems = report.failures(results)
    for problem in problems:
        print(f"bench: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
