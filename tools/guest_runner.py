"""Runs INSIDE a guest booted by tests/qemu/conftest.py: one pytest process over all the
in-guest files (cwd = repo root; importing pytest costs ~30 s under TCG over 9p, so it
is paid once), with the wd_guest_plugin recording each test and the kernel log it
caused into --out, a folder shared read-write with the host.

Standard library only; pytest is run from the same interpreter."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pytest_cmd(python: str, files: list[str], report: Path, test_timeout: float) -> list[str]:
    return [
        python, "-m", "pytest", "-p", "wd_guest_plugin", "-p", "no:cacheprovider",
        f"--wd-report={report}", f"--wd-test-timeout={test_timeout}", "-rA", "-v", "--color=no", *files,
    ]  # fmt: skip


def preamble(out: Path) -> None:
    """What the host checks before any test: modules loaded, the log up to now."""
    mods = Path("/proc/modules")
    lsmod = mods.read_text() if mods.exists() else ""
    dmesg = subprocess.run(["dmesg"], stdout=subprocess.PIPE, check=False).stdout.decode(errors="replace")
    info = {
        "modules": [ln.split()[0] for ln in lsmod.splitlines() if ln.strip()],
        "dmesg": dmesg.splitlines(),
        "uname": os.uname().release,
        "env": {k: os.environ.get(k, "") for k in ("WD_MODULE_DIR", "WD_KERNEL")},
    }
    (out / "preamble.json").write_text(json.dumps(info, indent=1))


def session_ended(report: Path) -> bool:
    """The last pytest process wrote its session record (it was not cut short)."""
    if not report.exists():
        return False
    lines = report.read_text(errors="replace").splitlines()
    return bool(lines) and '"event": "session"' in lines[-1]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--test-timeout", type=float, default=300.0, help="per in-guest test, seconds")
    p.add_argument("--timeout", type=float, default=1200.0, help="whole pytest run, seconds")
    p.add_argument("files", nargs="*")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    preamble(args.out)
    if not args.files:
        (args.out / "done").write_text("no files\n")
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tools"), env.get("PYTHONPATH", "")]))
    report = args.out / "report.jsonl"
    cmd = pytest_cmd(sys.executable, args.files, report, args.test_timeout)
    t0 = time.monotonic()
    timed_out = False
    rc, runs = 0, 0
    with (args.out / "pytest.out").open("wb") as log:
        while True:
            runs += 1
            left = args.timeout - (time.monotonic() - t0)
            try:
                proc = subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=max(left, 1), check=False)  # fmt: skip
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                timed_out, rc = True, -9
                break
            # A hung test ends the process (faulthandler); go on with the tests not started
            # yet, in a new process, so one hang does not hide the rest of the suite.
            if session_ended(report) or runs >= 20 or time.monotonic() - t0 > args.timeout:
                break
            log.write(f"\n[wd-guest] pytest ended without finishing (exit {rc}); restarting for the rest\n".encode())
            log.flush()
    info = {"returncode": rc, "timed_out": timed_out, "duration": round(time.monotonic() - t0, 2), "runs": runs}
    (args.out / "pytest.json").write_text(json.dumps(info))
    print(f"[wd-guest] pytest exit {rc} in {info['duration']}s", flush=True)
    (args.out / "done").write_text("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
