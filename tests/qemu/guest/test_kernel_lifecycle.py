"""Queue and driver lifecycle: owner death, unregister, rmmod, fork."""
import errno
import os
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

MODDIR = os.environ.get("WD_MODULE_DIR", "")


def dmesg_clean():
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    for bad in ("BUG:", "WARNING:", "Oops", "Call Trace"):
        assert bad not in out, out[-3000:]


def test_owner_death_with_requests_in_flight():
    u = kv.create_mdev("wd_dummy.0", "sha256")
    t = kv.type_dir("wd_dummy.0", "sha256")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            q = kv.Queue(mdev=u)
            data = b"z" * (1 << 20)
            _, src, _ = q.dma_buffer(len(data), data)
            _, dst, _ = q.dma_buffer(64)
            q.submit([(i, kv.WD_OP_SHA256, 0, src, dst, len(data), 32) for i in range(200)])
            os.write(w, b"x")
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(w)
    assert os.read(r, 1) == b"x"
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    assert kv.dbg("pinned_pages") == 0
    assert kv.read(f"{t}/available_instances") == "4095"
    kv.remove_mdev(u)
    assert kv.read(f"{t}/available_instances") == "4096"
    dmesg_clean()


def test_rmmod_refused_while_queue_open():
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        res = subprocess.run(["rmmod", "wd_dummy"], capture_output=True)
        assert res.returncode != 0
        assert q.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)


def _rebind(name):
    kv.write("/sys/bus/platform/drivers/wd_dummy/bind", name)


def _sigbus_child(ready_w):
    """A queue owner that touches its ring once the queue is dead."""
    try:
        q = kv.Queue("wd_dummy.1", "memcpy")
        q.own_mdev = False
        os.write(ready_w, b"r")
        end = time.monotonic() + 30
        # Reads WD_Q_DEAD, or faults once the mapping is zapped: SIGBUS.
        while not q.status() & kv.WD_Q_DEAD and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.5)
        q.ring[0]
    finally:
        os._exit(3)


def test_unregister_with_queue_open():
    """Unbinding the parent kills open queues; the users can still close."""
    q = kv.Queue("wd_dummy.1", "crc32c")
    q.own_mdev = False
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    q.set_eventfd(efd)
    assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        _sigbus_child(w)
    os.close(w)
    assert os.read(r, 1) == b"r"
    os.close(r)
    unbind = subprocess.Popen(
        ["sh", "-c", "echo wd_dummy.1 > /sys/bus/platform/drivers/wd_dummy/unbind"])
    try:
        # Death is announced on the eventfd; the ring is zapped (SIGBUS).
        assert select.select([efd], [], [], 30)[0]
        assert os.eventfd_read(efd) >= 1
        assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_RESET) == errno.ENODEV
        assert kv.errno_of(os.pread, q.dev, 4, q.regions[1][2]) == errno.ENODEV
        assert kv.errno_of(q.map_region, 0) == errno.ENODEV
        # The child's mappings were zapped: its touch got SIGBUS.
        _, st = os.waitpid(child, 0)
        assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGBUS, st
        time.sleep(0.5)
        assert unbind.poll() is None  # still waits for us to close
    finally:
        q.close()
        os.close(efd)
        assert unbind.wait(60) == 0
        _rebind("wd_dummy.1")
    assert os.path.exists(f"{kv.MDEV_BUS}/wd_dummy.1")
    assert not os.path.exists(f"{kv.MDEV_DEVICES}/{q.uuid}")
    with kv.Queue("wd_dummy.1", "crc32c") as q2:
        assert q2.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
    dmesg_clean()


def test_rmmod_and_reload():
    u = kv.create_mdev("wd_dummy.0", "zlib")
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
    assert not os.path.exists(f"{kv.MDEV_DEVICES}/{u}")
    assert subprocess.run(["rmmod", "wrapdrive"]).returncode == 0
    try:
        assert subprocess.run(["insmod", f"{MODDIR}/wrapdrive.ko"]).returncode == 0
        for bad in ("ring_entries=3", "ring_entries=0", "nr_devices=0", "nr_devices=17"):
            assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko", bad],
                                  capture_output=True).returncode != 0, bad
    finally:
        if not os.path.exists("/sys/module/wrapdrive"):
            subprocess.run(["insmod", f"{MODDIR}/wrapdrive.ko"])
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0
    assert kv.parents() == ["wd_dummy.0", "wd_dummy.1"]
    dmesg_clean()
