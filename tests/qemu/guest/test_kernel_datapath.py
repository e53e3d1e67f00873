"""The data path under pressure: VFIO_IOMMU_UNMAP_DMA and RESET racing requests in
flight, unprivileged users with the default and small RLIMIT_MEMLOCK, the pins of a
queue whose owner dies while a child still holds the device fd, and the DMA API a
hardware driver uses (the sample's dma_api mode)."""
import hashlib
import mmap
import os
import random
import signal
import sys
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_child  # noqa: E402
import wd_measure  # noqa: E402
import wd_modules  # noqa: E402

# These start processes, unbind devices and move up to WD_MAX_LEN per request: under
# TCG on a loaded 2-core host one test can take minutes (the harness's default is 60 s).
pytestmark = pytest.mark.slow(300)

STRESS_SECONDS = float(os.environ.get("WD_STRESS_SECONDS", "20"))
SCALE = float(os.environ.get("WD_TIMEOUT_SCALE", "1"))  # > 1 on a debug kernel
MiB = 1 << 20


def rnd(n, seed):
    return random.Random(seed).randbytes(n)


def pinned(*qd):
    return kv.dbg(*qd, "pinned_pages")


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def anon(size, data=b""):
    m = mmap.mmap(-1, size)
    m[:len(data)] = data
    return m, kv.ctypes.addressof(kv.ctypes.c_char.from_buffer(m))


# -- item 1: unmap and reset win over requests in flight -------------------------------

