"""In-guest, edu machines only: memcpy requests carried out by QEMU's edu device (wd_edu.ko),
byte for byte, across pages, fills of the 4 KiB device buffer and the driver's 64 KiB map
windows; every DMA completed by an MSI; nothing mapped or pinned after any request, good
or bad.

QEMU's edu takes 100 ms per DMA (two per 4095-byte fill, more where a fill crosses a page
that is not contiguous in DMA address space): about 20 KiB/s.  The sizes here move about
220 KiB in all; a WD_MAX_LEN copy (8196 DMAs) takes 14 minutes at the very least, so it
runs only when asked for by name (-k test_max_len_copy)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import edu  # noqa: E402
import kernel_vfio as kv  # noqa: E402

pytestmark = edu.need_edu

# (bytes, src offset, dst offset): empty, one byte, a fill, a fill and a byte, a page,
# pages crossed at odd offsets on both sides, two fills unaligned, a map window crossed.
SIZES = [
    (0, 0, 0),
    (1, 0, 0),
    (edu.FILL, 0, 0),
    (edu.FILL + 1, 0, 0),
    (4096, 0, 0),
    (300, 4000, 100),
    (2 * edu.FILL + 2, 1, 4095),
    (edu.WINDOW + 5, 7, 3),
]


@pytest.fixture
def q():
    dev = edu.parent()
    q = edu.queue(dev)
    try:
        yield q
    finally:
        q.close()
    assert edu.released(dev) == []


def _check_copy(q, n, src_off, dst_off, **kw):
    dev = q.parent
    before = edu.counters(dev)
    cqe, data, out, intact = edu.copy(q, n, src_off, dst_off, **kw)
    d = edu.delta(before, edu.counters(dev))
    what = f"{n} B, src +{src_off}, dst +{dst_off}"
    assert (cqe.tag, cqe.status, cqe.out_len) == (7, kv.WD_STS_OK, n), f"{what}: {cqe}"
    assert out == data, f"{what}: the copy differs from the source"
    assert intact, f"{what}: bytes around dst were written"
    fills = -(-n // edu.FILL)
    # The device did it: at least one DMA in and one out per fill, each with its MSI.
    assert d["dmas"] >= 2 * fills, f"{what}: {d}"
    assert d["irqs"] == d["dmas"] and d["lost_irqs"] == 0, f"{what}: {d}"
    assert d["requests"] == 1, f"{what}: {d}"
    assert edu.released(dev, q) == [], f"{what}: left after the request"
    return d


@pytest.mark.slow(300)
def test_copies_are_byte_exact_across_pages_fills_and_windows(q):
    for n, so, do in SIZES:
        _check_copy(q, n, so, do)


@pytest.mark.slow(300)
def test_copy_of_several_windows(q):
    _check_copy(q, 2 * edu.WINDOW + 3, 5, 0)


@pytest.mark.slow(3600)
def test_max_len_copy(q, request):
    """WD_MAX_LEN bytes through the device: 4098 fills, 14 minutes at the very least."""
    if "max_len" not in (request.config.getoption("keyword") or ""):
        pytest.skip("a WD_MAX_LEN copy takes 14+ minutes on QEMU's edu (100 ms per DMA): "
                    "run it with -k test_max_len_copy (and --vm-timeout 3600)")
    _check_copy(q, kv.WD_MAX_LEN, 0, 0, timeout=3000)


def test_bad_requests_get_statuses_and_touch_nothing(q):
    dev = q.parent
    _, src, _ = q.dma_buffer(8192, b"x" * 8192)
    dm, dst, _ = q.dma_buffer(8192)
    _, ro, _ = q.dma_buffer(8192, read_only=True)
    unmapped = 1 << 40
    cases = [
        (dict(opcode=kv.WD_OP_CRC32C, src=src, src_len=10, dst=dst, dst_len=10), kv.WD_STS_BAD_OPCODE),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=10, dst=dst, dst_len=10, flags=kv.WD_DF_MORE),
         kv.WD_STS_BAD_FLAGS),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=10, dst=dst, dst_len=10, __rsvd=1 << 64),
         kv.WD_STS_BAD_FLAGS),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=kv.WD_MAX_LEN + 1, dst=dst, dst_len=kv.WD_MAX_LEN + 1),
         kv.WD_STS_BAD_LEN),
        (dict(opcode=kv.WD_OP_MEMCPY, src=(1 << 64) - 4, src_len=10, dst=dst, dst_len=10), kv.WD_STS_BAD_LEN),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=10, dst=dst, dst_len=9), kv.WD_STS_NOSPC),
        (dict(opcode=kv.WD_OP_MEMCPY, src=unmapped, src_len=10, dst=dst, dst_len=10), kv.WD_STS_BAD_ADDR),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=10, dst=unmapped, dst_len=10), kv.WD_STS_BAD_ADDR),
        (dict(opcode=kv.WD_OP_MEMCPY, src=src, src_len=10, dst=ro, dst_len=10), kv.WD_STS_BAD_ADDR),
        # half shared: the second page of src is not
        (dict(opcode=kv.WD_OP_MEMCPY, src=src + 8192 - 5, src_len=10, dst=dst, dst_len=10), kv.WD_STS_BAD_ADDR),
        (dict(opcode=kv.WD_OP_NOP), kv.WD_STS_OK),
    ]
    for i, (fields, want) in enumerate(cases):
        before = edu.counters(dev)
        q.submit([dict(tag=100 + i, **fields)])
        cqe = q.reap(1)[0]
        d = edu.delta(before, edu.counters(dev))
        assert (cqe.tag, cqe.status, cqe.out_len) == (100 + i, want, 0), f"{fields}: {cqe}"
        assert d["dmas"] == 0, f"{fields}: the device moved data for a bad request: {d}"
        assert edu.released(dev, q) == [], fields
    assert bytes(dm[:10]) == bytes(10), "a refused request wrote dst"
    # The queue goes on.
    cqe, data, out, _ = edu.copy(q, 10)
    assert cqe.status == kv.WD_STS_OK and out == data


def test_many_requests_in_flight_complete_in_order(q):
    n, count = 100, 8
    _, src, _ = q.dma_buffer(n * count, os.urandom(n * count))
    dm, dst, _ = q.dma_buffer(n * count)
    q.submit([kv.desc(i, kv.WD_OP_MEMCPY, src + i * n, n, dst + i * n, n) for i in range(count)])
    cqes = q.reap(count, timeout=60)
    assert [(c.tag, c.status, c.out_len) for c in cqes] == [(i, kv.WD_STS_OK, n) for i in range(count)]
    assert bytes(dm[:n * count]) == bytes(q.bufs[0][0][:n * count])
    assert edu.released(q.parent, q) == []
