"""wd_dummy's engine scheduling: a stalled or huge request delays only its own
queue, and close, reset, unbind and owner death still work promptly; a kick
touches only its queue; an idle device sleeps without a timer; the tunables
are bounded; the driver places its engine threads itself."""
import ctypes
import errno
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402

# These start processes, unbind devices and move up to WD_MAX_LEN per request: under
# TCG on a loaded 2-core host one test can take minutes (the harness's default is 60 s).
pytestmark = pytest.mark.slow(300)

DEV = "wd_dummy.0"
MODDIR = os.environ.get("WD_MODULE_DIR", "")
PROMPT = 10.0  # seconds: "promptly", on a loaded TCG guest


def va_buffer(size, data=b""):
    """Process memory for a WD_CAPA_SHARE_ALL queue: (mmap, address)."""
    m = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    m[:len(data)] = data
    view = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(view)
    del view
    return m, addr


def stall(q, uf, dst, tag=99):
    """Submit a sha256 of memory nobody will ever provide; check it waits."""
    done = q.cq_tail()
    q.submit([kv.desc(tag, kv.WD_OP_SHA256, uf.addr, mmap.PAGESIZE, dst, 32)])
    time.sleep(0.5)
    assert q.cq_tail() == done, "the request on missing memory completed"


def timed(fn, *args):
    t0 = time.monotonic()
    fn(*args)
    return time.monotonic() - t0


