"""WrapDrive as an unprivileged user would meet it, with the permissions
`wrapdrive setup` installs (udev rules, helper, system group) and the
udevd of the guest applying them.

The guest runs as root; each test drops privileges in a forked child (or a
subprocess): setresuid/setresgid to an ordinary uid, only the supplementary
groups given, RLIMIT_MEMLOCK left at the kernel's default.

- in the group: every algorithm works end to end through the library, 16 MiB
  requests included, on queues the user creates (delegated creation), and the
  demo's three algorithms work through the CLI at 16 MiB (issue 10);
- outside the group: a clear error that says what to do, nothing left behind;
- a group member whose open fails after the create (no VFIO node access): the
  error, and the mdev removed;
- with provisioned queues only (root made them with mdevctl, the group may
  only open): by uuid and by choice, they work and stay.
And, as root: a Queue dropped without close() warns and gives its mdev back;
a closed queue cannot be re-entered; algo_type names are case-sensitive.
"""

from __future__ import annotations

import contextlib
import gc
import grp
import hashlib
import importlib.util
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import warnings
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import kernel_vfio as kv  # noqa: E402
import wd_child  # noqa: E402
import wd_measure  # noqa: E402
import wrapdrive  # noqa: E402
from wrapdrive import cli  # noqa: E402

GROUP = "wrapdrive"
USER = 4242  #: an ordinary uid; no passwd entry is needed
PARENT = "wd_dummy.0"
MiB = 1 << 20
N = wrapdrive.WD_MAX_LEN  # 16 MiB
EXTRA_RULES = Path("/etc/udev/rules.d/71-wd-test-no-vfio.rules")
REPO = Path(__file__).resolve().parents[3]


def wrapdrive_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wrapdrive", *args], capture_output=True,
                          text=True, timeout=120, check=check)


def settle() -> None:
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=True, timeout=60)


def mdevs() -> set[str]:
    return set(os.listdir("/sys/bus/mdev/devices"))


