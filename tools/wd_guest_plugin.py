"""pytest plugin loaded INSIDE a guest (`-p wd_guest_plugin`): records, per test, its
outcome, its failure text and the kernel log lines it caused, into a JSON report the
host-side runner (tests/qemu/conftest.py) reads back.  Standard library only."""

from __future__ import annotations

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


class Recorder:
    def __init__(self, report: Path) -> None:
        self.report = report
        self.kmsg = KmsgReader()
        self.tests: dict[str, dict[str, Any]] = {}
        self.outside: list[str] = []

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.outside += self.kmsg.drain()
        self.tests.setdefault(nodeid, {"nodeid": nodeid, "outcome": "passed", "longrepr": "", "kmsg": [], "duration": 0.0})

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        t = self.tests.setdefault(
            report.nodeid, {"nodeid": report.nodeid, "outcome": "passed", "longrepr": "", "kmsg": [], "duration": 0.0}
        )
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
        if nodeid in self.tests:
            self.tests[nodeid]["kmsg"] += self.kmsg.drain()

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.tests[f"{report.nodeid}::<collect>"] = {
                "nodeid": f"{report.nodeid}::<collect>",
                "outcome": "error",
                "longrepr": report.longreprtext,
                "kmsg": self.kmsg.drain(),
                "duration": 0.0,
            }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.outside += self.kmsg.drain()
        data = {"exitstatus": int(exitstatus), "tests": list(self.tests.values()), "kmsg_outside_tests": self.outside}
        self.report.write_text(json.dumps(data, indent=1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--wd-report", default=None, help="write per-test results + kernel log (JSON) here")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--wd-report")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "wd-recorder")
