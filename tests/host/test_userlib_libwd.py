"""libwd on the host: its build (-Wall -Wextra -Werror), its own ring tests
against a simulated device (userlib/libwd/tests/test_ring.c: wrap-around,
full/empty, tags, weak order, a hostile cq_tail, kick, death, the sleeping
protocol, threads on one queue), and the cffi binding's round trip of a
Request through wd_send/wd_recv over the same simulated memory layout.
The real device is tested in the VM suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from simqueue import SimQueue
from wrapdrive import abi
from wrapdrive.abi import ffi, lib
from wrapdrive.request import Request

LIBWD = Path(__file__).resolve().parents[2] / "userlib" / "libwd"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.fail("make and a C compiler are required")
    out = tmp_path_factory.mktemp("libwd")
    # a copy of the tree (the uapi link resolved) so the build leaves no file behind
    shutil.copytree(LIBWD, out / "libwd", symlinks=False,
                    ignore=shutil.ignore_patterns("*.o", "*.a", "*.so", "wd_bench", "test_ring"))
    res = subprocess.run(["make", "-C", str(out / "libwd"), "all"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "warning" not in res.stderr
    return out / "libwd"


def test_builds_with_all_warnings_as_errors(built: Path) -> None:
    for name in ("libwd.so", "libwd.a", "wd_bench", "tests/test_ring"):
        assert (built / name).exists(), name
    text = (LIBWD / "Makefile").read_text()
    assert "-Wall -Wextra -Werror" in text


def test_ring_logic_against_a_simulated_device(built: Path) -> None:
    res = subprocess.run([str(built / "tests/test_ring")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " 0 failed" in res.stdout


def test_seed_signatures_in_the_header() -> None:
    text = (LIBWD / "include" / "wd.h").read_text()
    for proto in ("int wd_request_queue(struct wd_queue *q, struct wd_capa *capa);",
                  "void wd_release_queue(struct wd_queue *q);",
                  "int wd_send(struct wd_queue *q, void *req);",
                  "int wd_recv(struct wd_queue *q, void **req);",
                  "int wd_send_sync(struct wd_queue *q, void *req);",
                  "int wd_recv_sync(struct wd_queue *q, void **req);",
                  "int wd_mem_share(struct wd_queue *q, const void *addr, size_t size, "
                  "int flags);",
                  "void wd_mem_unshare(struct wd_queue *q, const void *addr, size_t size);"):
        assert proto in text, proto


def test_requests_come_back_as_the_same_python_objects() -> None:
    sim = SimQueue()
    try:
        reqs = [Request(abi.WD_OP_NOP, seed=i, context=f"req{i}") for i in range(5)]
        for r in reqs:
            assert lib.wd_send(sim.q, r.c) == 0
            assert r.status == -1  # in flight
        assert sim.complete_all(100) == 5
        out = ffi.new("void **")
        got = []
        while lib.wd_recv(sim.q, out) == 0:
            got.append(Request.from_c(ffi.cast("struct wd_req *", out[0])))
        assert got == reqs
        assert [(r.status, r.result, r.context) for r in got] == [
            (0, 100 + i, f"req{i}") for i in range(5)]
        assert lib.wd_recv(sim.q, out) == -11  # EAGAIN
    finally:
        sim.close()


def test_full_ring_answers_ebusy_through_the_binding() -> None:
    sim = SimQueue()
    try:
        reqs = [Request(abi.WD_OP_NOP) for _ in range(SimQueue.ENTRIES + 1)]
        ptrs = ffi.new("struct wd_req *[]", [r.c for r in reqs])
        assert lib.wd_send_many(sim.q, ptrs, len(reqs)) == SimQueue.ENTRIES
        assert lib.wd_send(sim.q, reqs[-1].c) == -16  # EBUSY
        assert sim.db.sq_tail == SimQueue.ENTRIES  # one doorbell store for the batch
    finally:
        sim.close()
