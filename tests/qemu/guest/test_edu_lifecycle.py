"""In-guest, edu machines only: a request that QEMU's edu device is carrying out when user
space unmaps its memory, resets or closes the queue, is killed, or when the device is
unbound or its module removed.  Each ends promptly (within a fill of the device buffer,
not the whole request), and afterwards nothing is mapped for DMA or pinned: wd_edu's
dma_maps, the queue's and WrapDrive's pinned_pages, the DMA API debug entries where the
kernel has them."""
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import edu  # noqa: E402
import kernel_vfio as kv  # noqa: E402

pytestmark = edu.need_edu

BIG = 4 * edu.WINDOW  # 65 fills, 13 s or more: long enough to be caught in flight
PROMPT_S = 10.0  # a fill is 2-4 DMAs of 100 ms; generous for a loaded host


def total_pinned():
    return kv.dbg("pinned_pages")


def wait_for(cond, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.02)


def start_big(q, tag=9):
    """Submit a BIG copy and wait until the device is moving its data."""
    dev = q.parent
    _, src, _ = q.dma_buffer(BIG, os.urandom(BIG))
    _, dst, _ = q.dma_buffer(BIG)
    dmas = kv.dbg(dev, "dmas")
    q.submit([kv.desc(tag, kv.WD_OP_MEMCPY, src, BIG, dst, BIG)])
    wait_for(lambda: kv.dbg(dev, "dmas") >= dmas + 3, what="the request's first DMAs")
    return src, dst


def assert_released(dev, baseline_pinned, q=None):
    wait_for(lambda: kv.dbg(dev, "dma_maps") == 0, 10, "dma_maps back to 0")
    assert edu.released(dev, q) == []
    assert total_pinned() == baseline_pinned


@pytest.fixture
def dev():
    d = edu.parent()
    pinned = total_pinned()
    errors = edu.dma_api_errors()
    yield d
    assert edu.released(d) == []
    assert total_pinned() == pinned
    assert edu.dma_api_errors() == errors, "CONFIG_DMA_API_DEBUG counted errors"


def test_unmap_between_requests(dev):
    with edu.queue(dev) as q:
        sm, src, _ = q.dma_buffer(100, b"s" * 100)
        dm, dst, dva = q.dma_buffer(100)
        assert q.run(kv.WD_OP_MEMCPY, src, 100, dst, 100)[:3] == (7, kv.WD_STS_OK, 100)
        q.unmap_dma(dst, 4096)
        assert q.run(kv.WD_OP_MEMCPY, src, 100, dst, 100)[1] == kv.WD_STS_BAD_ADDR
        assert edu.released(dev, q) == []
        q.map_dma(dva, dst, 4096)  # the same IOVA again: usable at once
        dm[:100] = bytes(100)
        assert q.run(kv.WD_OP_MEMCPY, src, 100, dst, 100)[1] == kv.WD_STS_OK
        assert bytes(dm[:100]) == b"s" * 100


@pytest.mark.slow(180)
def test_unmap_during_a_request_wins_promptly(dev):
    pinned = total_pinned()
    with edu.queue(dev) as q:
        src, _ = start_big(q)
        t0 = time.monotonic()
        q.unmap_dma(src, BIG)
        took = time.monotonic() - t0
        cqe = q.reap(1, timeout=60)[0]
        assert cqe.status == kv.WD_STS_BAD_ADDR, cqe
        assert took < PROMPT_S, f"VFIO_IOMMU_UNMAP_DMA waited {took:.1f}s for the device"
        assert_released(dev, pinned, q)
        # The queue goes on.
        cqe, data, out, _ = edu.copy(q, 10)
        assert cqe.status == kv.WD_STS_OK and out == data


@pytest.mark.slow(180)
def test_reset_during_a_request(dev):
    pinned = total_pinned()
    with edu.queue(dev) as q:
        start_big(q)
        t0 = time.monotonic()
        kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
        took = time.monotonic() - t0
        assert took < PROMPT_S, f"VFIO_DEVICE_RESET waited {took:.1f}s for the device"
        assert q.cq_tail() == 0, "reset posted a completion for the dropped request"
        assert_released(dev, pinned, q)
        q.sq_tail = q.cq_head = 0  # the reset set the indices back to 0
        cqe, data, out, _ = edu.copy(q, 10)
        assert cqe.status == kv.WD_STS_OK and out == data


