"""asyncio on the host: the Queue's one-shot coroutines and request_queue_async.

No device is opened here.  The coroutines are run on a Queue whose ring is
libwd's own, attached to a simulated device (simqueue.py) that a thread of
the test plays: the C call runs for real (staging, doorbell, the wait on the
eventfd), and the device completes the request only once the event loop has
shown it was free while the call waited.  The simulated device copies input
to output and answers a fixed result, so what these tests check is the
plumbing (the call's outcome reaches the coroutine, the loop is not
blocked), not the algorithms: those are checked against independent
references on the real engine in the VM suite (tests/qemu/guest)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fakesysfs import FakeDevice, FakeType, build
from simqueue import SimQueue
from wrapdrive import (
    BadRequestError,
    NoDeviceError,
    Queue,
    QueueReleasedError,
    abi,
    api,
    request_queue_async,
)
from wrapdrive.queue import OUTPUT_KEEP

#: ticks of the event loop the device waits for before it completes a request
TICKS = 5
#: how long the device waits for them: the loop was blocked if this runs out
GATE_SECONDS = 10.0
#: what the simulated device answers in wd_cqe.result
RESULT = 0x5EED


class Device(threading.Thread):
    """Plays the device of a SimQueue: completes each request once ``gate``
    is set (by the event loop, while the request waits)."""

    def __init__(self, sim: SimQueue, gate: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.gate = gate
        self.stop = threading.Event()
        self.gate_opened: list[bool] = []

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sim.pending():
                self.stop.wait(0.001)
                continue
            self.gate_opened.append(self.gate.wait(GATE_SECONDS))
            self.sim.complete_all(RESULT)


def queue_on(sim: SimQueue, algo: str) -> Queue:
    """A Queue for ``algo`` on the SimQueue's ring (no device to open: the ring is
    attached already), with the state Queue.__init__ would give it."""
    q = Queue.__new__(Queue)
    q._released = False
    q.q = sim.q
    q.algo_type = algo
    q.opcodes = (abi.WD_OP_NOP, *abi.ALGO_OPCODES.get(algo, ()))
    q._in_flight = set()
    q._lock = threading.Lock()
    q._buffers = []
    q._outputs = []
    q._async_waiters = []
    q._async_loop = None
    q.efd = sim.efd
    return q


@pytest.fixture
def sim_queue() -> Iterator[Callable[[str], tuple[Queue, Device, threading.Event]]]:
    """A Queue for an algorithm, on libwd's ring over a simulated device."""
    made: list[tuple[Queue, SimQueue, Device]] = []

    def make(algo: str) -> tuple[Queue, Device, threading.Event]:
        sim = SimQueue()
        q = queue_on(sim, algo)
        gate = threading.Event()
        dev = Device(sim, gate)
        dev.start()
        made.append((q, sim, dev))
        return q, dev, gate

    yield make
    for q, sim, dev in made:
        dev.stop.set()
        dev.join(GATE_SECONDS + 5)
        q._released = True  # the sim owns the struct wd_queue
        sim.close()


