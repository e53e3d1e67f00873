"""pytest plugin loaded INSIDE a guest (`-p wd_guest_plugin`): records, per test, its
outcome, its failure text and the kernel log lines it caused, as JSON lines the
host-side runner (tests/qemu/conftest.py) reads back.  Standard library + pytest only."""

from __future__ import annotations

import faulthandler
import json
import os
from pathlib import Path
from typing import Any

import pytest


class KmsgReader:
    """Non-blocking reader of /dev/kmsg starting at the current end of the log."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.fd: int | None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def drain(self) -> list[str]:
        out: list[str] = []
        if self.fd is None:
            return out
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten before we read them
                out.append("[wd] kmsg: some records were lost (ring buffer wrapped)")
                continue
            except OSError:
                break
            if not rec:
                break
            out.append(format_record(rec.decode(errors="replace")))
        return out


def format_record(rec: str) -> str:
    """'6,1234,5678901,-;text\\n KEY=v' -> '[    5.678901] text'."""
    head, _, rest = rec.partition(";")
    text = rest.split("\n", 1)[0]
    parts = head.split(",")
    try:
        usec = int(parts[2])
        return f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {text}"
    except (IndexError, ValueError):
        return text


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
    return {"nodeid": nodeid, "outcome": "passed", "longrepr": "", "kmsg": [], "duration": 0.0}


class Recorder:
    """Appends one JSON line per event to the report, flushed at once, so the host learns
    which test was running even when the guest dies in the middle of it."""

    def __init__(self, report: Path, test_timeout: float, rootpath: Path) -> None:
        self.rootpath = rootpath
        self.report = report.open("a", buffering=1)
        self.kmsg = KmsgReader()
        self.tests: dict[str, dict[str, Any]] = {}
        self.outside: list[str] = []
        self.test_timeout = test_timeout
        # pytest captures fd 2 during a test, so a hang's stack dump goes to its own file
        self.hang_dump = (report.parent / "hang-traceback.txt").open("a")

    def emit(self, **rec: Any) -> None:
        if "nodeid" in rec:  # the file as an absolute path: nodeids are relative to rootdir
            rec["path"] = str((self.rootpath / rec["nodeid"].split("::", 1)[0]).resolve())
        self.report.write(json.dumps(rec) + "\n")
        self.report.flush()
        os.fsync(self.report.fileno())

    @pytest.hookimpl
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """On a restart after a hung test ended the process: skip what already started."""
        done = started_nodeids(Path(config.getoption("--wd-report")))
        if done:
            keep = [i for i in items if i.nodeid not in done]
            config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
            items[:] = keep

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.outside += self.kmsg.drain()
        self.tests[nodeid] = _new(nodeid)
        self.emit(event="start", nodeid=nodeid)
        if self.test_timeout > 0:
            # a hung test: dump every thread's stack and end the process (the host then
            # reports this test as hung, with the dump in the output)
            self.hang_dump.write(f"--- {nodeid} did not finish within {self.test_timeout:.0f}s ---\n")
            self.hang_dump.flush()
            faulthandler.dump_traceback_later(self.test_timeout, exit=True, file=self.hang_dump)

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
        faulthandler.cancel_dump_traceback_later()
        t = self.tests.pop(nodeid, _new(nodeid))
        t["kmsg"] += self.kmsg.drain()
        self.emit(event="result", **t)

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            t = _new(f"{report.nodeid}::<collect>")
            t.update(outcome="error", longrepr=report.longreprtext, kmsg=self.kmsg.drain())
            self.emit(event="result", **t)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.outside += self.kmsg.drain()
        self.emit(event="session", exitstatus=int(exitstatus), kmsg=self.outside)
        self.report.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--wd-report", default=None, help="append per-test results + kernel log (JSON lines) here")
    parser.addoption("--wd-test-timeout", type=float, default=0.0, help="end the run when one test takes longer")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--wd-report")
    if path:
        timeout = float(config.getoption("--wd-test-timeout"))
        config.pluginmanager.register(Recorder(Path(path), timeout, Path(config.rootpath)), "wd-recorder")
