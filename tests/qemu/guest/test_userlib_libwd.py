"""In-guest: libwd, the C library, against the real modules.

userlib/libwd is built (-Wall -Wextra -Werror) in a scratch copy and its
device test (userlib/libwd/tests/test_device.c) run: every seed call, bad
input (unknown capability, bad flags, overlapping shares, unshared and
oversized buffers, a request already in flight, calls after release), a
full ring, the sleeping path's CPU use (< 5% of the wall time while blocked
in wd_recv_sync / wd_send_sync) and threads sharing one queue with results
checked against a software CRC-32C."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LIBWD = Path(os.getcwd()) / "userlib" / "libwd"
MDEV_DEVICES = "/sys/bus/mdev/devices"

# The first test builds libwd in the guest (make under TCG) and the device suite runs
# every seed call and the sleeping path: minutes on a loaded host, not the default 60 s.
pytestmark = pytest.mark.slow(300)


def our_mdevs() -> set[str]:
    return {n for n in os.listdir(MDEV_DEVICES) if n.startswith("57447276-")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("no C toolchain in the guest")
    tree = tmp_path_factory.mktemp("libwd") / "libwd"
    shutil.copytree(LIBWD, tree, symlinks=False,
                    ignore=shutil.ignore_patterns("*.o", "*.a", "*.so", "wd_bench",
                                                  "test_ring", "test_device", "test_stream"))
    res = subprocess.run(["make", "-j2", "-C", str(tree), "all", "tests/test_device",
                          "tests/test_stream"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tree


@pytest.mark.slow(300)  # the first user of `built` pays for compiling libwd under TCG
def test_device_suite(built: Path) -> None:
    before = our_mdevs()
    proc = subprocess.Popen([str(built / "tests" / "test_device")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"test_device did not finish in 240 s; its output so far:\n{out}")
    print(out)
    assert proc.returncode == 0 and " 0 failed" in out, out
    assert our_mdevs() == before, "the C test leaked a queue"


@pytest.mark.slow(300)
def test_stream_suite(built: Path) -> None:
    """libwd's streams (tests/test_stream.c): sha256, crc32c, deflate and
    inflate of up to 48 MiB in random pieces against AF_ALG and zlib, and
    what bad use gets."""
    before = our_mdevs()
    res = subprocess.run([str(built / "tests" / "test_stream")], capture_output=True,
                         text=True, timeout=240)
    print(res.stdout, res.stderr)
    assert res.returncode == 0 and " 0 failed" in res.stdout, res.stdout + res.stderr
    assert our_mdevs() == before, "the C test leaked a queue"


def test_c_benchmark_program_runs(built: Path) -> None:
    for mode, batch in (("sync", 1), ("oneshot", 1), ("batch", 16)):
        res = subprocess.run([str(built / "wd_bench"), "crc32c", "64", mode, str(batch), "0.1"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert float(res.stdout.split()[-1]) > 0
    bad = subprocess.run([str(built / "wd_bench"), "md5", "64", "sync", "1", "0.1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown algorithm" in bad.stderr
