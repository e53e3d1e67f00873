"""Probe (run with /dev/kmsg removed): a test that makes the kernel log backtraces; with
no kernel log to read, the host must fail it, not pass it."""

from pathlib import Path


def test_kernel_reports_something() -> None:
    Path("/proc/sysrq-trigger").write_text("l")
