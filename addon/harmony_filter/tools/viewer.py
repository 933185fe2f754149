"""The replay viewer: what the filter makes of a recorded exchange now.

    python -m harmony_filter.tools.viewer [--width N] PATH...   (./run.sh replay)

For each chat flow in each recording (a file, or the `*.flow` files of a directory) it shows side
by side: what the upstream sent, raw; what the CURRENT code gives the client (the real addon,
replayed hook by hook); what the client got when the recording was made; and what
NAME.expected.json expects, if there is one. Rows where the current code gives something else are
flagged, so a user who recorded a bug sees at a glance whether it is fixed. Exit status: 1 when
the current code gives some client something other than what it got, 2 when a file cannot be
read, else 0.
"""

import argparse
import json
import sys
import time
import traceback
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any

from mitmproxy import http
from rich.console import Console
from rich.console import Group
from rich.console import RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..proxy.addon import is_chat_request
from ..proxy.addon import parse_json_object
from ..recordings.recording import flow_files
from ..recordings.recording import is_event_stream
from ..recordings.recording import load_flows
from ..recordings.recording import recorded_client_side
from ..recordings.recording import upstream_chunk_times
from ..recordings.recording import upstream_chunks
from .expectations import accepted_answers
from .expectations import is_answer
from .expectations import read_expected
from .judge import FIELDS
from .judge import client_result
from .replay import replay_flow
from .replay_upstream import last_user_text

DID = ("fixes", "repairs", "recoveries", "warnings", "outcome", "log")
"""What the filter did, as flow.metadata["harmony"] has it (and what it logged)."""
ROWS = {
    "status": "status",
    "reasoning": "reasoning",
    "content": "content",
    "tool_calls": "tool calls",
    "finish_reason": "finish reason",
    "other": "no answer",
    "fixes": "request fixes",
    "repairs": "repairs",
    "recoveries": "recoveries",
    "warnings": "warnings",
    "outcome": "outcome",
    "log": "log",
    "note": "note",
}
RECORDED = "what the client got"
HARMONY_TOKEN = r"<\|[a-z_]+\|>"
EXCERPT = 600


@dataclass(frozen=True)
class Side:
    """One column: a response as some party saw it."""

    title: str
    status: int | None
    result: dict[str, Any] | None
    """the judge's shape; None when there is no answer (see `other`)."""
    other: str | None = None
    """Why there is no answer: the error or body text, a crash."""
    did: dict[str, Any] = field(default_factory=dict)
    subject: str = ""
    """How a verdict names this side when it is compared with: `what the client got`, …"""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    """For an expectation: every answer it accepts."""
    note: str | None = None

    def differences(self, now: "Side") -> list[str]:
        """The rows where `now` gives something else than this side."""
        fields = ["status"] if self.status is not None and now.status != self.status else []
        if self.result is None or now.result is None:
            if (self.result is None) != (now.result is None) or self.other not in (None, now.other):
                fields.append("other")
            return fields
        if now.result in (self.accepted or [self.result]):
            return fields
        return fields + [key for key in FIELDS if now.result[key] != self.result[key]]


@dataclass(frozen=True)
class FlowReport:
    label: str
    facts: list[str]
    upstream: Side
    now: Side
    references: list[Side]
    """What the client got when recorded, what the expectation says (where they exist)."""
    differences: dict[str, list[str]]
    """Reference subject -> rows where the current code gives something else."""


def excerpt(body: bytes) -> str:
    text = body.decode(errors="replace").strip()
    return text if len(text) <= EXCERPT else f"{text[:EXCERPT]}… ({len(text)} chars)"


def side_from_body(
    title: str, status: int, body: bytes, event_stream: bool, did: dict[str, Any] | None = None
) -> Side:
    did = {key: value for key, value in (did or {}).items() if key in DID and value}
    if status == 200:
        try:
            return Side(title, status, client_result(body, event_stream), did=did)
        except ValueError as e:
            return Side(title, status, None, f"{e}\n{excerpt(body)}", did)
    return Side(title, status, None, excerpt(body) or "(empty body)", did)


