"""`./run.sh bench` and `./run.sh bench --load` at their smallest size: both go end to end
through real processes (the bench upstream, plain mitmdump, the same holding requests, mitmdump
with the addon), every stream arrives whole through every mode, and the results are written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, str(ROOT / "bench" / "bench.py"), "--smoke"]
PIPES = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": ROOT}


def test_benchmark_and_load_run_end_to_end(tmp_path: Path) -> None:
    # Side by side: each spends most of its time starting mitmdump.
    bench = subprocess.Popen([*BENCH, "--out", str(tmp_path)], **PIPES)
    load = subprocess.Popen([*BENCH, "--load", "--out", str(tmp_path)], **PIPES)
    bench_out, bench_err = bench.communicate(timeout=120)
    load_out, load_err = load.communicate(timeout=120)
    assert bench.returncode == 0, bench_err[-3000:]
    assert load.returncode == 0, load_err[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert list(results["modes"]) == ["direct", "mitmdump", "held", "harmony"]
    for mode, scenarios in results["modes"].items():
        # the reference that holds requests: only where time to first content is measured
        assert list(scenarios)[:2] == ["paced 1×", "tool call 1×"]
        assert len(scenarios) == (2 if mode == "held" else 5)
        for name, row in scenarios.items():
            where = f"{mode}, {name}"
            assert row["errors"] == [] and row["missing_first_content"] == 0, where
            # Every event arrived (the filter's fewer: it sends no special tokens, and a tool
            # call once it is whole), paced ones with their stamps (the filter keeps them).
            assert row["upstream_events"] > 0, where
            if mode == "harmony":
                assert 0 < row["received_events"] < row["upstream_events"], where
            else:
                assert row["received_events"] == row["upstream_events"], where
            assert row["ttfc_ms"] > 0, where
            if row["pace_us"]:
                assert row["path_ms"] is not None and row["delay_ms_p50"] >= 0, where
            if mode != "direct":
                assert row["proxy_cpu_us_per_event"] > 0 and row["proxy_peak_rss_mib"] > 10, where
    assert [m["mode"] for m in results["memory"]] == ["mitmdump", "harmony"]
    held = [point["events"] for point in results["in_process"]["held"]]
    assert held == sorted(held) and len(held) == 4
    assert len(results["targets"]) == 6
    first_content = results["targets"][-2]
    assert sum(first_content["parts"].values()) == pytest.approx(first_content["value"])
    assert "of it is mitmproxy holding the request body" in (tmp_path / "latest.md").read_text()
    assert "Targets: harmony-filter against plain streaming mitmdump" in bench_out
    assert "| paced 1× | direct |" in (tmp_path / "latest.md").read_text()

    waves = json.loads((tmp_path / "load.json").read_text())["waves"]
    assert [(w["exact"], w["mixed"], w["chars_lost"]) for w in waves] == [(5, 0, 0)] * 2
    assert all(w["rss_after_mib"] > 10 for w in waves)
    assert "exactly its own stream" in load_out
