"""Runs INSIDE a guest booted by vm.boot(): the evidence of a VM session, written into the
boot's output folder (shared read-write with the host), for the host to judge (verdict.py).

  start --out DIR          after the modules loaded: what is loaded (built-in modules
                           included), lockdep's state, kmemleak's presence; the kernel log
  dmesg --out DIR LABEL    the whole kernel log now, into DIR/kmsg-LABEL.txt
  end --out DIR [--rmmod wd_dummy,wrapdrive]
                           the session's last word: pinned pages and mdevs left, rmmod of
                           our modules, a kmemleak scan (where the kernel has kmemleak),
                           the whole kernel log (kmsg-end.txt)

The kernel log is read from /dev/kmsg from its first record, so nothing a killed or
restarted process saw is lost; each record keeps its sequence number, and a log that
wrapped or could not be read says so in the file (the host fails on it).  Markers written
to the log (`mark`) tell the host where each test and each phase began.

Standard library only: this runs under the guest's python before anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KMSG = os.environ.get("WD_KMSG", "/dev/kmsg")
DEBUGFS = Path(os.environ.get("WD_DEBUGFS", "/sys/kernel/debug"))
SYSFS = Path(os.environ.get("WD_SYSFS", "/sys"))
PINNED_PAGES = DEBUGFS / "wrapdrive" / "pinned_pages"
KMEMLEAK = DEBUGFS / "kmemleak"
MDEV_DEVICES = SYSFS / "bus" / "mdev" / "devices"
LOCKDEP_STATS = Path("/proc/lockdep_stats")
SYSRQ = Path("/proc/sysrq-trigger")

# Every line the harness writes into the kernel log starts with this; verdict.py splits
# the log on these markers and never takes one for a kernel report.
MARK = "wd-harness:"
MARK_MODULES = f"{MARK} loading modules"  # before our modules: what comes earlier is boot
MARK_COMMAND = f"{MARK} command start"
MARK_END = f"{MARK} session end"
MARK_TEST_START = f"{MARK} test start "
MARK_TEST_END = f"{MARK} test end "
MARK_TIMEOUT = f"{MARK} test timeout "

HEADER = "# wd-kmsg"
# Seconds allowed for each end-of-session step; a step stuck in the kernel past its limit
# is itself the finding (the guest is then powered off).
RMMOD_TIMEOUT = 60.0
KMEMLEAK_TIMEOUT = 300.0
# kmemleak only reports objects older than 5 s: wait that long after rmmod, then scan.
KMEMLEAK_MIN_AGE = 5.5
# A report from deferred work (a workqueue, an RCU callback) after rmmod comes a little
# later: wait this long before the last read of the kernel log.
SETTLE = 2.0


# --------------------------------------------------------------------------- the kernel log


def format_record(raw: str) -> tuple[int, str] | None:
    """One /dev/kmsg record ('6,1234,5678901,-;text\\n KEY=v') -> (seq, '[    5.678901] text')."""
    head, sep, rest = raw.partition(";")
    if not sep:
        return None
    parts = head.split(",")
    try:
        seq, usec = int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        return None
    text = rest.split("\n", 1)[0]
    return seq, f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {text}"


def read_kmsg(path: str = KMSG) -> tuple[list[tuple[int, str]], str]:
    """Every record /dev/kmsg still holds, from the first; (records, '') or (what was
    read, the error).  A regular file of one record a line stands in for /dev/kmsg in
    host tests ($WD_KMSG)."""
    if os.path.isfile(path):
        with open(path, errors="replace") as f:
            recs = [r for r in map(format_record, f) if r is not None]
        return recs, "" if recs else f"{path} gave no record"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return [], f"cannot open {path}: {e.strerror} (errno {e.errno})"
    records: list[tuple[int, str]] = []
    lost = 0
    try:
        while True:
            try:
                raw = os.read(fd, 16384)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: records overwritten while we read
                lost += 1
                continue
            except OSError as e:
                return records, f"reading {path}: {e.strerror} (errno {e.errno})"
            if not raw:
                break
            rec = format_record(raw.decode(errors="replace"))
            if rec is not None:
                records.append(rec)
    finally:
        os.close(fd)
    if not records:
        return records, f"{path} gave no record"
    return records, f"{lost} record(s) overwritten while reading" if lost else ""


def kmsg_text(records: Sequence[tuple[int, str]], error: str) -> str:
    """The file format: a header (first/last sequence number, read error), one record a line."""
    first = records[0][0] if records else -1
    last = records[-1][0] if records else -1
    header = f"{HEADER} first={first} last={last} count={len(records)} error={error}\n"
    return header + "".join(f"{text}\n" for _, text in records)


def save_kmsg(out: Path, label: str, path: str = KMSG) -> Path:
    records, error = read_kmsg(path)
    dest = out / f"kmsg-{label}.txt"
    write_durable(dest, kmsg_text(records, error))
    return dest


def mark(text: str, path: str = KMSG) -> str:
    """Write one marker line into the kernel log; '' or the reason it could not."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return f"cannot open {path} for writing: {e.strerror} (errno {e.errno})"
    try:
        if os.path.isfile(path):  # the host tests' stand-in: append a record
            with open(path, errors="replace") as f:
                seq = sum(1 for _ in f)
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, f"5,{seq},{int(time.monotonic() * 1e6)},-;{text}\n".encode())
        else:
            os.write(fd, f"<5>{text}\n".encode())
    except OSError as e:
        return f"writing {path}: {e.strerror} (errno {e.errno})"
    finally:
        os.close(fd)
    return ""


