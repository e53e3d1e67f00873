"""pytest plugin loaded INSIDE a guest (`-p wd_guest_plugin`, by tools/guest_runner.py):
records, per test, its outcome, its failure text and its time limit as JSON lines the
host (tests/qemu/conftest.py, tools/verdict.py) reads back, and writes a marker into the
kernel log where each test starts and ends, so the host can give each test the kernel
lines it caused from the whole log the guest saves.  Standard library + pytest only.

Time limits: --wd-test-timeout seconds per test (guest_runner enforces them from outside
this process), or the `slow` marker's: `@pytest.mark.slow` (SLOW_TIMEOUT seconds) or
`@pytest.mark.slow(seconds)`.  $WD_TIMEOUT_SCALE (set by guest_runner --timeout-scale)
multiplies every limit (a debug kernel runs several times slower).
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import time
from pathlib import Path
from typing import IO, Any

import guest_session as gs
import pytest

SLOW_TIMEOUT = 600.0


def test_timeout(item: pytest.Item, default: float, scale: float = 1.0) -> float:
    """The limit of one test: its `slow` marker's, else the default; 0 means none."""
    marker = item.get_closest_marker("slow")
    limit = default
    if marker is not None:
        limit = float(marker.args[0]) if marker.args else float(marker.kwargs.get("seconds", SLOW_TIMEOUT))
    return limit * scale


def started_nodeids(report: Path) -> set[str]:
    out: set[str] = set()
    if report.exists():
        for line in report.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "start":
                out.add(rec["nodeid"])
    return out


def _new(nodeid: str) -> dict[str, Any]:
    return {"nodeid": nodeid, "outcome": "passed", "longrepr": "", "duration": 0.0}


class Recorder:
    """Appends one JSON line per event to the report, flushed and synced at once, so the
    host learns which test was running even when the guest dies in the middle of it."""

    def __init__(self, report: Path, test_timeout: float, scale: float) -> None:
        self.report: IO[str] = report.open("a", buffering=1)
        self.tests: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, float] = {}
        self.test_timeout = test_timeout
        self.scale = scale
        # guest_runner sends SIGUSR1 to a test past its limit: every thread's stack, here
        self.hang_dump: IO[str] = (report.parent / "hang-traceback.txt").open("a")
        faulthandler.register(signal.SIGUSR1, file=self.hang_dump, all_threads=True)

    def emit(self, **rec: Any) -> None:
        self.report.write(json.dumps(rec) + "\n")
        self.report.flush()
        os.fsync(self.report.fileno())

    def mark(self, text: str) -> str:
        """The marker into the kernel log; '' or why not (then the host finds no window
        for the test in the log and fails it: a splat must not pass unseen)."""
        return gs.mark(text)

    @pytest.hookimpl
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Limits per test; on a restart after a crash, skip what already started."""
        done = started_nodeids(Path(config.getoption("--wd-report")))
        if done:
            config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
            items[:] = [i for i in items if i.nodeid not in done]
        self.limits = {i.nodeid: test_timeout(i, self.test_timeout, self.scale) for i in items}

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.tests[nodeid] = _new(nodeid)
        err = self.mark(f"{gs.MARK_TEST_START}{nodeid}")
        limit = self.limits.get(nodeid, self.test_timeout * self.scale)
        self.hang_dump.write(f"--- {nodeid} (limit {limit:.0f}s) ---\n")
        self.hang_dump.flush()
        self.emit(event="start", nodeid=nodeid, timeout=limit, t=time.monotonic(), mark_error=err)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        t = self.tests.setdefault(report.nodeid, _new(report.nodeid))
        t["duration"] += report.duration
        if report.failed:
            t["outcome"] = "failed" if report.when == "call" else "error"
            t["longrepr"] += f"[{report.when}] {report.longreprtext}\n"
            for name, content in report.sections:
                t["longrepr"] += f"--- {name} ---\n{content}\n"
        elif report.skipped and t["outcome"] == "passed":
            t["outcome"] = "skipped"
            t["longrepr"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else report.longreprtext

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        t = self.tests.pop(nodeid, _new(nodeid))
        t["mark_error"] = self.mark(f"{gs.MARK_TEST_END}{nodeid}")
        self.emit(event="result", **t)

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            t = _new(f"{report.nodeid}::<collect>")
            t.update(outcome="error", longrepr=report.longreprtext)
            self.emit(event="result", **t)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.emit(event="session", exitstatus=int(exitstatus))
        self.report.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--wd-report", default=None, help="append per-test results (JSON lines) here")
    parser.addoption("--wd-test-timeout", type=float, default=0.0, help="seconds per test unless marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"slow(seconds={SLOW_TIMEOUT:.0f}): a known-slow test; its time limit instead of the default"
    )
    path = config.getoption("--wd-report")
    if path:
        timeout = float(config.getoption("--wd-test-timeout"))
        scale = float(os.environ.get("WD_TIMEOUT_SCALE", "1") or 1)
        config.pluginmanager.register(Recorder(Path(path), timeout, scale), "wd-recorder")
