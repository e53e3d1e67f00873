"""The in-guest half of the VM suite (tools/guest_runner.py + tools/wd_guest_plugin.py),
run here on the host on throw-away test files: per-test records, a hung test killed with
its stack dumped and the run restarted for the tests after it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import guest_runner  # noqa: E402
import wd_guest_plugin  # noqa: E402


def test_format_record() -> None:
    assert wd_guest_plugin.format_record("4,812,5678901,-;WARNING: x\n SUBSYSTEM=y\n") == "[    5.678901] WARNING: x"
    assert wd_guest_plugin.format_record("garbage") == ""


def test_pytest_cmd_loads_the_plugin() -> None:
    cmd = guest_runner.pytest_cmd("/py", ["a.py", "b.py"], Path("/o/r.jsonl"), 30.0)
    assert cmd[:3] == ["/py", "-m", "pytest"]
    assert "wd_guest_plugin" in cmd and "no:cacheprovider" in cmd
    assert "--wd-report=/o/r.jsonl" in cmd and "--wd-test-timeout=30.0" in cmd
    assert cmd[-2:] == ["a.py", "b.py"]


def test_runner_records_results_and_survives_a_hang(tmp_path: Path) -> None:
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import time\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'deliberate'\n"
        "def test_hangs():\n    time.sleep(60)\n"
        "def test_after_hang():\n    pass\n"
    )
    (tests / "test_b.py").write_text("import pytest\ndef test_skip():\n    pytest.skip('not here')\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "guest_runner.py"),
            "--out",
            str(out),
            "--test-timeout",
            "3",
            "--timeout",
            "120",
            str(tests / "test_a.py"),
            str(tests / "test_b.py"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(ln) for ln in (out / "report.jsonl").read_text().splitlines()]
    results = {r["nodeid"].split("::")[-1]: r for r in records if r["event"] == "result"}
    started = [r["nodeid"].split("::")[-1] for r in records if r["event"] == "start"]
    assert results["test_ok"]["outcome"] == "passed"
    assert results["test_bad"]["outcome"] == "failed" and "deliberate" in results["test_bad"]["longrepr"]
    assert "test_hangs" in started and "test_hangs" not in results  # killed: no result
    assert results["test_after_hang"]["outcome"] == "passed"  # the restart ran the rest
    assert results["test_skip"]["outcome"] == "skipped"
    assert started.count("test_ok") == 1, "a restart does not rerun what already ran"
    assert Path(results["test_ok"]["path"]) == (tests / "test_a.py").resolve()
    assert records[-1]["event"] == "session"
    info = json.loads((out / "pytest.json").read_text())
    assert info["runs"] == 2
    assert "test_hangs" in (out / "hang-traceback.txt").read_text()
    assert json.loads((out / "preamble.json").read_text())["modules"] is not None
