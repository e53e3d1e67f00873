"""The per-process queues behind ``wrapdrive.sha256()``, ``crc32c()``,
``compressobj()`` and ``decompressobj()`` when no queue is given.

One queue per algorithm is opened on first use and released at exit (the
queue module's atexit hook releases every live queue).  A forked child has
no mapping of its parent's queues (their regions are VM_DONTCOPY and the
queue module abandons them in the child), so the child opens its own on
first use.  zlib streams each hold one of a queue's ``max_streams`` slots:
when every slot of the shared zlib queues is taken, one more queue is
opened, up to ``MAX_SHARED_ZLIB_QUEUES``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from .api import request_queue
from .queue import Queue

#: how many shared zlib queues a process opens at most (each runs
#: max_streams streams at once).
MAX_SHARED_ZLIB_QUEUES = 8

_lock = threading.Lock()
_queues: dict[str, list[Queue]] = {}
_pid = os.getpid()


def _usable(algo: str) -> list[Queue]:
    """This process's open shared queues for ``algo`` (the lock is held)."""
    global _pid
    if _pid != os.getpid():  # a forked child: the parent's queues are not ours
        _queues.clear()
        _pid = os.getpid()
    qs = [q for q in _queues.get(algo, []) if not q.released]
    _queues[algo] = qs
    return qs


def shared_queue(algo: str) -> Queue:
    """This process's shared queue for ``algo``, opened on first use."""
    with _lock:
        qs = _usable(algo)
        if not qs:
            qs.append(request_queue(algo))
        return qs[0]


def stream_queues(algo: str) -> Iterator[Queue]:
    """The shared queues for ``algo`` in turn, then new ones (at most
    MAX_SHARED_ZLIB_QUEUES in all): the caller takes the first with a free
    stream slot."""
    i = 0
    while True:
        with _lock:
            qs = _usable(algo)
            if i >= len(qs):
                if len(qs) >= MAX_SHARED_ZLIB_QUEUES:
                    return
                qs.append(request_queue(algo))
            q = qs[i]
        yield q
        i += 1


def close_shared() -> None:
    """Release this process's shared queues now (they are opened again on
    next use).  Streams still open on them can no longer be used."""
    with _lock:
        qs = [q for algo_qs in _queues.values() for q in algo_qs]
        _queues.clear()
    for q in qs:
        if not q.released:
            q.close()
