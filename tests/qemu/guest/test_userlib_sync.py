"""In-guest: non-blocking calls return at once, the sync forms sleep on the
eventfd (~0% CPU), asyncio, fork and a queue whose device goes away."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import zlib

import pytest

try:
    import wrapdrive
except ImportError:  # run from the repo root without an install
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive

from wrapdrive import Request, abi
from wrapdrive.crc import crc32c_sw

BIG = abi.WD_MAX_LEN  # a 16 MiB sha256 keeps the engine busy for a while


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def fill_with_slow_requests(q: wrapdrive.Queue) -> tuple[list[Request], wrapdrive.Buffer]:
    """Fill the ring: one 16 MiB sha256 and NOPs behind it.  A strictly
    ordered queue completes nothing before the slow one, and closing the
    queue waits for no more than one engine round of NOPs (a round of 64 x
    16 MiB would take minutes under TCG)."""
    src = q.alloc(BIG)
    dst = q.alloc(4096)
    reqs = [Request(wrapdrive.WD_OP_SHA256, src.addr, BIG, dst.addr, 32)] + [
        Request(wrapdrive.WD_OP_NOP) for _ in range(q.entries - 1)]
    assert q.send_batch(reqs) == q.entries
    return reqs, src


def test_wd_send_on_full_ring_and_wd_recv_on_empty_return_at_once() -> None:
    with wrapdrive.request_queue("sha256") as q:
        t = time.perf_counter()
        with pytest.raises(wrapdrive.QueueEmptyError):
            wrapdrive.wd_recv(q)
        assert time.perf_counter() - t < 0.05
        fill_with_slow_requests(q)
        extra = Request(wrapdrive.WD_OP_SHA256, 0, 0)
        t = time.perf_counter()
        with pytest.raises(wrapdrive.QueueFullError) as ei:
            wrapdrive.wd_send(q, extra)
        took = time.perf_counter() - t
        assert ei.value.errno == 16 and took < 0.05, took  # EBUSY, no waiting
        t = time.perf_counter()
        with pytest.raises(wrapdrive.QueueEmptyError):
            wrapdrive.wd_recv(q)  # requests in flight, none done yet
        assert time.perf_counter() - t < 0.05


def test_blocked_recv_sync_uses_almost_no_cpu() -> None:
    with wrapdrive.request_queue("crc32c") as q:
        c0, w0 = cpu_seconds(), time.monotonic()
        with pytest.raises(TimeoutError):
            q.recv_sync(timeout=1.0)
        cpu, wall = cpu_seconds() - c0, time.monotonic() - w0
        print(f"\nidle recv_sync: {cpu * 1000:.1f} ms CPU over {wall:.2f} s")
        assert wall >= 1.0 and cpu < 0.05 * wall


def test_recv_sync_sleeps_until_the_irq_and_gets_the_result() -> None:
    with wrapdrive.request_queue("sha256") as q:
        src = q.alloc(BIG)
        dst = q.alloc(4096)
        data = os.urandom(BIG)
        src.write(data)
        reqs = [Request(wrapdrive.WD_OP_SHA256, src.addr, BIG, dst.addr + 32 * i, 32)
                for i in range(8)]
        assert q.send_batch(reqs) == 8
        c0, w0 = cpu_seconds(), time.monotonic()
        got = [wrapdrive.wd_recv_sync(q, timeout=120) for _ in reqs]
        cpu, wall = cpu_seconds() - c0, time.monotonic() - w0
        print(f"\n8 x 16 MiB sha256: recv_sync used {cpu * 1000:.1f} ms CPU over {wall:.2f} s")
        assert got == reqs  # strictly ordered queue
        digest = hashlib.sha256(data).digest()
        assert all(dst.read(32, 32 * i) == digest for i in range(8))
        assert wall > 0.3, "too fast to tell sleeping from spinning"
        assert cpu < 0.05 * wall


def test_send_sync_waits_for_room_while_sleeping() -> None:
    with wrapdrive.request_queue("sha256") as q:
        reqs, src = fill_with_slow_requests(q)
        extra = Request(wrapdrive.WD_OP_SHA256, src.addr, 64, src.addr + 4096, 32)
        c0, w0 = cpu_seconds(), time.monotonic()
        assert wrapdrive.wd_send_sync(q, extra) == 0
        cpu, wall = cpu_seconds() - c0, time.monotonic() - w0
        print(f"\nsend_sync on a full ring: {cpu * 1000:.1f} ms CPU over {wall:.2f} s")
        assert reqs[0].done  # room came from the first completion
        assert cpu < 0.2 * wall + 0.02


def test_asyncio_recv_lets_the_loop_run() -> None:
    async def main() -> tuple[int, list[int]]:
        with wrapdrive.request_queue("crc32c") as q:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            tick = asyncio.create_task(ticker())
            buf = q.alloc(BIG)
            buf.write(b"\x5a" * BIG)
            slow = Request(wrapdrive.WD_OP_CRC32C, buf.addr, BIG)
            await q.send_async(slow)
            got = await q.recv_async()
            assert got is slow and got.ok
            small = [Request(wrapdrive.WD_OP_CRC32C, buf.addr, n) for n in range(1, 200)]
            done = await asyncio.gather(*(q.run_async(r) for r in small))
            tick.cancel()
            return ticks, [r.result for r in done]

    ticks, results = asyncio.run(main())
    assert ticks > 0, "the event loop was blocked while waiting"
    assert results == [crc32c_sw(b"\x5a" * n) for n in range(1, 200)]


def test_pythonic_async_run() -> None:
    async def main() -> bytes:
        with wrapdrive.request_queue("sha256") as q:
            buf = q.alloc(8192)
            buf.write(b"abc")
            req = Request(wrapdrive.WD_OP_SHA256, buf.addr, 3, buf.addr + 4096, 32)
            await q.run_async(req)
            return buf.read(32, 4096)

    assert asyncio.run(main()) == hashlib.sha256(b"abc").digest()


def test_one_shot_coroutines_on_the_engine() -> None:
    data = os.urandom(48 << 10) + b"text " * 4000

    async def main() -> tuple[bytes, int, bytes, bytes]:
        sha = await wrapdrive.request_queue_async("sha256")
        crc = await wrapdrive.request_queue_async("crc32c")
        z = await wrapdrive.request_queue_async("zlib")
        with sha, crc, z:
            digest, value, packed = await asyncio.gather(
                sha.sha256_async(data), crc.crc32c_async(data, 7), z.compress_async(data))
            return digest, value, packed, await z.decompress_async(packed)

    digest, value, packed, back = asyncio.run(main())
    assert digest == hashlib.sha256(data).digest()
    assert value == crc32c_sw(data, 7)
    assert zlib.decompress(packed) == data and back == data


def test_forked_child_cannot_use_the_parents_queue() -> None:
    with wrapdrive.request_queue("crc32c") as q:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                q.crc32c(b"x")
            except wrapdrive.QueueReleasedError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert q.crc32c(b"x") == crc32c_sw(b"x")  # the parent's queue is intact


def test_dead_queue_is_reported_not_hung() -> None:
    """Unbinding the parent device kills the queue: a sleeping recv_sync
    wakes with QueueDeadError, the queue can still be released."""
    dev = "wd_dummy.1"
    prio = f"/sys/class/mdev_bus/{dev}/priority"
    with open(prio) as f:
        saved = f.read()
    with open("/sys/class/mdev_bus/wd_dummy.0/priority") as f:
        saved0 = f.read()
    with open("/sys/class/mdev_bus/wd_dummy.0/priority", "w") as f:
        f.write("0")  # force wd_dummy.1
    try:
        q = wrapdrive.request_queue("crc32c")
    finally:
        with open("/sys/class/mdev_bus/wd_dummy.0/priority", "w") as f:
            f.write(saved0)
    assert q.parent == dev
    assert q.crc32c(b"alive") == crc32c_sw(b"alive")
    unbind = subprocess.Popen(
        ["sh", "-c", f"echo {dev} > /sys/bus/platform/drivers/wd_dummy/unbind"])
    try:
        t = time.monotonic()
        with pytest.raises(wrapdrive.QueueDeadError):
            q.recv_sync(timeout=60)  # a TimeoutError here would fail the test
        woke = time.monotonic() - t
        # the unbind waits for us: it asks for the release (WD_Q_RELEASE and
        # a signal) at once, so the sleeper must wake long before the timeout
        assert woke < 20, f"the death took {woke:.1f} s to be noticed"
        assert unbind.poll() is None, "unbind returned while the queue was still open"
        with pytest.raises(wrapdrive.QueueDeadError):
            q.crc32c(b"dead")
    finally:
        q.close()
        unbind_status = unbind.wait(timeout=120)
        with open("/sys/bus/platform/drivers/wd_dummy/bind", "w") as f:
            f.write(dev)
        with open(prio, "w") as f:
            f.write(saved)
    assert unbind_status == 0, f"unbind of {dev} failed with status {unbind_status}"
    with wrapdrive.request_queue("crc32c") as q2:
        assert q2.crc32c(b"back") == crc32c_sw(b"back")


def test_threads_hammering_one_queue_get_their_own_results() -> None:
    """A Queue shared by threads: libwd's per-queue mutex and one sleeper on
    the eventfd; cffi releases the GIL during each call.  Every result checked."""
    import threading

    with wrapdrive.request_queue("crc32c") as q:
        errors: list[str] = []

        def worker(k: int) -> None:
            for i in range(300):
                data = bytes([k, i & 0xFF]) * (1 + (i * 7 + k) % 200)
                try:
                    if i % 3 == 0:
                        chunks = [data[:j + 1] for j in range(8)]
                        if q.crc32c_many(chunks) != [crc32c_sw(c) for c in chunks]:
                            errors.append(f"thread {k}: crc32c_many {i}")
                    elif q.crc32c(data) != crc32c_sw(data):
                        errors.append(f"thread {k}: crc32c {i}")
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(f"thread {k}: {exc!r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        assert not errors, errors[:5]
        assert q.in_flight == 0


def test_seed_pair_and_runners_share_a_queue_across_threads() -> None:
    """One thread uses wd_send/wd_recv_sync while others run one-shot calls
    on the same queue: nobody steals another's completion."""
    import threading

    with wrapdrive.request_queue("crc32c") as q:
        buf = q.alloc(4096)
        buf.write(b"seed" * 1024)
        bad: list[str] = []

        def seed_user() -> None:
            for i in range(500):
                r = Request(wrapdrive.WD_OP_CRC32C, buf.addr, 1 + i % 4096)
                wrapdrive.wd_send_sync(q, r)
                got = wrapdrive.wd_recv_sync(q, timeout=60)
                if got is not r or got.result != crc32c_sw((b"seed" * 1024)[:1 + i % 4096]):
                    bad.append(f"seed {i}")

        def runner(k: int) -> None:
            for i in range(500):
                d = bytes([k]) * (i + 1)
                if q.crc32c(d) != crc32c_sw(d):
                    bad.append(f"runner {k} {i}")

        threads = [threading.Thread(target=seed_user)] + [
            threading.Thread(target=runner, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads) and not bad, bad[:5]
