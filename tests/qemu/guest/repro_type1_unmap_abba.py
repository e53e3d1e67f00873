"""Reproducer, not part of the suite (the file name keeps it out): vfio type1
deadlocks when two threads unmap two pinned ranges of one container at once.

type1 takes iommu->device_list_lock under iommu->lock (vfio_notify_dma_unmap,
vfio_iommu_type1_register_device); the dma_unmap callback it calls with
device_list_lock held must unpin (or type1 retries and BUG()s), and
vfio_unpin_pages() takes iommu->lock.  Thread A: in the callback, wants
iommu->lock; thread B: holds iommu->lock in its own unmap, wants
device_list_lock.  Both stay in D state; the container is stuck.  Any mdev
driver that pins (kvmgt, vfio-ccw, vfio-ap, WrapDrive) is exposed.

Run alone, it wedges the guest's VFIO:
  python -m pytest tests/qemu --kernel 6.1 \\
      --guest-tests tests/qemu/guest/repro_type1_unmap_abba.py
Seen on 6.1.0-56: both threads hung after 733 rounds (90 s).
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_measure  # noqa: E402

SECONDS = 120
SIZE = 64 << 10


def test_concurrent_unmaps_of_pinned_ranges():
    q = kv.Queue("wd_dummy.0", "crc32c")
    bufs = [q.dma_buffer(SIZE, b"x" * SIZE) for _ in range(2)]
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() < t0 + SECONDS:
        for _, iova, _ in bufs:  # pin both ranges (root: the pin cache keeps them)
            q.submit([kv.desc(1, kv.WD_OP_CRC32C, iova, SIZE)])
            q.reap(1)
        ts = [threading.Thread(target=q.unmap_dma, args=(iova, SIZE), daemon=True)
              for _, iova, _ in bufs]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        if any(t.is_alive() for t in ts):
            wd_measure.record("type1_abba", deadlocked=True, rounds=rounds,
                              seconds=round(time.monotonic() - t0, 1))
            kv.write("/proc/sysrq-trigger", "w")  # the blocked tasks' stacks, in dmesg
            raise AssertionError(f"type1 deadlock reproduced after {rounds} rounds")
        for _, iova, va in bufs:
            q.map_dma(va, iova, SIZE)
        rounds += 1
    wd_measure.record("type1_abba", deadlocked=False, rounds=rounds,
                      seconds=round(time.monotonic() - t0, 1))
    q.close()
