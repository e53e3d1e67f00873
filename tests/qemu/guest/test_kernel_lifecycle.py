"""Queue and driver lifecycle: owner death, unregister, rmmod, fork.

The kernel log of each test is judged by the harness (tools/verdict.py: every checker's
report, in that test's own window of the log), not here."""
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
            q.submit([kv.desc(i, kv.WD_OP_SHA256, src, len(data), dst, 32) for i in range(200)])
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


def test_rmmod_refused_while_queue_open():
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        res = subprocess.run(["rmmod", "wd_dummy"], capture_output=True)
        assert res.returncode != 0
        assert q.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)


def _rebind(name):
    kv.write("/sys/bus/platform/drivers/wd_dummy/bind", name)


DEAD_AND_MAPPED = 42


def _dead_queue_child(ready_w):
    """A queue owner that, once its queue is dead, reads and writes every
    page of every mapping: they stay valid (no SIGBUS); exits 42."""
    code = 3
    try:
        q = kv.Queue("wd_dummy.1", "memcpy")
        q.own_mdev = False
        os.write(ready_w, b"r")
        end = time.monotonic() + 30
        while not q.status() & kv.WD_Q_DEAD and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.5)
        sum(q.cqr[::4096]) + sum(q.sq[::4096])
        q.sq[0:64] = b"\x01" * 64
        kv.store32(q.db, kv.DB_SQ_TAIL, 1)
        if q.status() & kv.WD_Q_DEAD and q.sq[0] == 1:
            code = DEAD_AND_MAPPED
    finally:
        os._exit(code)


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
        _dead_queue_child(w)
    os.close(w)
    assert os.read(r, 1) == b"r"
    os.close(r)
    unbind = subprocess.Popen(
        ["sh", "-c", "echo wd_dummy.1 > /sys/bus/platform/drivers/wd_dummy/unbind"])
    try:
        # Death is announced on the eventfd and in the status word, which
        # stays readable: the mappings are not zapped.
        assert select.select([efd], [], [], 30)[0]
        assert os.eventfd_read(efd) >= 1
        assert q.status() & kv.WD_Q_DEAD
        assert not q.status() & kv.WD_Q_ENGINE_IDLE
        assert kv.errno_of(kv.ioctl, q.dev, kv.VFIO_DEVICE_RESET) == errno.ENODEV
        assert kv.errno_of(os.pread, q.dev, 4, q.regions[kv.WD_REGION_CQ][2]) == errno.ENODEV
        assert kv.errno_of(q.map_region, 0) == errno.ENODEV
        _, st = os.waitpid(child, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == DEAD_AND_MAPPED, st
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


def test_rmmod_and_reload():
    u = kv.create_mdev("wd_dummy.0", "zlib")
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
    assert not os.path.exists(f"{kv.MDEV_DEVICES}/{u}")
    assert subprocess.run(["rmmod", "wrapdrive"]).returncode == 0
    try:
        assert subprocess.run(["insmod", f"{MODDIR}/wrapdrive.ko"]).returncode == 0
        for bad in ("ring_entries=3", "ring_entries=0", "nr_devices=0", "nr_devices=17",
                    "max_queues=0", "max_queues=4097"):
            assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko", bad],
                                  capture_output=True).returncode != 0, bad
    finally:
        if not os.path.exists("/sys/module/wrapdrive"):
            subprocess.run(["insmod", f"{MODDIR}/wrapdrive.ko"])
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0
    assert kv.parents() == ["wd_dummy.0", "wd_dummy.1"]


def test_mdev_remove_while_open_asks_for_release():
    """Removing an open queue's mdev waits for its user; the queue dies with
    WD_Q_RELEASE set and the eventfd signalled, asking the owner to let go."""
    q = kv.Queue("wd_dummy.0", "crc32c")
    q.own_mdev = False
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    q.set_eventfd(efd)
    remover = subprocess.Popen(
        ["sh", "-c", f"echo 1 > {kv.MDEV_DEVICES}/{q.uuid}/remove"])
    try:
        assert select.select([efd], [], [], 30)[0]
        end = time.monotonic() + 10
        while q.status() & (kv.WD_Q_DEAD | kv.WD_Q_RELEASE) != kv.WD_Q_DEAD | kv.WD_Q_RELEASE:
            assert time.monotonic() < end, hex(q.status())
            time.sleep(0.02)
        time.sleep(0.3)
        assert remover.poll() is None  # waits for us
    finally:
        q.close()
        os.close(efd)
        assert remover.wait(60) == 0
    assert not os.path.exists(f"{kv.MDEV_DEVICES}/{q.uuid}")


def test_max_queues_parameter():
    """max_queues bounds the queues of each device, all types together."""
    assert subprocess.run(["rmmod", "wd_dummy"]).returncode == 0
    try:
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko", "max_queues=3"]).returncode == 0
        t = kv.type_dir("wd_dummy.0", "crc32c")
        assert kv.read(f"{t}/available_instances") == "3"
        made = [kv.create_mdev("wd_dummy.0", n) for n in ("crc32c", "sha256", "zlib")]
        assert kv.read(f"{t}/available_instances") == "0"
        assert kv.errno_of(kv.create_mdev, "wd_dummy.0", "memcpy") != 0
        kv.remove_mdev(made[0])
        assert kv.read(f"{t}/available_instances") == "1"
        for u in made[1:]:
            kv.remove_mdev(u)
    finally:
        subprocess.run(["rmmod", "wd_dummy"])
        assert subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"]).returncode == 0
    assert kv.read(f"{kv.type_dir('wd_dummy.0', 'crc32c')}/available_instances") == "4096"
