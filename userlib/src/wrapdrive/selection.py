"""Choosing the mdev type a queue is created from, and reclaiming leftovers.

The rules are libwd's (userlib/libwd/src/select.c, one implementation for C
and Python): a type whose algo_type matches and whose flags cover the
request (WD_WEAK_ORDER only when allowed), on a device of priority 1..100;
smaller priority first, then NUMA distance from the calling CPU, then more
free instances, then fewer differing flag bits, then names.  Creation falls
back to the next candidate when one is out of queues, and first removes the
queues of dead processes (UUIDs 57447276-...-<creator pid>) whose VFIO
group nobody holds.  This module calls it and words the errors.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sysfs
from .abi import WD_CAPA_SHARE_ALL, WD_WEAK_ORDER, ffi, lib
from .errors import BadRequestError, NoDeviceError, QueueExhaustedError, os_error
from .sysfs import Device

#: candidates wd_sel_rank may return at most.
MAX_CANDIDATES = 256


@dataclass(frozen=True)
class Capa:
    """What the caller asks for: an algo_type and a mask of WD_* flag bits."""

    algo_type: str
    flags: int = 0


@dataclass(frozen=True)
class Candidate:
    """A matching mdev type on a device, as libwd ranked it."""

    parent: str
    mdev_type: str
    type_path: Path
    algo_type: str
    flags: int
    available_instances: int
    numa_zone: int | None
    priority: int
    distance: int

    @staticmethod
    def from_c(c: Any) -> Candidate:
        return Candidate(parent=ffi.string(c.parent).decode(),
                         mdev_type=ffi.string(c.mdev_type).decode(),
                         type_path=Path(ffi.string(c.type_path).decode()),
                         algo_type=ffi.string(c.alg).decode(), flags=int(c.flags),
                         available_instances=int(c.available),
                         numa_zone=None if c.numa_zone < 0 else int(c.numa_zone),
                         priority=int(c.priority), distance=int(c.distance))


def describe(devices: Iterable[Device]) -> str:
    lines = []
    for dev in devices:
        caps = ", ".join(f"{t.algo_type}[{t.flags:#x}]" for t in dev.types)
        state = "" if dev.selectable else " (priority out of 1..100: never selected)"
        lines.append(f"  {dev.name}: numa_zone={dev.numa_zone} priority={dev.priority}"
                     f"{state}: {caps}")
    return "\n".join(lines) if lines else "  (none: is a WrapDrive driver such as wd_dummy loaded?)"


def flag_names(flags: int) -> str:
    names = []
    if flags & WD_CAPA_SHARE_ALL:
        names.append("WD_CAPA_SHARE_ALL")
    if flags & WD_WEAK_ORDER:
        names.append("WD_WEAK_ORDER")
    rest = flags & ~(WD_CAPA_SHARE_ALL | WD_WEAK_ORDER)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


def no_device_error(devices: list[Device], capa: Capa) -> NoDeviceError:
    offered = sorted({t.algo_type for d in devices for t in d.types})
    near = [a for a in offered if a != capa.algo_type and a.lower() == capa.algo_type.lower()]
    hint = (f" (algo_type names are case-sensitive: did you mean {near[0]!r}?)" if near
            else "")
    return NoDeviceError(
        f"no device offers algo_type {capa.algo_type!r} with flags "
        f"{flag_names(capa.flags)}{hint}; devices found:\n{describe(devices)}")


def _root(root: Path) -> bytes:
    return os.fsencode(str(root))


def calling_node(root: Path = sysfs.SYSFS) -> int | None:
    """The calling thread's NUMA node (None without NUMA information)."""
    node = int(lib.wd_sel_node(_root(root)))
    return None if node < 0 else node


def rank(capa: Capa, node: int | None, root: Path = sysfs.SYSFS) -> list[Candidate]:
    """Matching types, best first; unselectable devices are left out."""
    out = ffi.new("struct wd_sel_cand[]", MAX_CANDIDATES)
    alg = ffi.new("char[]", capa.algo_type.encode())
    c_capa = ffi.new("struct wd_capa *", {"alg": alg, "flags": capa.flags})
    n = lib.wd_sel_rank(_root(root), c_capa, -1 if node is None else node, out,
                        MAX_CANDIDATES)
    if n < 0:
        raise OSError(-n, ffi.string(lib.wd_errmsg()).decode())
    return [Candidate.from_c(out[i]) for i in range(n)]


CreateHook = Callable[[Path, str], None]  # (create file, uuid); raises OSError


class _Hooks:
    """struct wd_sel_hooks from Python callables (tests replace the real ones)."""

    def __init__(self, create: CreateHook | None = None,
                 alive: Callable[[int], bool] | None = None,
                 busy: Callable[[int], bool] | None = None,
                 open_group: Callable[[int], int] | None = None) -> None:
        self.c = ffi.new("struct wd_sel_hooks *")
        self._keep: list[Any] = []
        if create is not None:
            def c_create(path: Any, uuid: Any, arg: Any) -> int:
                try:
                    create(Path(ffi.string(path).decode()), ffi.string(uuid).decode())
                except OSError as exc:
                    return -(exc.errno or errno.EIO)
                return 0
            self._set("create", "int(*)(const char *, const char *, void *)", c_create)
        if alive is not None:
            self._set("alive", "int(*)(int, void *)", lambda pid, arg: int(alive(pid)))
        if busy is not None:
            self._set("busy", "int(*)(int, void *)", lambda group, arg: int(busy(group)))
        if open_group is not None:
            def c_open(group: int, arg: Any) -> int:
                try:
                    return open_group(group)
                except OSError as exc:
                    return -(exc.errno or errno.EIO)
            self._set("open_group", "int(*)(int, void *)", c_open)

    def _set(self, name: str, ctype: str, fn: Callable[..., int]) -> None:
        cb = ffi.callback(ctype, fn)
        self._keep.append(cb)
        setattr(self.c, name, cb)

    @property
    def ptr(self) -> Any:
        return self.c if self._keep else ffi.NULL