def upstream_side(flow: http.HTTPFlow) -> Side:
    assert flow.response
    body = b"".join(upstream_chunks(flow))
    return side_from_body(
        "upstream sent (raw)", flow.response.status_code, body, is_event_stream(flow.response)
    )


def current_side(flow: http.HTTPFlow) -> Side:
    title = "client gets now"
    try:
        replayed = replay_flow(flow)
    except Exception as e:  # a crash is what this recording shows: say so, go on
        where = traceback.extract_tb(e.__traceback__)[-1]
        crash = f"the filter crashed: {type(e).__name__}: {e}\n(at {where.filename}:{where.lineno})"
        return Side(title, None, None, crash)
    return side_from_body(
        title,
        replayed.status,
        replayed.body,
        replayed.event_stream,
        replayed.info | {"log": replayed.log},
    )


def recorded_side(flow: http.HTTPFlow) -> Side | None:
    client = recorded_client_side(flow)
    if client is None:
        return None
    did = flow.metadata.get("harmony", {})
    side = side_from_body(
        "client got (recorded)", client.status, client.body, client.event_stream, did
    )
    return replace(side, subject=RECORDED)


def expected_side(expected: dict[str, Any], name: str) -> Side | None:
    """None where there is no unambiguous answer: nothing to compare with."""
    notes = [expected.get("note")]
    if expected.get("known_failure"):
        notes.append(f"known failure: {expected['known_failure']}")
    if expected.get("also_accepted"):
        notes.append(f"{len(expected['also_accepted'])} other answer(s) accepted")
    note = "\n".join(filter(None, notes)) or None
    subject = f"what {name} expects"
    if is_answer(expected):
        answers = accepted_answers(expected)
        return Side("expected", 200, answers[0], subject=subject, accepted=answers, note=note)
    if "status" in expected:
        return Side("expected", expected["status"], None, subject=subject, note=note)
    return None


def facts(flow: http.HTTPFlow) -> list[str]:
    """Who asked what, when, and how the upstream answered: enough to find one's session."""
    info = flow.metadata.get("harmony", {})
    request = parse_json_object(flow.request.content) or {}
    recorded = [
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(flow.request.timestamp_start)),
        f"client {info['client']}" if info.get("client") else None,
        f"model {request.get('model')}",
        "stream" if request.get("stream") else "json",
        f"{flow.request.method} {flow.request.pretty_url}",
    ]
    chunks = upstream_chunks(flow)
    times = upstream_chunk_times(flow)
    upstream = f"{len(chunks)} upstream chunk{'s' * (len(chunks) != 1)}"
    if times:
        upstream += f" over {times[-1]:.2f} s"
    tools = [
        (tool.get("function") or {}).get("name", "?")
        for tool in request.get("tools") or []
        if isinstance(tool, dict)
    ]
    asked = [
        f"{len(request.get('messages') or [])} messages",
        f"last user: {json.dumps(last_user_text(request.get('messages')), ensure_ascii=False)}",
        f"tools: {', '.join(tools)}" if tools else "no tools",
    ]
    if "tool_choice" in request:
        asked.append(f"tool_choice: {json.dumps(request['tool_choice'])}")
    lines = [" · ".join(filter(None, recorded)), " · ".join(asked), upstream]
    if info.get("source"):
        lines[-1] += f" · source: {info['source']}"
    if info.get("error"):
        lines.append(f"the flow ended in an error: {info['error']}")
    return lines


def report_flow(flow: http.HTTPFlow, label: str, expected: dict[str, Any] | None) -> FlowReport:
    now = current_side(flow)
    lines = facts(flow)
    references = [side for side in [recorded_side(flow)] if side is not None]
    if expected is not None:
        name = f"{label.removesuffix('.flow')}.expected.json"
        side = expected_side(expected, name)
        if side is not None:
            references.append(side)
        else:
            lines.append(f"{name}: no unambiguous answer ({expected.get('note', 'no note')})")
    return FlowReport(
        label,
        lines,
        upstream_side(flow),
        now,
        references,
        {side.subject: side.differences(now) for side in references},
    )