def write_durable(path: Path, text: str) -> None:
    """Write and fsync: the guest may be powered off right after."""
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- state checks


def read_int(path: Path) -> tuple[int | None, str]:
    try:
        return int(path.read_text().strip()), ""
    except OSError as e:
        return None, f"{path}: {e.strerror}"
    except ValueError:
        return None, f"{path}: not a number"


def pinned_pages() -> tuple[int | None, str]:
    return read_int(PINNED_PAGES)


def mdevs() -> list[str]:
    try:
        return sorted(p.name for p in MDEV_DEVICES.iterdir())
    except FileNotFoundError:
        return []


def builtin_modules() -> set[str]:
    """Names in /lib/modules/$(uname -r)/modules.builtin (kernel/drivers/vfio/vfio.ko -> vfio)."""
    path = Path("/lib/modules") / os.uname().release / "modules.builtin"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return set()
    return {Path(ln.strip()).name.removesuffix(".ko").replace("-", "_") for ln in lines if ln.strip()}


def module_state(name: str, builtin: set[str] | None = None) -> str:
    """'loaded' (a module), 'builtin' (part of the kernel: a /sys/module entry without
    initstate, or listed in modules.builtin) or 'absent'."""
    d = SYSFS / "module" / name
    if (d / "initstate").exists():
        return "loaded"
    if d.is_dir() or name in (builtin_modules() if builtin is None else builtin):
        return "builtin"
    return "absent"


def debug_locks() -> str | None:
    """lockdep's `debug_locks` from /proc/lockdep_stats, None on a kernel without lockdep."""
    try:
        text = LOCKDEP_STATS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "debug_locks":
            return value.strip()
    return "unknown"


