"""Host unit tests of PreparedBatch: it must write the descriptors
Ring.send_raw writes, at the same slots, except that a descriptor's tag is
its ring slot; across the ring's end and the 32-bit index wrap.  The
FakeRegions stand-in is the ring unit tests' own."""

from __future__ import annotations

import pytest
from test_userlib_ring import ENTRIES, FakeRegions
from wrapdrive import uapi
from wrapdrive.prepared import PreparedBatch

SRCS = [0x10000, 0x20000, 0x30000]
LENS = [64, 0, 4096]
DSTS = [0x90000, 0xA0000, 0xB0000]
DLENS = [32, 32, 32]


def _run(start: int, prepared: bool, rounds: int) -> list[tuple[int, ...]]:
    f = FakeRegions(start)
    r = f.ring()
    pb = PreparedBatch(uapi.WD_OP_SHA256, SRCS, LENS, DSTS, DLENS)
    seen: list[tuple[int, ...]] = []
    for _ in range(rounds):
        if prepared:
            first = pb.submit(r)
        else:
            first = r.send_raw(uapi.WD_OP_SHA256, SRCS, LENS, DSTS, DLENS)
        descs = f.consume()
        assert descs[0][0] == (first if not prepared else first & (ENTRIES - 1))
        seen += descs
        for d in descs:
            f.complete(d[0])
        assert len(r.recv_raw()) == uapi.CQE_VALUES * len(SRCS)
    return seen


@pytest.mark.parametrize("start", [0, 5, 0xFFFFFFFE])
def test_prepared_writes_what_send_raw_writes(start: int) -> None:
    # 5 rounds of 3 on an 8-entry ring cross the ring's end; the last start
    # crosses the 32-bit wrap inside a batch.
    raw = _run(start, False, 5)
    prepared = _run(start, True, 5)
    assert [d[1:] for d in prepared] == [d[1:] for d in raw]
    assert [d[0] for d in prepared] == [t & (ENTRIES - 1) for t in (d[0] for d in raw)]


def test_prepared_is_all_or_nothing_when_full() -> None:
    f = FakeRegions()
    r = f.ring()
    pb = PreparedBatch(uapi.WD_OP_CRC32C, [0x1000] * 3, [8] * 3)
    pb.submit(r)
    pb.submit(r)
    with pytest.raises(BlockingIOError):
        pb.submit(r)  # 6 in flight, 2 free: refused at once, nothing written
    assert f.db[uapi.DB_SQ_TAIL_WORD] == 6
    assert [d[0] for d in f.consume()] == [0, 1, 2, 3, 4, 5]
    assert ENTRIES == 8


def test_prepared_templates_are_per_slot_and_cached() -> None:
    pb = PreparedBatch(uapi.WD_OP_CRC32C, [0x1000] * 2, [8] * 2)
    t = pb.template(8, 7)
    assert [uapi.DESC_STRUCT.unpack_from(t, i * uapi.DESC_STRUCT.size)[0] for i in range(2)] == [7, 0]
    assert pb.template(8, 7) is t


@pytest.mark.parametrize("kwargs", [
    {"srcs": [], "src_lens": []},
    {"srcs": [1, 2], "src_lens": [1]},
    {"srcs": [1], "src_lens": [uapi.WD_MAX_LEN + 1]},
    {"srcs": [1], "src_lens": [1], "dsts": [1, 2]},
])
def test_prepared_rejects_bad_shapes(kwargs: dict[str, list[int]]) -> None:
    with pytest.raises(ValueError):
        PreparedBatch(uapi.WD_OP_CRC32C, **kwargs)