async def while_ticking(work: Awaitable[Any], gate: threading.Event) -> tuple[Any, int]:
    """``work``'s result and how often the loop ticked meanwhile; the gate
    opens after TICKS ticks, which only a loop left free can make."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1
            if ticks == TICKS:
                gate.set()

    tick = asyncio.create_task(ticker())
    try:
        return await work, ticks
    finally:
        tick.cancel()


@pytest.mark.parametrize(("algo", "call", "want"), [
    ("crc32c", lambda q: q.crc32c_async(b"abc", 7), RESULT + 7),  # result + seed
    ("sha256", lambda q: q.sha256_async(bytes(range(32))), bytes(range(32))),
    ("zlib", lambda q: q.compress_async(b"input of the simulated device"),
     b"input of the simulated device"),
    ("zlib", lambda q: q.decompress_async(b"copied back"), b"copied back"),
], ids=["crc32c", "sha256", "compress", "decompress"])
def test_one_shot_coroutines_leave_the_loop_free(
        sim_queue: Callable[[str], tuple[Queue, Device, threading.Event]], algo: str,
        call: Callable[[Queue], Awaitable[Any]], want: Any) -> None:
    q, dev, gate = sim_queue(algo)
    got, ticks = asyncio.run(while_ticking(call(q), gate))
    assert dev.gate_opened == [True], "the event loop was blocked while the call waited"
    assert ticks >= TICKS
    assert got == want  # the simulated device's answer, carried through


def test_one_shot_outputs_come_from_a_bounded_set_of_shared_buffers(
        sim_queue: Callable[[str], tuple[Queue, Device, threading.Event]]) -> None:
    """copy/compress/decompress write into the queue's own output buffers, one per
    call in flight, at most OUTPUT_KEEP kept: threads on one queue each get their own
    bytes back (the simulated device copies input to output), whatever the sizes."""
    q, _, gate = sim_queue("memcpy")
    gate.set()
    sizes = [1, 5000, 70_000, 300_000, 3]

    def worker(k: int) -> int:
        wrong = 0
        for i in range(20):
            data = bytes([k]) * sizes[(i + k) % len(sizes)]
            wrong += q.copy(data) != data
        return wrong

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(worker, range(4), timeout=60)) == [0, 0, 0, 0]
    assert len(q._outputs) <= OUTPUT_KEEP and set(map(id, q._outputs)) <= set(map(id, q._buffers))
    assert len(q._buffers) == len(q._outputs), "an output buffer was neither kept nor freed"


def test_errors_reach_the_coroutine(
        sim_queue: Callable[[str], tuple[Queue, Device, threading.Event]]) -> None:
    q, dev, _ = sim_queue("crc32c")
    with pytest.raises(BadRequestError, match="this queue does 'crc32c', not 'zlib'"):
        asyncio.run(q.compress_async(b"x"))
    z, zdev, _ = sim_queue("zlib")
    z._released = True  # as close() leaves it
    with pytest.raises(QueueReleasedError):
        asyncio.run(z.decompress_async(b"x"))
    assert dev.gate_opened == zdev.gate_opened == []  # neither call reached the device


def tree(tmp_path: Path) -> Path:
    return build(tmp_path, [FakeDevice("wd_dummy.0", 0, 10,
                                       types=[FakeType("sha256", "sha256")])])


def test_request_queue_async_gives_request_queues_errors(tmp_path: Path) -> None:
    # the real selection on a fake sysfs tree, in a worker thread
    with pytest.raises(NoDeviceError, match="no device offers algo_type 'zlib'"):
        asyncio.run(request_queue_async("zlib", root=tree(tmp_path)))


class Opened:
    """What a stand-in for request_queue hands back: records close()."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_request_queue_async_opens_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # plumbing only: opening a real queue needs the VM; this stand-in waits, as
    # an open that creates an mdev and waits for udev does, until the loop ticked
    gate = threading.Event()
    seen: dict[str, Any] = {}

    def slow_open(algo_type: str, flags: int = 0, **kw: Any) -> Opened:
        seen.update(kw, algo_type=algo_type, flags=flags,
                    on_main_thread=threading.current_thread() is threading.main_thread(),
                    gate=gate.wait(GATE_SECONDS))
        return Opened()

    monkeypatch.setattr(api, "request_queue", slow_open)
    got, ticks = asyncio.run(while_ticking(
        request_queue_async("sha256", 3, weak_order=True, uuid="u"), gate))
    assert isinstance(got, Opened) and ticks >= TICKS
    assert seen["gate"] and not seen["on_main_thread"]
    assert (seen["algo_type"], seen["flags"], seen["weak_order"], seen["uuid"]) == \
        ("sha256", 3, True, "u")


def test_request_queue_async_cancelled_closes_what_it_opened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started, finish = threading.Event(), threading.Event()
    opened: list[Opened] = []

    def slow_open(algo_type: str, flags: int = 0, **kw: Any) -> Opened:
        started.set()
        finish.wait(GATE_SECONDS)
        opened.append(Opened())
        return opened[-1]

    monkeypatch.setattr(api, "request_queue", slow_open)

    async def main() -> None:
        task = asyncio.create_task(request_queue_async("sha256"))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finish.set()  # the open completes after its caller gave up
        for _ in range(int(GATE_SECONDS * 1000)):
            if opened and opened[0].closed:
                break
            await asyncio.sleep(0.001)

    asyncio.run(main())
    assert len(opened) == 1 and opened[0].closed


class _ArmWaitAfter:
    """wrapdrive.queue's ``lib`` with one change: ``before()`` runs just before each
    wd_arm_wait (the moment a device's completions may land)."""

    def __init__(self, real: Any, before: Callable[[], None]) -> None:
        self._real = real
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def wd_arm_wait(self, q: Any) -> int:
        self._before()
        return int(self._real.wd_arm_wait(q))


def test_a_task_that_drains_the_signal_wakes_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task A sleeps on the eventfd; task C's wd_arm_wait drains the signal of A's
    completion, then C reaps A's completion and its own and returns.  A must be woken
    (it hung in CI's vm-6.1 run: the loop sat in select with A's request done)."""
    from wrapdrive import WD_OP_CRC32C, Request
    from wrapdrive import queue as queue_mod
    from wrapdrive.abi import ffi

    sim = SimQueue()
    q = queue_on(sim, "crc32c")
    data = ffi.new("char[]", b"payload")
    addr = int(ffi.cast("uintptr_t", data))
    calls = {"arm": 0}

    def device_lands_both() -> None:
        calls["arm"] += 1
        if calls["arm"] == 2:  # C's first wait: A's and C's requests complete now
            sim.complete_all(RESULT)

    monkeypatch.setattr(queue_mod, "lib", _ArmWaitAfter(queue_mod.lib, device_lands_both))
    a = Request(WD_OP_CRC32C, addr, 7)
    c = Request(WD_OP_CRC32C, addr, 7)

    async def main() -> None:
        ta = asyncio.create_task(q.run_async(a))
        await asyncio.sleep(0.01)  # A sent, found nothing, armed and sleeps
        assert not ta.done() and calls["arm"] == 1
        await asyncio.wait_for(asyncio.gather(ta, q.run_async(c)), 5)

    try:
        asyncio.run(main())
        assert a.c.status == 0 and c.c.status == 0 and calls["arm"] == 2
    finally:
        q._released = True
        sim.close()
