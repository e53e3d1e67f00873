"""Error paths, driven by the kernel's fault injection (kernels with
CONFIG_FAILSLAB and fail-nth, such as the debug kernel; skipped elsewhere).

Each test makes the 1st, 2nd, 3rd ... slab allocation of one operation fail in
turn, until an attempt makes no allocation fail: loading wd_dummy (module,
platform devices, the accelerators' registration), creating a queue (the mdev
probe) and opening it (VFIO open: regions, the mm notifier, the driver's
queue_open).  Every failure must unwind: no oops, and the next attempt works;
kmemleak, when present, must find nothing of WrapDrive's left behind."""
import contextlib
import ctypes
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

FAILSLAB = "/sys/kernel/debug/failslab"
MODDIR = os.environ.get("WD_MODULE_DIR", "")
MAX_NTH = 5000
SYS_FINIT_MODULE = 313
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

pytestmark = pytest.mark.skipif(
    not (os.path.exists("/proc/self/fail-nth") and os.path.isdir(FAILSLAB)),
    reason="no slab fault injection (CONFIG_FAILSLAB, fail-nth) in this kernel")


@contextlib.contextmanager
def failslab_counts_sleeping_allocations():
    """fail-nth counts only allocations failslab looks at: make it look at
    GFP_KERNEL ones too (by default it ignores allocations that may sleep)."""
    path = f"{FAILSLAB}/ignore-gfp-wait"
    saved = kv.read(path)
    kv.write(path, "N")
    try:
        yield
    finally:
        kv.write(path, saved)


def with_nth_failure(nth, fn):
    """Run fn with the nth slab allocation of this thread failing; returns
    (fn's result or the OSError it raised, whether the failure happened)."""
    path = "/proc/thread-self/fail-nth"
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, str(nth).encode())
        try:
            res = fn()
        except OSError as e:
            res = e
        os.lseek(fd, 0, os.SEEK_SET)
        left = int(os.read(fd, 32).decode().strip() or "0")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"0")  # disarm whatever is left
    finally:
        os.close(fd)
    return res, left == 0


def _finit(fd, params):
    ret = libc.syscall(SYS_FINIT_MODULE, fd, ctypes.c_char_p(params), 0)
    if ret:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0


def _loaded(name):
    return os.path.exists(f"/sys/module/{name}")


def test_loading_the_driver_unwinds_every_allocation_failure():
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
    failed_at = []
    try:
        with failslab_counts_sleeping_allocations():
            for nth in range(1, MAX_NTH):
                fd = os.open(f"{MODDIR}/wd_dummy.ko", os.O_RDONLY)
                try:
                    res, hit = with_nth_failure(nth, lambda fd=fd: _finit(fd, b"nr_devices=2"))
                finally:
                    os.close(fd)
                if _loaded("wd_dummy"):
                    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
                if not hit:
                    break
                failed_at.append(nth)
            else:
                pytest.fail(f"still failing after {MAX_NTH} allocations")
    finally:
        if not _loaded("wd_dummy"):
            assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0
    print(f"[faults] module load: {len(failed_at)} allocations failed in turn")
    assert kv.parents() == ["wd_dummy.0", "wd_dummy.1"]
    with kv.Queue("wd_dummy.0", "crc32c") as q:
        assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    assert not kv.kmemleak_of_ours()


def test_creating_and_opening_a_queue_unwind_every_allocation_failure():
    made = []
    create = f"{kv.type_dir('wd_dummy.0', 'sha256')}/create"
    with failslab_counts_sleeping_allocations():
        for nth in range(1, MAX_NTH):
            u = str(kv.uuidlib.uuid4())
            res, hit = with_nth_failure(nth, lambda u=u: kv.write(create, u))
            if os.path.exists(f"{kv.MDEV_DEVICES}/{u}"):
                made.append(u)
            if not hit:
                break
        opened = 0
        u = made[-1] if made else kv.create_mdev("wd_dummy.0", "sha256")
        for nth in range(1, MAX_NTH):
            res, hit = with_nth_failure(nth, lambda u=u: kv.Queue(mdev=u))
            if isinstance(res, kv.Queue):
                assert res.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)
                res.close()
                opened += 1
            if not hit:
                break
    for v in set(made) | {u}:
        kv.remove_mdev(v)
    t = kv.type_dir("wd_dummy.0", "sha256")
    assert kv.read(f"{t}/available_instances") == "4096"
    assert kv.dbg("pinned_pages") == 0
    assert not kv.kmemleak_of_ours()