def run_limited(cmd: Sequence[str], timeout: float, stdin: str | None = None) -> dict[str, Any]:
    """Run cmd with a deadline.  A process stuck in the kernel (D state) cannot be killed,
    so on timeout this does not wait for it: it reports, and the caller powers off."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"cmd": list(cmd), "rc": None, "output": "", "timed_out": True, "seconds": round(timeout, 1)}
    return {"cmd": list(cmd), "rc": proc.returncode, "output": out.strip(), "timed_out": False,
            "seconds": round(time.monotonic() - t0, 2)}  # fmt: skip


def write_sysfs(path: Path, text: str) -> str:
    try:
        path.write_text(text)
    except OSError as e:
        return f"{path}: {e.strerror}"
    return ""


def kmemleak_scan() -> dict[str, Any]:
    """Scan for leaks; the report lists unreferenced objects (empty: clean)."""
    if not KMEMLEAK.exists():
        return {"present": False}
    time.sleep(KMEMLEAK_MIN_AGE)
    res: dict[str, Any] = {"present": True}
    t0 = time.monotonic()
    for _ in range(2):  # the second scan confirms what the first one suspected
        err = write_sysfs(KMEMLEAK, "scan")
        if err:
            res["error"] = err
            return res
    res["scan_seconds"] = round(time.monotonic() - t0, 1)
    try:
        res["report"] = KMEMLEAK.read_text(errors="replace")
    except OSError as e:
        res["error"] = f"{KMEMLEAK}: {e.strerror}"
    return res


def power_off() -> None:
    """Power the guest off now (sysrq o): nothing more can be learnt from it."""
    os.sync()
    write_sysfs(SYSRQ, "o")
    time.sleep(30)  # the power-off is asynchronous
    os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- subcommands


def start(out: Path, modules: Sequence[str]) -> int:
    """After the modules loaded: record what the host checks before any test."""
    builtin = builtin_modules()
    state = {m: module_state(m, builtin) for m in modules}
    kmemleak = KMEMLEAK.exists()
    info: dict[str, Any] = {
        "uname": os.uname().release,
        "modules": state,
        "debug_locks": debug_locks(),
        "kmemleak": kmemleak,
        "env": {k: os.environ.get(k, "") for k in ("WD_MODULE_DIR", "WD_KERNEL", "WD_MACHINE", "PATH")},
        "mark_error": mark(MARK_COMMAND),
    }
    if kmemleak:
        # what the kernel leaked while booting is not ours: mark it reported
        info["kmemleak_clear"] = write_sysfs(KMEMLEAK, "clear")
    write_durable(out / "session-start.json", json.dumps(info, indent=1))
    save_kmsg(out, "start")
    return 0


def end(out: Path, rmmod: Sequence[str]) -> int:
    """The end of every session: leaks, rmmod, kmemleak, the whole log."""
    info: dict[str, Any] = {"mark_error": mark(MARK_END)}
    pinned, err = pinned_pages() if rmmod else (None, "")
    info["pinned_pages"], info["pinned_error"] = pinned, err
    info["mdevs"] = mdevs()
    info["rmmod"] = []
    stuck = False
    for m in rmmod:
        res = run_limited(["rmmod", m], RMMOD_TIMEOUT)
        res["module"] = m
        res["after"] = module_state(m)
        info["rmmod"].append(res)
        write_durable(out / "session-end.json", json.dumps(info, indent=1))
        if res["timed_out"]:
            stuck = True
            break
    if not stuck:
        info["kmemleak"] = kmemleak_scan()
    if not stuck:
        time.sleep(SETTLE)
    info["debug_locks"] = debug_locks()
    info["complete"] = not stuck
    write_durable(out / "session-end.json", json.dumps(info, indent=1))
    if stuck:
        write_sysfs(SYSRQ, "w")
    save_kmsg(out, "end")
    if stuck:
        power_off()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--modules", default="", help="comma-separated module names to report on")
    d = sub.add_parser("dmesg")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("label")
    e = sub.add_parser("end")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--rmmod", default="", help="comma-separated, in unload order")
    m = sub.add_parser("mark")
    m.add_argument("text")
    args = p.parse_args(argv)
    names = [n for n in getattr(args, "modules", getattr(args, "rmmod", "")).split(",") if n]
    if args.cmd == "start":
        return start(args.out, names)
    if args.cmd == "dmesg":
        save_kmsg(args.out, args.label)
        return 0
    if args.cmd == "end":
        return end(args.out, names)
    if args.cmd == "mark":
        err = mark(args.text)
        if err:
            print(f"wd-guest: {err}", file=sys.stderr)
        return 1 if err else 0
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