def _unmap_stress(seconds, size=4 * MiB):
    """Two queues on two engines share one container and one source range S
    (and qb writes a destination range D); both ranges are unmapped and mapped
    again at the same IOVAs while requests on them are in flight."""
    data = rnd(size, 1)
    want_crc = kv.kernel_crc32c(data)
    qa = kv.Queue("wd_dummy.0", "crc32c")
    qb = kv.Queue("wd_dummy.1", "memcpy", container=qa)
    src, sva = anon(size, data)
    dst, dva = anon(size)
    S, D = 1 << 30, 2 << 30
    stats = {"iterations": 0, "requests": 0, "ok": 0, "bad_addr": 0, "unmaps": 0}
    lat = []
    rng = random.Random(7)
    try:
        qa.map_dma(sva, S, size)
        qb.map_dma(dva, D, size)
        t_end = time.monotonic() + seconds
        t0 = time.monotonic()
        while time.monotonic() < t_end:
            stats["iterations"] += 1
            qa.submit([kv.desc(i, kv.WD_OP_CRC32C, S, size) for i in range(2)])
            qb.submit([kv.desc(i, kv.WD_OP_MEMCPY, S, size, D, size) for i in range(2)])
            stats["requests"] += 4
            time.sleep(rng.uniform(0, 0.02))
            which = rng.choice(("S", "D", "both"))
            t = time.monotonic()
            if which in ("S", "both"):
                qa.unmap_dma(S, size)
                stats["unmaps"] += 1
            if which in ("D", "both"):
                qa.unmap_dma(D, size)
                stats["unmaps"] += 1
            lat.append(time.monotonic() - t)
            if which in ("S", "both"):
                qa.map_dma(sva, S, size)
            if which in ("D", "both"):
                qa.map_dma(dva, D, size)
            for q in (qa, qb):
                for c in q.reap(2, timeout=120):
                    assert c.status in (kv.WD_STS_OK, kv.WD_STS_BAD_ADDR), c
                    if c.status == kv.WD_STS_OK:
                        stats["ok"] += 1
                        if q is qa:
                            assert c.result == want_crc
                        else:
                            assert c.out_len == size
                    else:
                        stats["bad_addr"] += 1
                        assert (c.out_len, c.result) == (0, 0)
            # The IOVAs were reused at once: requests on them work and are right.
            if stats["iterations"] % 5 == 0:
                c = qa.run(kv.WD_OP_CRC32C, S, size)
                assert (c.status, c.result) == (0, want_crc)
                c = qb.run(kv.WD_OP_MEMCPY, S, size, D, size)
                assert c.status == 0 and dst[:] == data
                stats["requests"] += 2
                stats["ok"] += 2
        stats["seconds"] = round(time.monotonic() - t0, 1)
        stats["unmap_ms_max"] = round(max(lat) * 1000, 1)
        stats["unmap_ms_median"] = round(sorted(lat)[len(lat) // 2] * 1000, 2)
    finally:
        qb.close()
        qa.close()
        src.close()
        dst.close()
    return stats


def test_unmap_and_remap_race_requests_in_flight():
    stats = _unmap_stress(STRESS_SECONDS)
    wd_measure.record("unmap_stress", mode="cpu", **stats)
    assert stats["iterations"] >= 5
    assert kv.dbg("pinned_pages") == 0


def test_unmap_during_a_large_request_is_prompt():
    """A 16 MiB request is running on a range; unmapping it returns long before
    the request could have finished, and the request ends OK or BAD_ADDR."""
    n = kv.WD_MAX_LEN
    data = rnd(n, 2)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        qd = ("wd_dummy.0", q.uuid)
        m, src, _ = q.dma_buffer(n, data)
        _, dst, _ = q.dma_buffer(64)
        t = time.monotonic()
        c = q.run(kv.WD_OP_SHA256, src, n, dst, 32)
        full = time.monotonic() - t
        assert c.status == 0
        q.submit([kv.desc(1, kv.WD_OP_SHA256, src, n, dst, 32)])
        wait_for(lambda: kv.HDR.unpack_from(q.cqr)["sq_head"] >= 2, 30, "request taken")
        t = time.monotonic()
        q.unmap_dma(src, len(m))
        unmap = time.monotonic() - t
        c = q.reap(1, timeout=120)[0]
        assert c.status in (kv.WD_STS_OK, kv.WD_STS_BAD_ADDR)
        wd_measure.record("unmap_latency_16MiB", request_s=round(full, 3),
                          unmap_s=round(unmap, 4), status=c.status)
        # The floor is a time limit: a debug kernel (WD_TIMEOUT_SCALE) stretches it.
        assert unmap < max(0.5 * SCALE, full / 2), (unmap, full)
        assert q.run(kv.WD_OP_NOP, tag=3)[:2] == (3, 0)
        assert pinned(*qd) <= 1  # only dst's page may stay cached


def test_reset_with_requests_in_flight():
    n = 4 * MiB
    data = rnd(n, 3)
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        qd = ("wd_dummy.1", q.uuid)
        _, src, _ = q.dma_buffer(n, data)
        for _ in range(3):
            q.submit([kv.desc(i, kv.WD_OP_CRC32C, src, n) for i in range(8)])
            time.sleep(0.05)
            kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
            hdr = kv.HDR.unpack_from(q.cqr)
            assert (hdr["sq_head"], hdr["cq_tail"]) == (0, 0)
            assert pinned(*qd) == 0  # a reset drops what the queue held
            q.sq_tail = q.cq_head = 0
            c = q.run(kv.WD_OP_CRC32C, src, n, tag=9)
            assert (c.tag, c.status, c.result) == (9, 0, kv.kernel_crc32c(data))
            q.sq_tail = q.cq_head = 0
            kv.ioctl(q.dev, kv.VFIO_DEVICE_RESET)
    assert kv.dbg("pinned_pages") == 0


# -- item 2: unprivileged users ---------------------------------------------------------

ALGOS = ("memcpy", "crc32c", "sha256", "zlib")


def _max_len_all_algorithms(uuids, mlock_first=0, mlock_after=0):
    """In the child, as nobody: every algorithm at WD_MAX_LEN, checked against
    independent references; VmLck before and after; optional mlock()s."""
    n = kv.WD_MAX_LEN
    data = (rnd(n // 2, 5) + b"wrapdrive" * (n // 18 + 1))[:n]
    out = {"vmlck_start": wd_child.vm_locked_kib()}
    if mlock_first:
        lk, lka = anon(mlock_first)
        out["mlock_first"] = wd_child.mlock(lka, mlock_first)
    for tname, u in uuids.items():
        q = kv.Queue(mdev=u)
        try:
            _, src, _ = q.dma_buffer(n, data)
            if tname == "memcpy":
                dm, dst, _ = q.dma_buffer(n)
                c = q.run(kv.WD_OP_MEMCPY, src, n, dst, n)
                assert (c.status, c.out_len) == (0, n), c
                assert dm[:n] == data
            elif tname == "crc32c":
                c = q.run(kv.WD_OP_CRC32C, src, n)
                assert (c.status, c.result) == (0, kv.kernel_crc32c(data)), c
            elif tname == "sha256":
                dm, dst, _ = q.dma_buffer(64)
                c = q.run(kv.WD_OP_SHA256, src, n, dst, 32)
                assert c.status == 0 and dm[:32] == hashlib.sha256(data).digest(), c
            else:
                # One-shot deflate output must fit dst, and dst_len is at
                # most WD_MAX_LEN: the data compresses well.
                cap = min(kv.abi.deflate_bound(n), kv.WD_MAX_LEN)
                cm, comp, _ = q.dma_buffer(cap)
                c = q.run(kv.WD_OP_DEFLATE, src, n, comp, cap)
                assert c.status == 0, c
                assert zlib.decompress(cm[:c.out_len]) == data
                pz = zlib.compress(data, 1)
                _, psrc, _ = q.dma_buffer(len(pz), pz)
                om, out_iova, _ = q.dma_buffer(n)
                c = q.run(kv.WD_OP_INFLATE, psrc, len(pz), out_iova, n)
                assert (c.status, c.out_len, c.result) == (0, n, len(pz)), c
                assert om[:n] == data
            out[tname] = "ok"
        finally:
            q.close()
    out["vmlck_end"] = wd_child.vm_locked_kib()
    if mlock_after:
        lk2, lka2 = anon(mlock_after)
        out["mlock_after"] = wd_child.mlock(lka2, mlock_after)
    return out


@pytest.fixture
def nobody_queues():
    uuids = {t: kv.create_mdev("wd_dummy.0", t) for t in ALGOS}
    stack = []
    try:
        for u in uuids.values():
            cm = wd_child.group_owned_by(u)
            cm.__enter__()
            stack.append(cm)
        yield uuids
    finally:
        for cm in stack:
            cm.__exit__(None, None, None)
        for u in uuids.values():
            kv.remove_mdev(u)


@pytest.mark.parametrize("memlock", [None, 64 << 10, 0], ids=["default", "64KiB", "zero"])
def test_unprivileged_user_runs_every_algorithm_at_max_len(nobody_queues, memlock):
    t = time.monotonic()
    out = wd_child.run(_max_len_all_algorithms, nobody_queues, uid=wd_child.NOBODY,
                       memlock=memlock)
    wd_measure.record("nonroot_max_len", memlock=memlock, seconds=round(time.monotonic() - t, 1),
                      **out)
    assert all(out[a] == "ok" for a in ALGOS)
    assert out["vmlck_end"] == out["vmlck_start"], out  # nothing left pinned
    assert kv.dbg("pinned_pages") == 0


def test_queue_pins_do_not_eat_the_users_memlock(nobody_queues):
    """With RLIMIT_MEMLOCK 8 MiB the user locks 6 MiB, runs 16 MiB requests,
    then locks the remaining 2 MiB: the queue kept none of the budget."""
    limit = 8 * MiB
    out = wd_child.run(_max_len_all_algorithms, {"crc32c": nobody_queues["crc32c"],
                                                 "memcpy": nobody_queues["memcpy"]},
                       6 * MiB, 2 * MiB - 4096, uid=wd_child.NOBODY, memlock=limit)
    assert out["mlock_first"] == 0, out
    assert out["mlock_after"] == 0, out
    assert out["vmlck_end"] == 6 * 1024, out


# -- item 7: the queue belongs to its owner's address space -----------------------------

def _owner(u, ready_w):
    """Owner: opens the queue, pins pages with requests in flight, forks a
    child that only holds the fds, then waits to be killed."""
    q = kv.Queue(mdev=u)
    q.own_mdev = False
    n = 4 * MiB
    data = rnd(n, 8)
    _, src, _ = q.dma_buffer(n, data)
    _, dst, _ = q.dma_buffer(64)
    q.submit([kv.desc(i, kv.WD_OP_SHA256, src, n, dst, 32) for i in range(64)])
    holder = os.fork()
    if holder == 0:
        time.sleep(120)
        os._exit(0)
    os.write(ready_w, f"{holder}\n".encode())
    time.sleep(120)
    os._exit(1)


def test_owner_exit_releases_everything_while_a_child_holds_the_fd():
    u = kv.create_mdev("wd_dummy.0", "sha256")
    qd = ("wd_dummy.0", u)
    r, w = os.pipe()
    owner = os.fork()
    if owner == 0:
        try:
            os.close(r)
            _owner(u, w)
        finally:
            os._exit(2)
    os.close(w)
    holder = int(os.read(r, 64).decode().strip())
    os.close(r)
    try:
        wait_for(lambda: pinned(*qd) > 0, 60, "the owner's requests to pin pages")
        os.kill(owner, signal.SIGKILL)
        os.waitpid(owner, 0)
        t = time.monotonic()
        wait_for(lambda: kv.dbg("pinned_pages") == 0, 30,
                 "pins released while the holder still has the fd")
        wd_measure.record("owner_exit_unpin", seconds=round(time.monotonic() - t, 3))
        os.kill(holder, 0)  # still alive, still holding the fd (not our child)
        assert kv.read(os.path.join(kv.DEBUGFS, *qd, "state")) == "dead"
    finally:
        os.kill(holder, signal.SIGKILL)
    # Once the holder is gone too the mdev can be removed (remove waits for it).
    kv.remove_mdev(u)
    assert not os.path.exists(f"{kv.MDEV_DEVICES}/{u}")


# -- the DMA API: the sample maps requests for its device ------------------------------

@pytest.fixture(scope="module")
def dma_mode():
    with wd_modules.dummy_with(dma_api=1):
        yield


@pytest.mark.parametrize("size", [0, 1, 4097, MiB + 13, kv.WD_MAX_LEN])
def test_dma_api_every_algorithm(dma_mode, size):
    data = rnd(size, 9)
    with kv.Queue("wd_dummy.0", "memcpy") as q:
        _, src, _ = q.dma_buffer(size, data)
        room = min(size + 64, kv.WD_MAX_LEN)
        dm, dst, _ = q.dma_buffer(room, b"\xaa" * room)
        c = q.run(kv.WD_OP_MEMCPY, src, size, dst, room)
        assert (c.status, c.out_len) == (0, size)
        assert dm[:size] == data and dm[size:room] == b"\xaa" * (room - size)
    with kv.Queue("wd_dummy.1", "crc32c") as q:
        _, src, _ = q.dma_buffer(size, data)
        assert q.run(kv.WD_OP_CRC32C, src, size).result == kv.kernel_crc32c(data)
    with kv.Queue("wd_dummy.0", "sha256") as q:
        _, src, _ = q.dma_buffer(size, data)
        dm, dst, _ = q.dma_buffer(64)
        assert q.run(kv.WD_OP_SHA256, src, size, dst, 32).status == 0
        assert dm[:32] == hashlib.sha256(data).digest()
    with kv.Queue("wd_dummy.1", "zlib") as q:
        data = (data[:size // 2] + b"z" * size)[:size]  # fits WD_MAX_LEN deflated
        _, src, _ = q.dma_buffer(size, data)
        cap = min(kv.abi.deflate_bound(size), kv.WD_MAX_LEN)
        cm, comp, _ = q.dma_buffer(cap)
        c = q.run(kv.WD_OP_DEFLATE, src, size, comp, cap)
        assert c.status == 0 and zlib.decompress(cm[:c.out_len]) == data
    assert kv.dbg("pinned_pages") == 0


def test_dma_api_share_all_queue(dma_mode):
    data = rnd(300000, 10)
    with kv.Queue("wd_dummy.0", "memcpy-sva") as q:
        src, sa = anon(len(data), data)
        dst, da = anon(len(data))
        c = q.run(kv.WD_OP_MEMCPY, sa, len(data), da, len(data))
        assert c.status == 0 and dst[:] == data
        # The queue's own ring is refused as a buffer.
        sq = kv.ctypes.addressof(kv.ctypes.c_char.from_buffer(q.sq))
        assert q.run(kv.WD_OP_MEMCPY, sa, 64, sq, 64).status == kv.WD_STS_BAD_ADDR


def test_dma_api_unmap_race(dma_mode):
    stats = _unmap_stress(STRESS_SECONDS / 2)
    wd_measure.record("unmap_stress", mode="dma_api", **stats)
    assert kv.dbg("pinned_pages") == 0


def test_dma_api_unprivileged_8MiB_memlock(dma_mode, nobody_queues):
    """The DMA API pins (the device needs the pages): in chunks, so 16 MiB
    requests fit an 8 MiB RLIMIT_MEMLOCK, and nothing stays pinned."""
    out = wd_child.run(_max_len_all_algorithms, nobody_queues, uid=wd_child.NOBODY,
                       memlock=8 * MiB)
    assert all(out[a] == "ok" for a in ALGOS)
    assert out["vmlck_end"] == out["vmlck_start"], out
