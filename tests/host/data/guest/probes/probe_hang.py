"""Probe: a test that logs kernel backtraces (sysrq-l) and then blocks in the kernel for
good (the parent of a vfork()ed child that never execs: D state), so the in-guest runner
has to stop it from outside."""

import ctypes
import time
from pathlib import Path


def test_hangs_in_the_kernel() -> None:
    Path("/proc/sysrq-trigger").write_text("l")
    time.sleep(1)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.vfork() == 0:
        libc.pause()  # the child: never exec, never exit; the parent waits in vfork
    time.sleep(100000)


def test_never_reached() -> None:
    pass