@pytest.mark.slow(180)
def test_close_during_a_request(dev):
    pinned = total_pinned()
    q = edu.queue(dev)
    try:
        start_big(q)
    except BaseException:
        q.close()
        raise
    t0 = time.monotonic()
    q.close()
    took = time.monotonic() - t0
    assert took < PROMPT_S, f"closing the queue waited {took:.1f}s for the device"
    assert_released(dev, pinned)


def _busy_child(ready_w, wait_dead):
    """Open a queue, start a BIG copy, report the mdev; then either sleep until killed,
    or (wait_dead) close the queue once it is dead and exit 42."""
    code = 3
    try:
        q = edu.queue(edu.parent())
        q.own_mdev = False
        start_big(q)
        os.write(ready_w, q.uuid.encode())
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if wait_dead and q.status() & kv.WD_Q_DEAD:
                q.close()
                code = 42
                break
            time.sleep(0.02)
    finally:
        os._exit(code)


def _fork_busy(wait_dead=False):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _busy_child(w, wait_dead)
    os.close(w)
    uuid = os.read(r, 64).decode()
    os.close(r)
    if not uuid:
        os.waitpid(pid, 0)
        raise AssertionError("the child could not start its request")
    return pid, uuid


@pytest.mark.slow(180)
def test_sigkill_during_a_request(dev):
    pinned = total_pinned()
    pid, uuid = _fork_busy()
    try:
        os.kill(pid, signal.SIGKILL)
        _, st = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(st)
        assert_released(dev, pinned)
    finally:
        kv.remove_mdev(uuid)


def _rebind(dev):
    if not os.path.exists(f"{edu.DRIVER}/{dev}"):
        kv.write(f"{edu.DRIVER}/bind", dev)
    wait_for(lambda: os.path.exists(f"{kv.MDEV_BUS}/{dev}"), what="edu device back")


@pytest.mark.slow(180)
def test_unbind_during_a_request(dev):
    pinned = total_pinned()
    pid, uuid = _fork_busy(wait_dead=True)
    unbind = subprocess.Popen(["sh", "-c", f"echo {dev} > {edu.DRIVER}/unbind"])
    try:
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 42, f"child wait status {st:#x}"
        assert unbind.wait(60) == 0
        assert not os.path.exists(f"{kv.MDEV_DEVICES}/{uuid}"), "unbind left the queue's mdev"
        assert total_pinned() == pinned
    finally:
        if unbind.poll() is None:
            unbind.kill()
        _rebind(dev)


@pytest.mark.slow(180)
def test_rmmod_is_refused_while_a_request_runs(dev):
    params = {p: kv.read(f"/sys/module/{edu.MODULE}/parameters/{p}") for p in ("dma_bits",)}
    pinned = total_pinned()
    with edu.queue(dev) as q:
        _, src, _ = q.dma_buffer(3 * edu.FILL, os.urandom(3 * edu.FILL))
        dm, dst, _ = q.dma_buffer(3 * edu.FILL)
        dmas = kv.dbg(dev, "dmas")
        q.submit([kv.desc(5, kv.WD_OP_MEMCPY, src, 3 * edu.FILL, dst, 3 * edu.FILL)])
        wait_for(lambda: kv.dbg(dev, "dmas") > dmas, what="the request's first DMA")
        res = subprocess.run(["rmmod", edu.MODULE], capture_output=True, text=True)
        assert res.returncode != 0 and "in use" in res.stderr, res
        cqe = q.reap(1, timeout=60)[0]
        assert cqe[:3] == (5, kv.WD_STS_OK, 3 * edu.FILL)
        assert bytes(dm[:3 * edu.FILL]) == bytes(q.bufs[0][0][:3 * edu.FILL])
    assert_released(dev, pinned)
    subprocess.run(["rmmod", edu.MODULE], check=True)
    try:
        assert not os.path.exists(f"{kv.MDEV_BUS}/{dev}")
    finally:
        ko = os.path.join(os.environ["WD_MODULE_DIR"], f"{edu.MODULE}.ko")
        subprocess.run(["insmod", ko, *(f"{k}={v}" for k, v in params.items())], check=True)
        _rebind(dev)
