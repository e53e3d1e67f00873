"""In-guest: the seed's calls and the Pythonic layer against the real modules.

Runs as root inside a guest with wrapdrive.ko and wd_dummy.ko loaded; every
result is compared byte for byte with hashlib / zlib / a CRC-32C reference."""

from __future__ import annotations

import hashlib
import mmap
import os
import sys
import time
import zlib
from collections.abc import Iterator

import pytest

try:
    import wrapdrive
except ImportError:  # run from the repo root without an install
    sys.path.insert(0, os.path.join(os.getcwd(), "userlib", "src"))
    import wrapdrive

from wrapdrive import Capa, Request, abi
from wrapdrive.crc import crc32c_sw
from wrapdrive.memory import address_of

MDEV_DEVICES = "/sys/bus/mdev/devices"


def our_mdevs() -> set[str]:
    return {n for n in os.listdir(MDEV_DEVICES) if n.startswith("57447276-")}


@pytest.fixture(autouse=True)
def no_leaked_queues() -> Iterator[None]:
    before = our_mdevs()
    yield
    assert our_mdevs() == before, "a test leaked a queue (mdev left behind)"


def shared_mmap(q: wrapdrive.Queue, size: int) -> tuple[mmap.mmap, int]:
    mm = mmap.mmap(-1, size)
    addr = address_of(mm)
    assert wrapdrive.wd_mem_share(q, addr, size, 0) == 0
    return mm, addr


def test_seed_calls_crc32c_round_trip() -> None:
    q = wrapdrive.wd_request_queue(Capa("crc32c"))
    try:
        assert q.name in our_mdevs()
        with pytest.raises(wrapdrive.QueueEmptyError) as ei:
            wrapdrive.wd_recv(q)
        assert ei.value.errno == 11  # EAGAIN
        mm, addr = shared_mmap(q, 8192)
        payload = b"123456789"
        mm[:9] = payload
        req = Request(wrapdrive.WD_OP_CRC32C, addr, 9)
        assert wrapdrive.wd_send(q, req) == 0
        got = wrapdrive.wd_recv_sync(q)
        assert got is req and got.status == abi.WD_STS_OK
        assert got.result == 0xE3069283 == crc32c_sw(payload)
        # wd_send_sync + polling wd_recv
        mm[100:200] = bytes(range(100))
        req2 = Request(wrapdrive.WD_OP_CRC32C, addr + 100, 100)
        assert wrapdrive.wd_send_sync(q, req2) == 0
        deadline = time.monotonic() + 10
        while True:
            try:
                r = wrapdrive.wd_recv(q)
                break
            except wrapdrive.QueueEmptyError:
                assert time.monotonic() < deadline
        assert r is req2 and r.result == crc32c_sw(bytes(range(100)))
        wrapdrive.wd_mem_unshare(q, addr, 8192)
        with pytest.raises(wrapdrive.NotSharedError):
            wrapdrive.wd_send(q, Request(wrapdrive.WD_OP_CRC32C, addr, 9))
    finally:
        wrapdrive.wd_release_queue(q)
    assert q.name not in our_mdevs()
    with pytest.raises(wrapdrive.QueueReleasedError):
        wrapdrive.wd_send(q, Request(wrapdrive.WD_OP_CRC32C, 0, 0))
    with pytest.raises(wrapdrive.QueueReleasedError):
        wrapdrive.wd_recv(q)
    with pytest.raises(wrapdrive.QueueReleasedError):
        wrapdrive.wd_mem_share(q, 4096, 4096, 0)
    wrapdrive.wd_release_queue(q)  # twice is harmless


def test_a_request_the_caller_dropped_comes_back_whole() -> None:
    """libwd holds a struct wd_req the Request owns: the queue keeps every request it
    was given alive until a receive hands it back (a dropped one used to come back as a
    garbage handle, and its C memory was freed while the ring still pointed at it)."""
    import gc

    with wrapdrive.request_queue("crc32c") as q:
        mm, addr = shared_mmap(q, 4096)
        mm[:9] = b"123456789"
        n = 32
        for _ in range(n):
            assert q.send(Request(wrapdrive.WD_OP_CRC32C, addr, 9))
        assert q.send_batch([Request(wrapdrive.WD_OP_NOP) for _ in range(n)]) == n
        gc.collect()
        got = [q.recv_sync(timeout=10) for _ in range(2 * n)]
        crcs = [r.result for r in got if r.opcode == wrapdrive.WD_OP_CRC32C]
        assert crcs == [0xE3069283] * n
        assert all(r.status == abi.WD_STS_OK for r in got)
        assert q.in_flight == 0