def wait_for(pred, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def others_complete(dev=DEV, rounds=20):
    """Other queues of the device do real work, checked against references."""
    data = os.urandom(100000)
    with kv.Queue(dev, "crc32c") as a, kv.Queue(dev, "memcpy") as b:
        _, asrc, _ = a.dma_buffer(len(data), data)
        _, bsrc, _ = b.dma_buffer(len(data), data)
        bm, bdst, _ = b.dma_buffer(len(data))
        want = kv.kernel_crc32c(data)
        for i in range(rounds):
            c = a.run(kv.WD_OP_CRC32C, asrc, len(data), tag=i)
            assert (c.tag, c.status, c.result) == (i, 0, want)
            c = b.run(kv.WD_OP_MEMCPY, bsrc, len(data), bdst, len(data), tag=i)
            assert (c.tag, c.status, c.out_len) == (i, 0, len(data))
        assert bm[:len(data)] == data


def engines_back_to_one(dev=DEV):
    wait_for(lambda: kv.dummy_dbg(dev, "engines") == 1, what="extra engine threads to exit")


def test_stalled_request_delays_only_its_queue():
    with kv.Userfault() as uf:
        stalled = kv.Queue(DEV, "sha256-sva")
        try:
            dst_m, dst = va_buffer(64)
            stall(stalled, uf, dst)
            others_complete()
            assert kv.dummy_dbg(DEV, "engines") >= 2
            # Creating, opening and closing queues of the device still works.
            t = kv.type_dir(DEV, "memcpy")
            free = int(kv.read(f"{t}/available_instances"))
            with kv.Queue(DEV, "memcpy") as m:
                assert int(kv.read(f"{t}/available_instances")) == free - 1
                assert m.run(kv.WD_OP_NOP, tag=5)[:2] == (5, 0)
            assert stalled.cq_tail() == 0
            # A reset aborts the stalled request; the queue works again.
            assert timed(kv.ioctl, stalled.dev, kv.VFIO_DEVICE_RESET) < PROMPT
            stalled.sq_tail = stalled.cq_head = 0
            assert stalled.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
            stall(stalled, uf, dst)
        finally:
            # Closing aborts it too.
            assert timed(stalled.close) < PROMPT
        others_complete(rounds=3)
    engines_back_to_one()


def test_unbind_with_a_stalled_request():
    dev = "wd_dummy.1"
    with kv.Userfault() as uf:
        q = kv.Queue(dev, "sha256-sva")
        q.own_mdev = False  # the unbind removes it
        dst_m, dst = va_buffer(64)
        stall(q, uf, dst)
        unbind = subprocess.Popen(
            ["sh", "-c", f"echo {dev} > /sys/bus/platform/drivers/wd_dummy/unbind"])
        try:
            wait_for(lambda: q.status() & kv.WD_Q_DEAD, PROMPT, "the queue to die")
            # The request the engine had taken still completes, WD_STS_ABORTED:
            # its buffer was never at fault (it used to say WD_STS_BAD_ADDR).
            wait_for(lambda: q.cq_tail() == 1, PROMPT, "the stalled request's completion")
            c = q.reap(1)[0]
            assert (c.tag, c.status) == (99, kv.WD_STS_ABORTED), c
            others_complete("wd_dummy.0", rounds=3)
        finally:
            q.close()
            assert unbind.wait(60) == 0
            kv.write("/sys/bus/platform/drivers/wd_dummy/bind", dev)
    with kv.Queue(dev, "crc32c") as q:
        assert q.run(kv.WD_OP_NOP, tag=4)[:2] == (4, 0)


def test_owner_death_while_stalled():
    u = kv.create_mdev(DEV, "sha256-sva")
    t = kv.type_dir(DEV, "sha256-sva")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            uf = kv.Userfault()
            q = kv.Queue(mdev=u)
            _, dst = va_buffer(64)
            q.submit([kv.desc(1, kv.WD_OP_SHA256, uf.addr, mmap.PAGESIZE, dst, 32)])
            os.write(w, b"x")
            time.sleep(120)
        finally:
            os._exit(1)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        assert timed(os.waitpid, pid, 0) < PROMPT
    finally:
        os.close(r)
    assert kv.read(f"{t}/available_instances") == "4095"
    kv.remove_mdev(u)
    assert kv.read(f"{t}/available_instances") == "4096"
    others_complete(rounds=3)
    engines_back_to_one()


@pytest.mark.skipif(kv.kernel_has_debug_vm(),
                    reason="with CONFIG_DEBUG_VM, VFIO's pin of a userfaultfd page prints "
                           "'FAULT_FLAG_ALLOW_RETRY missing' and a stack dump by design")
def test_iova_request_on_missing_pages():
    """VFIO pins IOVA pages with pin_user_pages_remote() and no 'locked'
    pointer: the fault may not wait, so a userfaultfd page fails at once
    (WD_STS_BAD_ADDR).  A core that falls back to vfio_dma_rw() would wait
    instead: either way the other queues go on and close is prompt."""
    with kv.Userfault(4 * mmap.PAGESIZE) as uf:
        q = kv.Queue(DEV, "sha256")
        try:
            iova = 1 << 32
            q.map_dma(uf.addr, iova, uf.size)
            _, dst, _ = q.dma_buffer(64)
            q.submit([kv.desc(5, kv.WD_OP_SHA256, iova, mmap.PAGESIZE, dst, 32)])
            try:
                c = q.reap(1, timeout=3)[0]
                assert (c.tag, c.status) == (5, kv.WD_STS_BAD_ADDR)
            except TimeoutError:
                pass  # it waits: the stall case, as above
            others_complete(rounds=3)
        finally:
            assert timed(q.close) < PROMPT


BIG = 12 << 20  # deflate_bound(BIG) <= WD_MAX_LEN


def test_huge_requests_delay_only_their_queue():
    n = BIG
    data = os.urandom(n)  # incompressible: deflate works hard
    with kv.Queue(DEV, "zlib") as big, kv.Queue(DEV, "crc32c") as small:
        _, src, _ = big.dma_buffer(n, data)
        cap = kv.abi.deflate_bound(n)
        _, dst, _ = big.dma_buffer(cap)
        big.submit([kv.desc(i, kv.WD_OP_DEFLATE, src, n, dst, cap) for i in range(2)])
        for i in range(30):
            assert small.run(kv.WD_OP_NOP, tag=i)[:2] == (i, 0)
        assert big.cq_tail() < 2, "the huge requests were done first: nothing was shown"
        assert all(c.status == 0 for c in big.reap(2, timeout=600))


def test_close_aborts_a_long_request():
    n = BIG
    data = os.urandom(n)
    q = kv.Queue(DEV, "zlib")
    try:
        _, src, _ = q.dma_buffer(n, data)
        cap = kv.abi.deflate_bound(n)
        _, dst, _ = q.dma_buffer(cap)
        # One such request takes about a second under TCG: 64 take a minute.
        q.submit([kv.desc(i, kv.WD_OP_DEFLATE, src, n, dst, cap) for i in range(64)])
        time.sleep(0.5)
    finally:
        assert timed(q.close) < PROMPT
    engines_back_to_one()


def test_idle_device_sleeps_without_a_timer():
    """Open idle queues cost the engine nothing: it does not wake at all."""
    queues = []
    try:
        for _ in range(64):
            queues.append(kv.Queue(DEV, "crc32c"))
        for q in queues[:4]:
            assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
        time.sleep(0.5)  # past every polling window
        assert all(q.status() & kv.WD_Q_ENGINE_IDLE for q in queues)
        pids = kv.engine_pids(DEV)
        assert pids
        before = {p: kv.context_switches(p) for p in pids}
        time.sleep(2)
        assert {p: kv.context_switches(p) for p in pids} == before
    finally:
        for q in queues:
            q.close()


def test_a_kick_touches_only_its_queue():
    """Kicking one queue wakes the engine for that queue alone: the others
    stay idle (their status is never rewritten)."""
    queues = []
    try:
        for _ in range(32):
            queues.append(kv.Queue(DEV, "crc32c"))
        busy, idle = queues[0], queues[1:]
        time.sleep(0.3)
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                seen.extend(q.status() for q in idle)

        t = threading.Thread(target=watch)
        t.start()
        try:
            for i in range(50):
                assert busy.run(kv.WD_OP_NOP, tag=i)[:2] == (i, 0)
        finally:
            stop.set()
            t.join()
        assert seen and all(s == kv.WD_Q_ENGINE_IDLE for s in seen)
    finally:
        for q in queues:
            q.close()


BOUNDS = [("poll_idle_us", 0, 1000000), ("poll_max_us", 0, 1000000),
          ("stall_us", 1000, 60000000), ("max_engines", 1, 4097),
          ("stream_mem_kb", 0, 4 << 20)]


@pytest.mark.parametrize("name,lo,hi", BOUNDS)
def test_tunables_are_bounded(name, lo, hi):
    saved = kv.param(name)
    try:
        bad = [hi + 1, "-1", "abc", "1x"] + ([lo - 1] if lo else [])
        for value in bad:
            with pytest.raises(OSError) as e:
                kv.set_param(name, value)
            assert e.value.errno == errno.EINVAL, value
            assert kv.param(name) == saved
        for value in (lo, hi):
            kv.set_param(name, value)
            assert kv.param(name) == str(value)
    finally:
        kv.set_param(name, saved)
    with kv.Queue(DEV, "crc32c") as q:
        assert q.run(kv.WD_OP_NOP, tag=2)[:2] == (2, 0)


def allowed_cpus(pid):
    for line in kv.read(f"/proc/{pid}/status").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError("no Cpus_allowed_list")


def cpulist(text):
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def expected_engine_cpu(node):
    """The default of engine_cpus, from the topology: the node's last CPU
    if it has several, else the last CPU of the nearest other node."""
    base = "/sys/devices/system/node"
    nodes = {int(n[4:]): cpulist(kv.read(f"{base}/{n}/cpulist"))
             for n in os.listdir(base) if n.startswith("node") and n[4:].isdigit()}
    nodes = {n: c for n, c in nodes.items() if c}
    if len(nodes[node]) > 1 or len(nodes) == 1:
        return max(nodes[node])
    dist = [int(x) for x in kv.read(f"{base}/node{node}/distance").split()]
    near = min((n for n in nodes if n != node), key=lambda n: dist[n])
    return max(nodes[near])


def test_engine_threads_are_placed_by_the_driver():
    """Default: each device's engine runs off the CPUs its callers use (in
    the test guest, one CPU per node: the other node's CPU); nobody in user
    space pins anything."""
    for dev, node in (("wd_dummy.0", 0), ("wd_dummy.1", 1)):
        pids = kv.engine_pids(dev)
        assert pids
        want = str(expected_engine_cpu(node))
        for pid in pids:
            assert allowed_cpus(pid) == want, dev


def reload(*params):
    subprocess.run(["rmmod", "wd_dummy"], check=True)
    return subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko", *params],
                          capture_output=True, text=True)


def test_engine_cpus_parameter():
    try:
        assert reload("engine_cpus=99").returncode != 0
        assert not os.path.exists("/sys/module/wd_dummy")
        subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"], check=True)
        assert reload("engine_cpus=1,0").returncode == 0
        assert allowed_cpus(kv.engine_pids("wd_dummy.0")[0]) == "1"
        assert allowed_cpus(kv.engine_pids("wd_dummy.1")[0]) == "0"
        with kv.Queue(DEV, "crc32c") as q:
            assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
        assert reload("engine_cpus=-2,-2").returncode == 0
        assert allowed_cpus(kv.engine_pids("wd_dummy.0")[0]) == kv.read(
            "/sys/devices/system/cpu/online")
        with kv.Queue(DEV, "crc32c") as q:
            assert q.run(kv.WD_OP_NOP, tag=1)[:2] == (1, 0)
    finally:
        if os.path.exists("/sys/module/wd_dummy"):
            subprocess.run(["rmmod", "wd_dummy"], check=True)
        subprocess.run(["insmod", f"{MODDIR}/wd_dummy.ko"], check=True)