def report_path(path: Path) -> tuple[list[FlowReport], list[str]]:
    """The reports for one flow file, and notes on the flows left out."""
    flows = load_flows(path)
    chats = [f for f in flows if f.response and is_chat_request(f.request.method, f.request.path)]
    notes = []
    if len(chats) < len(flows):
        notes.append(
            f"{path.name}: {len(flows) - len(chats)} flow(s) left out: no chat "
            "completion request, or no response"
        )
    expected = read_expected(path) if len(flows) == 1 else None
    reports = [
        report_flow(flow, path.name if len(chats) == 1 else f"{path.name} #{number}", expected)
        for number, flow in enumerate(chats, 1)
    ]
    return reports, notes


# -- rendering ----------------------------------------------------------------------------------


def cell(side: Side, row: str) -> Text:
    if row == "status":
        value: Any = side.status
    elif row in ("other", "note"):
        value = getattr(side, row)
    elif row in DID:
        value = side.did.get(row)
    else:
        value = side.result.get(row) if side.result else None
    if value is None or value == [] or value == "":
        return Text("—", style="dim")
    if row == "tool_calls":
        return Text(
            "\n".join(
                f"{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})"
                for call in value
            )
        )
    if isinstance(value, list):
        value = ("\n" if row in ("warnings", "log") else ", ").join(map(str, value))
    text = Text(str(value), style="italic" if row == "reasoning" else "")
    text.highlight_regex(HARMONY_TOKEN, "magenta")
    return text


def render(report: FlowReport) -> RenderableType:
    sides = [report.upstream, report.now, *report.references]
    flagged = {row for rows in report.differences.values() for row in rows}
    table = Table(show_lines=True, expand=True)
    table.add_column("", style="bold", no_wrap=True)
    for side in sides:
        table.add_column(side.title, ratio=1, overflow="fold")
    for row, label in ROWS.items():
        cells = [cell(side, row) for side in sides]
        if all(c.plain == "—" for c in cells):
            continue
        if row in flagged:
            cells[1].stylize("red")
            table.add_row(Text(f"≠ {label}", style="bold red"), *cells)
        else:
            table.add_row(label, *cells)
    return Panel(
        Group(Text("\n".join(report.facts), style="dim"), table, *verdicts(report)),
        title=report.label,
        title_align="left",
    )


def verdicts(report: FlowReport) -> list[Text]:
    if not report.references:
        return [
            Text(
                "Nothing to compare with: the recording holds no record of what the client got "
                "(it was not made with harmony_record_dir) and has no expectation beside it.",
                style="yellow",
            )
        ]
    lines = []
    for side in report.references:
        rows = report.differences[side.subject]
        if rows:
            names = ", ".join(ROWS[row] for row in rows)
            lines.append(
                Text(f"✗ The current code differs from {side.subject}: {names}.", "bold red")
            )
        else:
            lines.append(Text(f"✓ The current code gives {side.subject}.", "green"))
    return lines


def differs_from_recorded_client(report: FlowReport) -> bool:
    return bool(report.differences.get(RECORDED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harmony_filter.tools.viewer",
        description="Replay recordings through the current filter and show, side by side, the "
        "raw upstream response, what the client gets now and what it got when recorded.",
    )
    parser.add_argument(
        "--width", type=int, help="columns (default: the terminal's, or 160 when not a terminal)"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories")
    args = parser.parse_args(argv)
    console = Console(width=args.width or (None if sys.stdout.isatty() else 160))
    status = 0
    for path in flow_files(args.paths):
        try:
            reports, notes = report_path(path)
        except (OSError, ValueError) as e:
            console.print(Text(f"{path}: {e}", style="bold red"))
            status = 2
            continue
        for report in reports:
            console.print(render(report))
            if differs_from_recorded_client(report) and status == 0:
                status = 1
        for note in notes:
            console.print(Text(note, style="dim"))
    return status


if __name__ == "__main__":
    sys.exit(main())