def payload(n: int) -> bytes:
    """Half random, half a run: compressible into 16 MiB, not trivially."""
    rnd = os.urandom(n // 2)
    return (rnd + b"wrapdrive" * (n // 18 + 1))[:n]


@pytest.fixture(scope="module")
def gid():
    """`wrapdrive setup --group wrapdrive`, as an administrator runs it."""
    out = wrapdrive_cmd("setup", "--group", GROUP)
    print(out.stdout)
    settle()
    yield grp.getgrnam(GROUP).gr_gid
    EXTRA_RULES.unlink(missing_ok=True)
    print(wrapdrive_cmd("setup", "--uninstall").stdout)


# -- in the group: create, use, release -------------------------------------------------

def _every_algorithm(n):
    data = payload(n)
    out = {"uid": os.getuid(), "groups": os.getgroups(),
           "memlock": list(resource.getrlimit(resource.RLIMIT_MEMLOCK)), "open_s": {}}

    def opened(alg):
        t = time.monotonic()
        q = wrapdrive.request_queue(alg)
        out["open_s"][alg] = round(time.monotonic() - t, 3)
        assert not q.provisioned and q.name.endswith(f"{os.getpid():012x}"), q.name
        return q

    with opened("sha256") as q:
        assert q.sha256(data) == hashlib.sha256(data).digest()
    with opened("crc32c") as q:
        assert q.crc32c(data) == kv.kernel_crc32c(data)
    with opened("zlib") as q:
        z = q.compress(data)
        assert zlib.decompress(z) == data
        assert q.decompress(zlib.compress(data, 1)) == data
    with opened("memcpy") as q:
        assert q.copy(data) == data
    return out


@pytest.mark.slow(400)
def test_group_member_runs_every_algorithm_at_16MiB(gid):
    before = mdevs()
    t = time.monotonic()
    out = wd_child.run(_every_algorithm, N, uid=USER, groups=[gid])
    wd_measure.record("nonroot_group_every_algorithm", bytes=N,
                      seconds=round(time.monotonic() - t, 1), **out)
    assert out["uid"] == USER and out["groups"] == [gid]
    assert out["memlock"][0] <= 8 * MiB  # the kernel's default, not raised for the test
    assert mdevs() == before  # every queue the user made was removed by the user
    assert kv.dbg("pinned_pages") == 0


def _cli(*argv):
    """The `wrapdrive` command, run in this (unprivileged) process: the venv's
    python and its standard library live under /root, which the test user may
    not enter, so everything is imported before the fork."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


@pytest.mark.slow(400)
def test_group_member_runs_the_demo_at_16MiB_through_the_cli(gid):
    """Issue 10: the demo's three algorithms through `wrapdrive run`, 16 MiB,
    the default RLIMIT_MEMLOCK, not root; checked as tools/demo.py checks."""
    spec = importlib.util.spec_from_file_location("demo", REPO / "tools/demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    work = Path(tempfile.mkdtemp(prefix="wd-nonroot-"))
    os.chown(work, USER, USER)
    f = work / "input.bin"
    demo.make_input(f, N)
    data = f.read_bytes()
    before = mdevs()
    try:
        outs = {}
        for algo in ("sha256", "crc32c", "zlib"):
            r = wd_child.run(_cli, "run", "-q", algo, str(f), uid=USER, groups=[gid])
            assert r["rc"] == 0, (algo, r)
            outs[algo] = r["out"]
        assert outs["sha256"].split()[0] == hashlib.sha256(data).hexdigest()
        assert int(outs["crc32c"].split()[0], 16) == demo.kernel_crc32c(data)
        z = Path(str(f) + ".z")
        assert z.stat().st_uid == USER  # written by the user
        assert zlib.decompress(z.read_bytes()) == data
    finally:
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
    assert mdevs() == before


# -- outside the group -------------------------------------------------------------------

def _refused(alg):
    try:
        q = wrapdrive.request_queue(alg)
    except wrapdrive.DevicePermissionError as exc:
        return {"error": str(exc), "errno": exc.errno}
    q.close()
    return {"error": None}


def test_outside_the_group_a_clear_error_and_nothing_left(gid):
    before = mdevs()
    out = wd_child.run(_refused, "sha256", uid=USER, groups=[])
    assert out["error"], "a user outside the group opened a queue"
    assert "permission denied" in out["error"].lower()
    assert "wrapdrive setup" in out["error"] and "usermod -aG wrapdrive" in out["error"]
    assert mdevs() == before


def test_open_refused_after_create_leaves_no_mdev(gid):
    """The group may create but (by a later rule) not open the VFIO node: the
    library waits for udev, gives up, and removes the mdev it made (issue 14:
    each failed attempt used to leave one behind)."""
    EXTRA_RULES.write_text('SUBSYSTEM=="vfio", KERNEL=="[0-9]*", GROUP="root", MODE="0600"\n')
    subprocess.run(["udevadm", "control", "--reload"], check=True, timeout=60)
    try:
        before = mdevs()
        t = time.monotonic()
        out = wd_child.run(_refused, "crc32c", uid=USER, groups=[gid])
        took = time.monotonic() - t
        settle()
        assert out["error"] and "/dev/vfio/" in out["error"], out
        assert mdevs() == before
        assert took >= 4, f"gave up after {took:.1f} s without waiting for udev"
        wd_measure.record("nonroot_open_refused_gives_up", seconds=round(took, 1))
    finally:
        EXTRA_RULES.unlink(missing_ok=True)
        subprocess.run(["udevadm", "control", "--reload"], check=True, timeout=60)


# -- provisioned queues only -----------------------------------------------------------

def _provisioned_only(uuids, n):
    data = payload(n)
    out = {}
    with wrapdrive.request_queue("sha256", uuid=uuids["sha256"]) as q:
        assert q.provisioned and q.name == uuids["sha256"]
        assert q.sha256(data) == hashlib.sha256(data).digest()
    with wrapdrive.request_queue("crc32c") as q:  # chosen, not created
        assert q.provisioned and q.name == uuids["crc32c"], q.name
        assert q.crc32c(data) == kv.kernel_crc32c(data)
    with wrapdrive.request_queue("zlib") as q:
        assert q.provisioned and q.name == uuids["zlib"]
        assert zlib.decompress(q.compress(data)) == data
    with wrapdrive.request_queue("sha256") as a, wrapdrive.request_queue("sha256") as b:
        assert {a.name, b.name} == {uuids["sha256"], uuids["sha256-2"]}
        try:
            wrapdrive.request_queue("sha256").close()
            out["third"] = "opened"
        except wrapdrive.DevicePermissionError as exc:  # both held; creating is root's
            out["third"] = str(exc)
    try:
        wrapdrive.request_queue("crc32c", uuid=uuids["sha256"]).close()
        out["wrong_type"] = "opened"
    except wrapdrive.BadRequestError as exc:
        out["wrong_type"] = str(exc)
    try:
        wrapdrive.request_queue("memcpy").close()
        out["memcpy"] = "opened"
    except wrapdrive.DevicePermissionError as exc:
        out["memcpy"] = str(exc)
    return out


@pytest.mark.slow(400)
def test_provisioned_queues_only(gid):
    wrapdrive_cmd("setup", "--group", GROUP, "--open-only")
    uuids = {name: str(uuidlib.uuid4()) for name in ("sha256", "sha256-2", "crc32c", "zlib")}
    before = mdevs()
    try:
        for name, u in uuids.items():
            subprocess.run(["mdevctl", "start", "-u", u, "-p", PARENT,
                            "-t", f"wd_dummy-{name.split('-')[0]}"],
                           check=True, timeout=60, capture_output=True)
        settle()
        out = wd_child.run(_provisioned_only, uuids, N, uid=USER, groups=[gid])
        assert "permission denied" in out["third"].lower(), out
        assert "is a 'sha256' queue, not 'crc32c'" in out["wrong_type"], out
        assert "permission denied" in out["memcpy"].lower(), out
        assert mdevs() == before | set(uuids.values())  # kept for the next user
    finally:
        for u in uuids.values():
            subprocess.run(["mdevctl", "stop", "-u", u], timeout=60, capture_output=True)
        wrapdrive_cmd("setup", "--group", GROUP)
    assert mdevs() == before


# -- as root: what a careless program meets ----------------------------------------------

def test_queue_dropped_without_close_warns_and_gives_the_mdev_back():
    before = mdevs()
    q = wrapdrive.request_queue("crc32c")
    name = q.name
    assert name in mdevs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del q
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) and name in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    assert mdevs() == before


def test_closed_queue_cannot_be_entered_again():
    q = wrapdrive.request_queue("crc32c")
    with q:
        assert q.crc32c(b"x") == kv.kernel_crc32c(b"x")
    with pytest.raises(wrapdrive.QueueReleasedError), q:
        pass


def test_algo_type_is_case_sensitive_and_says_so():
    with pytest.raises(wrapdrive.NoDeviceError, match="case-sensitive: did you mean 'sha256'"):
        wrapdrive.request_queue("SHA256")