SIZES = [0, 1, 63, 64, 4095, 4096, 4097, 65536 + 3, 1 << 20]


def test_sha256_byte_exact() -> None:
    with wrapdrive.request_queue("sha256") as q:
        assert q.algo_type == "sha256" and not q.share_all
        for n in SIZES:
            data = os.urandom(n)
            assert q.sha256(data) == hashlib.sha256(data).digest(), n
        big = os.urandom(abi.WD_MAX_LEN)
        assert q.sha256(big) == hashlib.sha256(big).digest()
        with pytest.raises(wrapdrive.RequestTooLargeError):
            q.sha256(big + b"x")


def test_crc32c_byte_exact() -> None:
    with wrapdrive.request_queue("crc32c") as q:
        for n in [0, 1, 7, 8, 9, 63, 64, 1000, 4096, 20000]:
            data = os.urandom(n)
            assert q.crc32c(data) == crc32c_sw(data), n


def test_zlib_round_trips() -> None:
    with wrapdrive.request_queue("zlib") as q:
        for data in [b"", b"a", b"wrapdrive " * 5000, os.urandom(100000),
                     bytes(1 << 20)]:
            z = q.compress(data)
            assert zlib.decompress(z) == data
            assert q.decompress(z) == data
            assert q.decompress(zlib.compress(data, 9)) == data
        with pytest.raises(wrapdrive.RequestFailedError, match="BAD_DATA"):
            q.decompress(b"this is not a zlib stream")


def test_memcpy_byte_exact_and_buffers() -> None:
    with wrapdrive.request_queue("memcpy") as q:
        for n in [1, 100, 4096, 300000]:
            data = os.urandom(n)
            assert q.copy(data) == data
        a = q.alloc(8192)
        b = q.alloc(8192)
        a.write(b"\xaa" * 8192)
        q.memcpy(b, a)
        assert b.read(8192) == b"\xaa" * 8192
        q.free(a)
        q.free(b)


def test_share_all_queue_uses_process_addresses() -> None:
    with wrapdrive.request_queue("sha256", share_all=True) as q:
        assert q.share_all and q.capa_flags & wrapdrive.WD_CAPA_SHARE_ALL
        src = bytearray(os.urandom(5000))
        dst = bytearray(32)
        # no wd_mem_share needed; it is accepted and a no-op
        assert wrapdrive.wd_mem_share(q, address_of(src), len(src), 0) == 0
        req = Request(wrapdrive.WD_OP_SHA256, address_of(src), len(src), address_of(dst), 32)
        wrapdrive.wd_send_sync(q, req)
        assert wrapdrive.wd_recv_sync(q, timeout=30) is req and req.ok
        assert bytes(dst) == hashlib.sha256(src).digest()
    with wrapdrive.request_queue("memcpy", share_all=True) as q:
        assert q.copy(b"sva" * 1000) == b"sva" * 1000


