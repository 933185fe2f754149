"""Where the recordings are, for the tests that use them (what a client makes of a response is
harmony_filter.tools.judge; what each recording expects, harmony_filter.tools.expectations)."""

from pathlib import Path

RECORDINGS_DIR = Path(__file__).resolve().parent.parent / "recordings"


def recording_paths() -> list[Path]:
    return sorted(RECORDINGS_DIR.glob("*.flow"))
