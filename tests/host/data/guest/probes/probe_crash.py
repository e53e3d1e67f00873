"""Probe (recorded by tests/host/data/guest/record.py): a test that makes the kernel log
backtraces (sysrq-l: real `Call Trace` lines) and then kills its own pytest process."""

import os
import signal
import time
from pathlib import Path


def test_logs_then_dies() -> None:
    Path("/proc/sysrq-trigger").write_text("l")
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)


def test_after_the_crash() -> None:
    pass
