"""Run a function in a forked child, optionally as an unprivileged user with a
given RLIMIT_MEMLOCK, and bring back its JSON result (stdlib only)."""
import contextlib
import ctypes
import json
import os
import resource
import traceback

NOBODY = 65534

libc = ctypes.CDLL(None, use_errno=True)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def vm_locked_kib():
    """VmLck of this process: what mlock() and pinned pages charge to it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return -1


def mlock(addr, length):
    """0, or the errno of mlock(2)."""
    if libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(length)):
        return ctypes.get_errno()
    return 0


def drop_privileges(uid=NOBODY, memlock=None, groups=()):
    """Become uid (only the supplementary groups given, no capabilities);
    memlock in bytes (None: keep the limit, the kernel's default)."""
    if memlock is not None:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
    os.setgroups(list(groups))
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def run(fn, *args, uid=None, memlock=None, groups=(), timeout=600):
    """fn(*args) in a child; returns its result (JSON-able) or raises with the
    child's traceback.  uid/memlock/groups: drop to that user with that limit
    and those supplementary groups first."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {}
        try:
            if uid is not None or memlock is not None:
                drop_privileges(uid if uid is not None else os.getuid(), memlock, groups)
            out = {"ok": fn(*args)}
        except BaseException:  # noqa: BLE001  (reported to the parent)
            out = {"error": traceback.format_exc()}
        finally:
            data = json.dumps(out).encode()
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(w, data):]
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while True:
            b = f.read(65536)
            if not b:
                break
            chunks.append(b)
    _, status = os.waitpid(pid, 0)
    raw = b"".join(chunks)
    if not raw:
        raise RuntimeError(f"child died without a result, wait status {status:#x}")
    out = json.loads(raw)
    if "error" in out:
        raise RuntimeError("in the child:\n" + out["error"])
    return out["ok"]


@contextlib.contextmanager
def group_owned_by(uuid, uid=NOBODY):
    """Give uid the VFIO group node of an mdev (as a udev rule would)."""
    grp = os.path.basename(os.readlink(f"/sys/bus/mdev/devices/{uuid}/iommu_group"))
    node = f"/dev/vfio/{grp}"
    st = os.stat(node)
    os.chown(node, uid, uid)
    try:
        yield node
    finally:
        os.chown(node, st.st_uid, st.st_gid)