def test_bad_requests_are_clear_errors_and_never_stop_the_queue() -> None:
    with wrapdrive.request_queue("crc32c") as q:
        with pytest.raises(wrapdrive.RequestTooLargeError):
            wrapdrive.wd_send(q, Request(wrapdrive.WD_OP_CRC32C, 4096, abi.WD_MAX_LEN + 1))
        with pytest.raises(wrapdrive.BadRequestError):
            wrapdrive.wd_send(q, Request(wrapdrive.WD_OP_SHA256, 0, 0))
        with pytest.raises(wrapdrive.NotSharedError):
            wrapdrive.wd_send(q, Request(wrapdrive.WD_OP_CRC32C, 0x10000, 64))
        with pytest.raises(wrapdrive.BadRequestError):
            q.sha256(b"x")  # a crc32c queue
        with pytest.raises(wrapdrive.BadRequestError):
            wrapdrive.wd_mem_share(q, 4096, 4096, 1)  # no flags are defined
        assert q.crc32c(b"still works") == crc32c_sw(b"still works")
    # an address the device cannot reach (SVA queue, nothing mapped there):
    # the device answers with a status and the queue goes on
    with wrapdrive.request_queue("sha256", share_all=True) as q:
        out = bytearray(32)
        req = Request(wrapdrive.WD_OP_SHA256, 0x7000_0000_0000, 64, address_of(out), 32)
        wrapdrive.wd_send(q, req)
        assert wrapdrive.wd_recv_sync(q, timeout=10) is req
        assert req.status == abi.WD_STS_BAD_ADDR and req.out_len == 0
        assert q.sha256(b"still works") == hashlib.sha256(b"still works").digest()


def test_weak_order_queue_when_allowed() -> None:
    with wrapdrive.request_queue("crc32c", weak_order=True) as q:
        assert q.mdev_type.endswith("crc32c-weak") and q.weak_order
        chunks = [os.urandom(1 + i % 300) for i in range(3000)]
        assert q.crc32c_many(chunks) == [crc32c_sw(c) for c in chunks]
    with wrapdrive.request_queue("crc32c") as q:
        assert not q.weak_order and q.mdev_type.endswith("-crc32c")


def test_batch_submit_many_descriptors_one_doorbell() -> None:
    with wrapdrive.request_queue("sha256") as q:
        chunks = [os.urandom(64 + i % 100) for i in range(2500)]  # > 2 rings
        assert q.sha256_many(chunks) == [hashlib.sha256(c).digest() for c in chunks]
    with wrapdrive.request_queue("crc32c") as q:
        n = q.entries
        buf = q.alloc(64 * n)
        data = os.urandom(64 * n)
        buf.write(data)
        reqs = [Request(wrapdrive.WD_OP_CRC32C, buf.addr + 64 * i, 64) for i in range(n)]
        assert q.send_batch(reqs) == n  # the whole ring in one call
        got: list[Request] = []
        deadline = time.monotonic() + 30
        while len(got) < n:
            got += q.recv_batch()
            assert time.monotonic() < deadline
        assert sorted(r.tag for r in got) == sorted(r.tag for r in reqs)
        assert all(r.ok and r.result == crc32c_sw(data[64 * i:64 * i + 64])
                   for i, r in enumerate(reqs))
        # the same through map: one C call, outcomes in input order
        pieces = [data[64 * i:64 * i + 64] for i in range(3 * n)]
        done = q.map(wrapdrive.WD_OP_CRC32C, pieces)
        assert [c.result for c in done] == [crc32c_sw(p) for p in pieces]
        assert all(c.ok for c in done)


def test_shared_buffers_are_used_in_place() -> None:
    with wrapdrive.request_queue("sha256") as q:
        buf = q.alloc(1 << 20)
        data = os.urandom(1 << 20)
        buf.write(data)
        assert q.is_shared(buf.addr, buf.size)
        assert q.sha256(buf) == hashlib.sha256(data).digest()
        assert q.sha256(buf.view[:1000]) == hashlib.sha256(data[:1000]).digest()
        assert q.sha256_many([buf.view[i:i + 100] for i in range(0, 1000, 100)]) == [
            hashlib.sha256(data[i:i + 100]).digest() for i in range(0, 1000, 100)]
        q.free(buf)
        assert not q.is_shared(buf.addr, 4096)


def test_queue_info_and_accounting() -> None:
    with wrapdrive.request_queue("memcpy") as q:
        buf = q.alloc(3 * 4096)
        info = q.info()
        assert info["parent"] in ("wd_dummy.0", "wd_dummy.1")
        assert info["entries"] == q.entries and q.entries & (q.entries - 1) == 0
        assert q.device_address(buf.addr) and q.is_shared(buf.addr, 3 * 4096)
        q.free(buf)
        assert not q.is_shared(buf.addr, 4096)
