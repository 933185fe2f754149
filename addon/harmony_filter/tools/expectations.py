"""The expected result kept beside each recording, and regenerating it on purpose.

`NAME.expected.json` says what a client must get once the filter has run on `NAME.flow`:
the judge's shape (`content`, `reasoning`, `tool_calls`, `finish_reason`), or
`{"status": N, "error": true}` for an upstream error passed on, or `{"expected": null, "note"}`
where no unambiguous answer exists. Hand-written keys survive regeneration: `note`,
`also_accepted` (other acceptable answers, same shape) and `known_failure` (why the filter does
not give the expected answer yet: the test suite expects it to fail, and regeneration leaves the
file alone).

    python -m harmony_filter.tools.expectations [--check] [PATH...]   (./run.sh record-expectations)

writes what the current code gives for every recording under PATH (default: recordings/) whose
expectation is missing or no longer met, and prints what changed. The tests only compare; they
never write.
"""

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..recordings.recording import flow_files
from ..recordings.recording import load_recording
from .judge import FIELDS
from .judge import client_result
from .replay import Replayed
from .replay import replay_flow

KEPT_KEYS = ("also_accepted", "note")
"""Hand-written keys of an answer that a regenerated answer keeps."""


def expected_path(recording: Path) -> Path:
    return recording.with_name(recording.name.removesuffix(".flow") + ".expected.json")


def read_expected(recording: Path) -> dict[str, Any] | None:
    path = expected_path(recording)
    return json.loads(path.read_text()) if path.exists() else None


def is_answer(expected: dict[str, Any]) -> bool:
    return "status" not in expected and expected.get("expected", ...) is not None


def accepted_answers(expected: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers an expectation accepts, each in the judge's shape."""
    answers = [expected, *expected.get("also_accepted", [])]
    return [{key: answer[key] for key in FIELDS} for answer in answers]


def expectation_of(replayed: Replayed) -> dict[str, Any]:
    """The expectation that the current code meets."""
    if replayed.status != 200:
        return {"status": replayed.status, "error": True}
    try:
        return client_result(replayed.body, replayed.event_stream)
    except ValueError as e:
        return {"expected": None, "note": f"the filter's answer is no chat completion: {e}"}


def meets(expected: dict[str, Any], current: dict[str, Any]) -> bool:
    if is_answer(expected):
        return is_answer(current) and current in accepted_answers(expected)
    return {k: expected.get(k) for k in ("status", "error")} == {
        k: current.get(k) for k in ("status", "error")
    }


@dataclass(frozen=True)
class Update:
    recording: Path
    verdict: str
    """`new`, `changed`, `unchanged` or `kept` (no unambiguous answer, or a known failure)."""
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    """What to write (None: nothing)."""
    current: dict[str, Any]
    """What the current code gives."""


def regenerate(recording: Path) -> Update:
    """What regenerating this recording's expectation would do (nothing is written)."""
    current = expectation_of(replay_flow(load_recording(recording)))
    old = read_expected(recording)
    if old is None:
        return Update(recording, "new", None, current, current)
    if old.get("expected", ...) is None or old.get("known_failure"):
        return Update(recording, "kept", old, None, current)
    if meets(old, current):
        return Update(recording, "unchanged", old, None, current)
    new = dict(current)
    if is_answer(old) and is_answer(current):
        new |= {key: old[key] for key in KEPT_KEYS if key in old}
    return Update(recording, "changed", old, new, current)


def write(update: Update) -> None:
    assert update.new is not None
    text = json.dumps(update.new, indent=2, ensure_ascii=False) + "\n"
    expected_path(update.recording).write_text(text)


def short(value: Any, limit: int = 90) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} chars)"


def describe(update: Update) -> list[str]:
    """A few lines for a person reviewing the change."""
    name = expected_path(update.recording).name
    lines = [f"{name}: {update.verdict}"]
    old, current, new = update.old or {}, update.current, update.new or {}
    if update.verdict == "new":
        lines += [f"    {key}: {short(value)}" for key, value in current.items()]
    elif update.verdict == "changed":
        for key in dict.fromkeys([*old, *current]):
            if key not in KEPT_KEYS and old.get(key) != current.get(key):
                lines.append(f"    {key}: {short(old.get(key))} -> {short(current.get(key))}")
        lines += [f"    {key} kept: {short(old[key])}" for key in KEPT_KEYS if key in new]
    elif update.verdict == "kept" and old.get("known_failure"):
        state = "now met: remove known_failure" if meets(old, current) else "still failing"
        lines[0] += f" (known failure, {state})"
    elif update.verdict == "kept":
        lines[0] += " (no unambiguous answer)"
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harmony_filter.tools.expectations",
        description="Write NAME.expected.json beside each recording from what the current code "
        "gives, where it is missing or no longer met.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if anything would change"
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="recordings or directories"
    )
    args = parser.parse_args(argv)
    recordings = flow_files(args.paths or [Path("recordings")])
    missing = [str(path) for path in recordings if not path.exists()]
    if missing:
        parser.exit(2, f"expectations: {', '.join(missing)}: no such file or directory\n")
    updates = [regenerate(recording) for recording in recordings]
    counts = Counter(update.verdict for update in updates)
    for update in updates:
        if update.verdict != "unchanged":
            print("\n".join(describe(update)))
        if update.new is not None and not args.check:
            write(update)
    pending = counts["new"] + counts["changed"]
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    print(f"{len(updates)} recordings: {summary or 'none'}.")
    if pending and args.check:
        print("(--check: nothing written)")
        return 1
    if pending:
        print("Review the change (git diff -- '*.expected.json'), then commit it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
