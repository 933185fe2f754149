"""The benchmark's verdicts, and its tables for the terminal (rich) and the README (markdown)."""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

CPU_LIMIT_US = 25.0
"""The addon may add this much proxy CPU per event over plain streaming mitmdump, ..."""
THROUGHPUT_SHARE = 0.9
"""... must keep this share of plain mitmdump's events/s at full speed, ..."""
TTFC_LIMIT_MS = 1.0
"""... may add this much to the time to first content, ..."""
HELD_GROWTH_LIMIT_KIB = 1.0
"""... and what one stream holds must not grow with its length: over the second half of a long
stream (past the 64 KiB of reasoning the filter keeps for re-injection) it may grow by at most
this much (a leak of one small object per event would show as hundreds of KiB)."""

console = Console() if sys.stdout.isatty() else Console(width=150)


def progress(what: str) -> None:
    print(f"bench: {what} …", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    text_columns: int = 1
    """Leading columns that hold text (left-aligned); the rest are numbers."""


def show(heading: str, tables: list[Table]) -> None:
    console.print(f"[bold]{heading}[/]")
    for table in tables:
        rich = RichTable(title=table.title, title_justify="left")
        for position, column in enumerate(table.columns):
            rich.add_column(column, justify="left" if position < table.text_columns else "right")
        for row in table.rows:
            rich.add_row(*row)
        console.print(rich)
        if table.note:
            console.print(f"[dim]{table.note}[/]")


def markdown(heading: str, tables: list[Table]) -> str:
    parts = [heading]
    for table in tables:
        align = ["---" if i < table.text_columns else "--:" for i in range(len(table.columns))]
        lines = [f"**{table.title}**", "", _md_row(table.columns), _md_row(align)]
        lines += [_md_row(row) for row in table.rows]
        if table.note:
            lines += ["", f"<sub>{table.note}</sub>"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def machine_line(m: dict[str, Any]) -> str:
    load = ", ".join(f"{a:.1f}" for a in m["load_average"])
    return (
        f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, mitmproxy {m['mitmproxy']}, "
        f"openai-harmony {m['openai_harmony']}; load average {load} (1/5/15 min, at the start)"
    )


# -- the main benchmark ---------------------------------------------------------------------


def row(results: dict[str, Any], mode: str, scenario: str) -> dict[str, Any]:
    return results["modes"][mode][scenario]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, the addon against plain mitmdump. CPU and events/s are judged at
    full speed, where the proxy is busy all the time and its CPU per event is the work per event
    (at a GPU's pace it also pays for waking up per event: those numbers are in the table)."""
    verdicts = []
    plain, ours = results["modes"]["mitmdump"], results["modes"]["harmony"]
    for name, theirs in plain.items():
        if theirs["pace_us"] or theirs["turn"].startswith("tool"):
            continue
        added = ours[name]["proxy_cpu_us_per_event"] - theirs["proxy_cpu_us_per_event"]
        verdicts.append(
            _verdict(
                f"proxy CPU added per event, {name}",
                added,
                "µs",
                f"≤ {CPU_LIMIT_US:g} µs",
                added <= CPU_LIMIT_US,
            )
        )
        kept = ours[name]["events_per_s"] / theirs["events_per_s"]
        limit = f"≥ {THROUGHPUT_SHARE:.0%}"
        verdicts.append(
            _verdict(f"events/s kept, {name}", kept * 100, "%", limit, kept >= THROUGHPUT_SHARE)
        )
    first = results["first_content_scenario"]
    added = ours[first]["path_ms"] - plain[first]["path_ms"]
    verdicts.append(
        _verdict(
            f"time to first content added, {first}",
            added,
            "ms",
            f"≤ {TTFC_LIMIT_MS:g} ms",
            added <= TTFC_LIMIT_MS,
        )
    )
    held = results["modes"]["held"][first]["path_ms"] - plain[first]["path_ms"]
    verdicts[-1]["parts"] = {"held": held, "filter": added - held}
    held = results["in_process"]["held"]
    middle, last = held[len(held) // 2 - 1], held[-1]
    growth = (last["bytes"] - middle["bytes"]) / 1024
    verdicts.append(
        _verdict(
            f"memory one stream holds, {middle['events']:,} → {last['events']:,} events",
            growth,
            "KiB",
            f"≤ {HELD_GROWTH_LIMIT_KIB:g} KiB",
            growth <= HELD_GROWTH_LIMIT_KIB,
        )
    )
    return verdicts


def _verdict(name: str, value: float, unit: str, limit: str, ok: bool) -> dict[str, Any]:
    return {"target": name, "value": value, "unit": unit, "limit": limit, "ok": ok}


def bench_tables(results: dict[str, Any]) -> list[Table]:
    modes, sizes = results["modes"], results["sizes"]
    streaming = []
    for name in modes["direct"]:
        for mode in [mode for mode in modes if name in modes[mode]]:
            r = row(results, mode, name)
            failed = len(r["errors"]) + r["missing_first_content"]
            paced = bool(r["pace_us"])
            streaming.append(
                [
                    name if mode == "direct" else "",
                    mode + (f" ({failed} failed: {r['errors']})" if failed else ""),
                    num(r["ttfc_ms"]) if paced else "",
                    num(r["path_ms"], 2) if paced else "",
                    num(r["delay_ms_p50"], 2) if paced else "",
                    num(r["delay_ms_p99"], 2) if paced else "",
                    num(r["events_per_s"], 0),
                    num(r["proxy_cpu_us_per_event"]) if mode != "direct" else "",
                    num(r["proxy_peak_rss_mib"]) if mode != "direct" else "",
                ]
            )
    memory = [
        [
            m["mode"],
            str(m["streams"]),
            num(m["peak_short_mib"]),
            num(m["peak_long_mib"]),
            num(m["peak_long_mib"] - m["peak_short_mib"]),
        ]
        for m in results["memory"]
    ]
    local = results["in_process"]
    decoders = [
        [label, num(local[key]["mb_per_s"], 2), num(local[key]["us_per_token"], 2)]
        for key, label in (
            ("harmony_decoder", "harmony-filter HarmonyDecoder (text pieces)"),
            ("streamable_parser", "openai-harmony StreamableParser (token ids)"),
            ("stream_rewriter", "harmony-filter StreamRewriter (SSE event in → SSE out)"),
        )
    ]
    verdicts = [
        [
            v["target"],
            f"{v['value']:,.2f} {v['unit']}",
            v["limit"],
            "met" if v["ok"] else "MISSED",
        ]
        for v in results["targets"]
    ]
    return [
        Table(
            "Streaming on loopback: direct, plain mitmdump (and holding requests), mitmdump with "
            "harmony-filter",
            [
                "scenario",
                "mode",
                "TTFC ms",
                "path ms",
                "delay p50 ms",
                "delay p99 ms",
                "events/s",
                "proxy CPU µs/event",
                "proxy peak RSS MiB",
            ],
            streaming,
            f"paced: the upstream sends an event every {sizes['gpu_pace_us'] / 1000:g} ms (1 "
            f"stream) or {sizes['crowd_pace_us'] / 1000:g} ms ({sizes['crowd']} streams); full: as "
            "fast as it can. held: plain mitmdump holding each request body until it is whole, as "
            "any addon that edits requests must (bench/hold_requests.py). "
            "TTFC: request sent → first character of the final answer (tool "
            "turn: the whole call), median. path: TTFC minus the upstream's own time, i.e. what "
            "the way there and back costs. delay: arrival − the upstream's send stamp, per event "
            "(direct: the baseline). events/s: upstream events delivered per second of wall "
            "time; proxy CPU: the proxy's CPU time (/proc schedstat) per upstream event; both "
            "from the best of the rounds the modes take in turn (the machine's other work only "
            "ever makes them worse).",
            text_columns=2,
        ),
        Table(
            "Memory per stream does not grow with the stream's length",
            [
                "proxy",
                "streams at once",
                f"peak RSS MiB, {sizes['memory_short']:,} events each",
                f"{sizes['memory_long']:,} events each",
                "difference MiB",
            ],
            memory,
            "Short streams, then long ones, at full speed, through proxies that have seen only a "
            "warm-up: plain mitmdump shows what mitmproxy and the allocator add by themselves. "
            "Exactly, in-process (bytes reachable from one stream's rewriter): "
            + ", ".join(_held(point) for point in local["held"])
            + "; the growth early on is the reasoning kept for re-injection, up to its 64 KiB cap.",
        ),
        Table(
            f"Decoding in-process, one token per call ({local['tokens']:,} tokens, "
            f"{local['text_mb']:.2f} MB of Harmony text)",
            ["", "MB/s", "µs/token"],
            decoders,
        ),
        Table(
            "Targets: harmony-filter against plain streaming mitmdump",
            ["target", "measured", "limit", "result"],
            verdicts,
            _first_content_parts(results["targets"]),
        ),
    ]


def _first_content_parts(verdicts: list[dict[str, Any]]) -> str:
    parts = next(v["parts"] for v in verdicts if "parts" in v)
    return (
        f"Time to first content: {parts['held']:.2f} ms of it is mitmproxy holding the request "
        "body until it is whole, so that a hook can edit it (the `held` reference: plain "
        f"mitmdump doing only that, bench/hold_requests.py); the filter adds {parts['filter']:.2f}"
        " ms to that."
    )


def _held(point: dict[str, int]) -> str:
    return f"{point['bytes'] / 1024:.1f} KiB after {point['events']:,} events"


def bench_heading(results: dict[str, Any]) -> str:
    return (
        f"harmony-filter benchmark ({results['size']}, {results['seconds']:.0f} s): "
        f"{machine_line(results['machine'])}"
    )


# -- the load run ---------------------------------------------------------------------------


def load_tables(results: dict[str, Any]) -> list[Table]:
    rows = [
        [
            str(w["wave"]),
            f"{w['exact']} / {w['streams']}",
            str(w["mixed"]),
            str(w["incomplete"]),
            f"{w['chars_lost']:,}",
            num(w["seconds"]),
            num(w["events_per_s"], 0),
            num(w["rss_before_mib"]),
            num(w["rss_peak_mib"]),
            num(w["rss_after_mib"]),
        ]
        for w in results["waves"]
    ]
    return [
        Table(
            f"{results['streams']} concurrent streams through one mitmdump with harmony-filter",
            [
                "wave",
                "exactly its own stream",
                "mixed",
                "incomplete",
                "chars lost",
                "seconds",
                "events/s",
                "RSS before MiB",
                "peak MiB",
                "after MiB",
            ],
            rows,
            "Each stream has its own marker and numbers; a client counts only if it got exactly "
            "its own answer and reasoning, complete, in order, ending in [DONE]. mixed: another "
            "stream's marker showed up. RSS after: 1 s after the wave.",
        )
    ]


def failures(results: dict[str, Any]) -> list[str]:
    """Streams that went wrong in a benchmark run: its numbers would mean nothing."""
    found = [
        f"{mode}, {name}: {r['errors'] or ''} {r['missing_first_content']} without first content"
        for mode, scenarios in results["modes"].items()
        for name, r in scenarios.items()
        if r["errors"] or r["missing_first_content"]
    ]
    return found + [f"{m['mode']}, memory: {m['errors']}" for m in results["memory"] if m["errors"]]


def show_profile(profile: dict[str, Any]) -> None:
    if "error" in profile:
        console.print(f"[yellow]profile: {profile['error']}[/]")
        return
    functions = [[name, f"{share:.1%}"] for name, share in profile["functions"]]
    title = (
        f"Where the proxy's time goes at full speed (py-spy, {profile['samples']:,} samples, "
        f"{profile['addon_share']:.0%} of them in harmony_filter)"
    )
    show("", [Table(title, ["innermost function", "share of samples"], functions)])


def load_heading(results: dict[str, Any]) -> str:
    return (
        f"harmony-filter load run ({results['events_per_stream']} events a stream, one every "
        f"{results['pace_s'] * 1000:g} ms): {machine_line(results['machine'])}"
    )


# -- plot -----------------------------------------------------------------------------------

COLORS = {"direct": "#9e9e9e", "mitmdump": "#1f77b4", "harmony": "#ff7f0e"}


def plot(results: dict[str, Any], path: Path) -> bool:
    """Four panels as a PNG; False when matplotlib (the `bench` extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    modes = {mode: runs for mode, runs in results["modes"].items() if mode in COLORS}
    names = list(modes["direct"])
    full = [n for n in names if not modes["direct"][n]["pace_us"]]
    paced = [n for n in names if n not in full]
    proxies = [m for m in modes if m != "direct"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    _bars(
        axes[0][0],
        "Events/s at full speed (higher is better)",
        full,
        {m: [row(results, m, n)["events_per_s"] for n in full] for m in modes},
    )
    _bars(
        axes[0][1],
        "Proxy CPU µs per event (lower is better)",
        names,
        {m: [row(results, m, n)["proxy_cpu_us_per_event"] for n in names] for m in proxies},
    )
    ax = axes[1][0]
    _bars(
        ax, "", paced, {m: [row(results, m, n)["delay_ms_p99"] for n in paced] for m in modes}, 0.3
    )
    _bars(
        ax,
        "Per-event delay, paced, ms (p50; light: p99)",
        paced,
        {m: [row(results, m, n)["delay_ms_p50"] for n in paced] for m in modes},
    )
    local = results["in_process"]
    ax = axes[1][1]
    ax.bar(
        ["HarmonyDecoder", "StreamableParser\n(openai-harmony)", "StreamRewriter\n(SSE → SSE)"],
        [local[k]["mb_per_s"] for k in ("harmony_decoder", "streamable_parser", "stream_rewriter")],
        color=["#ff7f0e", "#2ca02c", "#d62728"],
    )
    ax.set_title("In-process MB/s of Harmony text (higher is better)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    m = results["machine"]
    fig.suptitle(
        f"harmony-filter benchmark: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"mitmproxy {m['mitmproxy']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _bars(
    ax: Any, title: str, labels: list[str], series: dict[str, list[float]], alpha: float = 1.0
) -> None:
    width = 0.8 / len(series)
    for i, (mode, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(
            xs, values, width, color=COLORS[mode], alpha=alpha, label=mode if alpha == 1 else None
        )
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
