"""Probe: a file that leaves a process holding an open queue with pinned pages, and a
kernel report that comes after the last test (sysrq-l once this pytest process has
exited): the end of the session must see all of it."""

import os
import subprocess
import sys
import time
from pathlib import Path

GUEST = Path(__file__).resolve().parents[5] / "tests" / "qemu" / "guest"
HOLDER = f"""
import sys, time
sys.path.insert(0, {str(GUEST)!r})
import kernel_vfio as kv
q = kv.Queue("wd_dummy.1", "memcpy")
_, src, _ = q.dma_buffer(2 * 4096, b"a" * 2 * 4096)
_, dst, _ = q.dma_buffer(2 * 4096)
assert q.run(kv.WD_OP_MEMCPY, src, 2 * 4096, dst, 2 * 4096)[1] == 0
print("holding", kv.dbg("pinned_pages"), flush=True)
time.sleep(100000)
"""


def test_leaves_a_queue_open_with_pins() -> None:
    p = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout is not None
    assert p.stdout.readline().startswith("holding")
    wait_then_report = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 0.1; done; echo l > /proc/sysrq-trigger"
    subprocess.Popen(["sh", "-c", wait_then_report], start_new_session=True)


def test_last() -> None:
    time.sleep(0.1)
    assert os.path.exists("/sys/bus/mdev/devices")