def create_queue_mdev(capa: Capa, root: Path = sysfs.SYSFS, node: int | None = None,
                      create: CreateHook | None = None) -> tuple[Candidate, str]:
    """Create an mdev for ``capa`` on the best device that has room (libwd's
    wd_sel_create); returns the candidate used and the new mdev's name."""
    if node is None:
        node = calling_node(root)
    cand = ffi.new("struct wd_sel_cand *")
    uuid = ffi.new("char[40]")
    alg = ffi.new("char[]", capa.algo_type.encode())
    c_capa = ffi.new("struct wd_capa *", {"alg": alg, "flags": capa.flags})
    hooks = _Hooks(create=create)
    ret = lib.wd_sel_create(_root(root), c_capa, -1 if node is None else node, hooks.ptr,
                            cand, uuid)
    if ret:
        raise selection_error(-ret, capa, root)
    return Candidate.from_c(cand), ffi.string(uuid).decode()


def lookup(uuid: str, capa: Capa | None = None, root: Path = sysfs.SYSFS) -> Candidate:
    """The existing queue ``uuid`` (libwd's wd_sel_lookup): its type and device.
    Raises NoDeviceError when there is no such mdev, BadRequestError when it
    is not a WrapDrive queue (of ``capa``, when given)."""
    cand = ffi.new("struct wd_sel_cand *")
    alg = ffi.new("char[]", capa.algo_type.encode()) if capa else ffi.NULL
    c_capa = ffi.new("struct wd_capa *", {"alg": alg, "flags": capa.flags}) if capa else ffi.NULL
    ret = lib.wd_sel_lookup(_root(root), c_capa, uuid.encode(), cand)
    if ret:
        raise selection_error(-ret, capa or Capa(""), root)
    return Candidate.from_c(cand)


OpenGroupHook = Callable[[int], int]  # VFIO group number -> open fd; raises OSError


def find_provisioned(capa: Capa, root: Path = sysfs.SYSFS, node: int | None = None,
                     open_group: OpenGroupHook | None = None) -> tuple[Candidate, str, int] | None:
    """A free provisioned queue for ``capa`` (libwd's wd_sel_provisioned): an
    mdev of a matching type outside this library's UUID namespace whose VFIO
    group the caller can open now, in ranking order.  Returns the candidate,
    the queue's UUID and the open group fd (the caller closes it), or None."""
    cand = ffi.new("struct wd_sel_cand *")
    uuid = ffi.new("char[40]")
    alg = ffi.new("char[]", capa.algo_type.encode())
    c_capa = ffi.new("struct wd_capa *", {"alg": alg, "flags": capa.flags})
    hooks = _Hooks(open_group=open_group)
    fd = lib.wd_sel_provisioned(_root(root), c_capa, -1 if node is None else node, hooks.ptr,
                                cand, uuid)
    if fd == -errno.ENOENT:
        return None
    if fd < 0:
        raise selection_error(-fd, capa, root)
    return Candidate.from_c(cand), ffi.string(uuid).decode(), int(fd)


def selection_error(err: int, capa: Capa, root: Path) -> Exception:
    """The exception for wd_request_queue's / wd_sel_create's -errno."""
    msg = ffi.string(lib.wd_errmsg()).decode()
    if err == errno.ENODEV and "no device offers" in msg:
        return no_device_error(sysfs.scan(root), capa)
    if err == errno.ENOSPC and "out of queues" in msg:
        return QueueExhaustedError(msg)
    if err == errno.ENOENT and msg.startswith("no mdev "):
        return NoDeviceError(msg)
    if err == errno.EINVAL and not msg.startswith("create mdev"):
        return BadRequestError(msg)  # wd_sel_lookup: not a UUID, not a queue of capa
    return os_error(OSError(err, os.strerror(err)), msg.split(": " + os.strerror(err))[0])


def reclaim(root: Path = sysfs.SYSFS, alive: Callable[[int], bool] | None = None,
            busy: Callable[[int], bool] | None = None) -> list[str]:
    """Remove the queues dead processes left behind; returns their names."""
    hooks = _Hooks(alive=alive, busy=busy)
    buf = ffi.new("char[]", 64 * 1024)
    lib.wd_sel_reclaim(_root(root), hooks.ptr, buf, len(buf))
    return [str(name) for name in ffi.string(buf).decode().split()]


def new_uuid(pid: int | None = None) -> str:
    """A fresh UUID in this library's namespace, recording the creator pid."""
    buf = ffi.new("char[40]")
    lib.wd_sel_new_uuid(os.getpid() if pid is None else pid, buf)
    return str(ffi.string(buf).decode())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
