"""Reload the sample driver with module parameters for one test (stdlib only)."""
import contextlib
import os
import subprocess
import time

MODDIR = os.environ.get("WD_MODULE_DIR", "")
MDEV_BUS = "/sys/class/mdev_bus"


def _run(*cmd):
    res = subprocess.run(list(cmd), capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: rc {res.returncode}: {res.stderr.strip()}")


def _wait_parents(n=2, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.isdir(MDEV_BUS) and len(os.listdir(MDEV_BUS)) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError("wd_dummy devices did not come back")


def load_dummy(**params):
    args = [f"{k}={v}" for k, v in params.items()]
    _run("insmod", f"{MODDIR}/wd_dummy.ko", *args)
    _wait_parents()
    for k, v in params.items():  # an unknown parameter is only warned about
        with open(f"/sys/module/wd_dummy/parameters/{k}") as f:
            got = f.read().strip()
        want = {"1": "Y", "0": "N"}.get(str(v), str(v)) if got in "YN" else str(v)
        if got != want:
            raise RuntimeError(f"wd_dummy parameter {k}: {got!r}, wanted {want!r}")


@contextlib.contextmanager
def dummy_with(**params):
    """wd_dummy reloaded with params for the duration; defaults again after."""
    _run("rmmod", "wd_dummy")
    try:
        load_dummy(**params)
        yield
    finally:
        if os.path.exists("/sys/module/wd_dummy"):
            _run("rmmod", "wd_dummy")
        load_dummy()
