"""Judging a boot's output folder (vm.boot()): the host's side of the evidence.

Everything here reads files a guest left behind and returns the problems found, as
sentences; nothing boots.  The VM suite (tests/qemu) and `tools/build.py run` both judge
through these functions, and tests/host re-judges recorded output folders with them
(tests/host/data/guest/), the way kunit_tool_test re-parses recorded kernel logs.

The folder (names below are the contract with vm.py and guest_session.py):
  console.log           every line vng printed: the kernel console (vng --verbose) and
                        the command's output
  boot.json             how vng ended (exit status, killed by the host and why)
  session-start.json    after the modules loaded: module states, lockdep, kmemleak
  kmsg-*.txt            the whole kernel log at a moment (start, after each in-guest
                        pytest process, at a timeout, at the end)
  status                the command's exit status
  session-end.json      pinned pages and mdevs left, rmmod, kmemleak, lockdep at the end
  report.jsonl, runner.json, pytest.out, hang-traceback.txt   the in-guest pytest run

The kernel log is split by the harness's markers: what precedes `loading modules` is the
boot (a report there is the kernel's or the configuration's, not ours, but the run does
not count); each in-guest test owns the lines between its start and end markers; the
rest after the modules loaded belongs to the session.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest_session import (
    HEADER,
    MARK,
    MARK_END,
    MARK_MODULES,
    MARK_TEST_END,
    MARK_TEST_START,
)

# Kernel log lines that show a bug: a BUG/WARNING/oops, a lock, memory or undefined-behaviour
# checker's report, a lockup or stall, or a hung task.  Specific on purpose: a bare
# "lockdep" would match the boot line `rcu: RCU lockdep checking is enabled.`.
SPLAT_PATTERNS: tuple[str, ...] = (
    r"BUG:",
    r"WARNING:",
    r"\bOops\b",
    r"Call Trace",
    r"general protection fault",
    r"kernel BUG at",
    r"Kernel panic",
    r"Unable to handle kernel",
    r"KASAN:",
    r"UBSAN:",
    r"possible circular locking dependency",
    r"possible recursive locking",
    r"inconsistent lock state",
    r"possible irq lock inversion",
    r"suspicious RCU usage",
    r"DEBUG_LOCKS_WARN_ON",
    r"Disabling lock debugging",
    r"INFO: trying to register non-static key",
    r"refcount_t:",
    r"list_(add|del) corruption",
    r"soft lockup",
    r"hard LOCKUP",
    r"blocked for more than \d+ seconds",
    r"rcu: INFO: .* detected stall",
    r"rcu_(sched|preempt) detected stall",
    r"kmemleak: .*new suspected memory leak",
)
_SPLAT = re.compile("|".join(f"(?:{p})" for p in SPLAT_PATTERNS))
_PANIC = re.compile(r"Kernel panic|end Kernel panic|BUG:|Oops|general protection fault|kernel BUG at")
_KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")
CONTEXT_LINES = 60


# An allocation failure the kernel's fault injection forced (failslab, fail_page_alloc,
# fail-nth) prints "FAULT_INJECTION: forcing a failure." and its parameters; a vmalloc or a
# page allocation that fails because of it then reports through warn_alloc(), with a stack
# dump.  That dump is the injected fault's echo, not a bug: it is excused when it starts
# within a few lines of the injection, up to its </TASK>: only its "Call Trace:" line
# would match a pattern, and any other line that does (a BUG, KASAN ...) still counts.
_INJECTED = re.compile(r"FAULT_INJECTION: forcing a failure")
_WARN_ALLOC = re.compile(r": (?:vmalloc error: |page allocation failure: )")
INJECTION_REACH = 4  # kernel log lines from the injection to warn_alloc's header


def find_splats(lines: Iterable[str]) -> list[str]:
    """The kernel log lines that show a bug, a warning, an oops or a checker's report
    (the harness's own marker lines never count, nor warn_alloc's stack for a failure that
    fault injection forced)."""
    found = []
    since_injection = INJECTION_REACH + 1
    in_echo = False
    for ln in lines:
        text = message(ln)
        since_injection += 1
        if _INJECTED.search(text):
            since_injection = 0
        elif _WARN_ALLOC.search(text) and since_injection <= INJECTION_REACH:
            in_echo = True
        elif in_echo and "</TASK>" in text:
            in_echo = False
        elif in_echo and text.startswith("Call Trace"):
            continue
        elif _SPLAT.search(ln) and MARK not in ln:
            found.append(ln)
    return found


def message(line: str) -> str:
    """'[   12.345678] text' -> 'text'."""
    return _KERNEL_LINE.sub("", line, count=1)


_KMSG_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")


def unescape(text: str) -> str:
    """/dev/kmsg's text as it was written: the kernel shows a backslash and every byte
    outside printable ASCII as \\xNN, so a marker naming a test whose id holds one
    (a parameter b"\\x78\\x9c") reads back otherwise than it was written."""
    return _KMSG_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text)


# --------------------------------------------------------------------------- the kernel log


@dataclass
class KernelLog:
    """One kmsg-*.txt: the whole kernel log at a moment, as the guest read it."""

    source: Path
    lines: list[str]
    first: int = -1  # sequence number of the first record (0: nothing lost since boot)
    last: int = -1
    error: str = ""  # why the guest could not read all of it

    @classmethod
    def load(cls, path: Path) -> KernelLog:
        text = path.read_text(errors="replace").splitlines()
        if not text or not text[0].startswith(HEADER):
            return cls(path, text, error=f"{path.name}: no {HEADER} header (cut short?)")
        fields = dict(f.split("=", 1) for f in text[0][len(HEADER) :].split(" ", 4) if "=" in f)
        try:
            first, last = int(fields.get("first", "-1")), int(fields.get("last", "-1"))
        except ValueError:
            first = last = -1
        return cls(path, text[1:], first, last, fields.get("error", "").strip())

    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"the guest could not read its kernel log ({self.source.name}): {self.error}")
        if not self.lines:
            out.append(f"{self.source.name}: no kernel log at all")
        elif self.first != 0:
            out.append(
                f"{self.source.name}: the kernel log lost its first {self.first} record(s) (the buffer "
                "wrapped): what the lost lines said cannot be judged"
            )
        return out

    def index_of(self, marker: str, start: int = 0) -> int:
        for i in range(start, len(self.lines)):
            if message(self.lines[i]).startswith(marker):
                return i
        return -1


def kernel_logs(outdir: Path) -> list[KernelLog]:
    return [KernelLog.load(p) for p in sorted(outdir.glob("kmsg-*.txt"))]


def latest_kmsg(logs: Sequence[KernelLog]) -> KernelLog | None:
    """The most complete kernel log the guest saved (the one reaching the furthest record)."""
    return max(logs, key=lambda k: (k.last, len(k.lines))) if logs else None


# --------------------------------------------------------------------------- an output folder


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by a guest that died mid-write
    return out


@dataclass
class Evidence:
    """Everything one boot left in its output folder."""

    outdir: Path
    boot: dict[str, Any] = field(default_factory=dict)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    status: int | None = None
    kmsg: KernelLog | None = None
    kmsg_all: list[KernelLog] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    runner: dict[str, Any] | None = None

    @classmethod
    def load(cls, outdir: Path) -> Evidence:
        ev = cls(outdir)
        ev.boot = _json(outdir / "boot.json") or {}
        ev.start = _json(outdir / "session-start.json")
        ev.end = _json(outdir / "session-end.json")
        try:
            ev.status = int((outdir / "status").read_text().strip())
        except (OSError, ValueError):
            ev.status = None
        ev.kmsg_all = kernel_logs(outdir)
        ev.kmsg = latest_kmsg(ev.kmsg_all)
        console = outdir / "console.log"
        ev.console = console.read_text(errors="replace").splitlines() if console.exists() else []
        ev.records = _jsonl(outdir / "report.jsonl")
        ev.runner = _json(outdir / "runner.json")
        return ev

    # ----------------------------------------------------------------- the log, by phase

    def after_load(self) -> list[str]:
        """Kernel log lines from the loading of our modules on."""
        if self.kmsg is None:
            return []
        i = self.kmsg.index_of(MARK_MODULES)
        return self.kmsg.lines[i:] if i >= 0 else []

    def boot_lines(self) -> list[str]:
        if self.kmsg is None:
            return []
        i = self.kmsg.index_of(MARK_MODULES)
        return self.kmsg.lines[:i] if i >= 0 else self.kmsg.lines

    def test_windows(self) -> dict[str, tuple[int, int]]:
        """nodeid -> (first, last+1) line indexes of its window in the kernel log: from its
        start marker to its end marker (or to the next test's start, a timeout marker's
        successor, the session's end, or the end of the log)."""
        out: dict[str, tuple[int, int]] = {}
        if self.kmsg is None:
            return out
        lines = [unescape(message(ln)) for ln in self.kmsg.lines]
        open_id, open_at = "", -1
        for i, m in enumerate(lines):
            if m.startswith(MARK_TEST_START):
                if open_id:
                    out[open_id] = (open_at, i)
                open_id, open_at = m[len(MARK_TEST_START) :], i
            elif m.startswith(MARK_TEST_END) and open_id == m[len(MARK_TEST_END) :]:
                out[open_id] = (open_at, i + 1)
                open_id = ""
            elif m.startswith(MARK_END) and open_id:
                out[open_id] = (open_at, i)
                open_id = ""
        if open_id:
            out[open_id] = (open_at, len(lines))
        return out

    def test_kmsg(self, nodeid: str) -> list[str] | None:
        """The kernel log lines of one in-guest test; None when its markers are missing."""
        w = self.test_windows().get(nodeid)
        if w is None or self.kmsg is None:
            return None
        return self.kmsg.lines[w[0] : w[1]]

    def outside_tests(self) -> list[str]:
        """Kernel log lines after our modules loaded that belong to no test."""
        if self.kmsg is None:
            return []
        i = self.kmsg.index_of(MARK_MODULES)
        if i < 0:
            return []
        inside: set[int] = set()
        for a, b in self.test_windows().values():
            inside.update(range(a, b))
        return [ln for n, ln in enumerate(self.kmsg.lines) if n >= i and n not in inside]

    # ----------------------------------------------------------------- the pytest run

    def results(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "result"]

    def started(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "start"]

    def unfinished(self) -> list[str]:
        done = {r["nodeid"] for r in self.results()}
        return [r["nodeid"] for r in self.started() if r["nodeid"] not in done]

    @property
    def session(self) -> dict[str, Any] | None:
        """The last in-guest pytest process's session record (None: it was cut short)."""
        sessions = [r for r in self.records if r.get("event") == "session"]
        return sessions[-1] if sessions and self.records[-1].get("event") == "session" else None

    @property
    def timeout(self) -> dict[str, Any] | None:
        """The test the in-guest runner stopped for running past its limit, if any."""
        return (self.runner or {}).get("timeout") or None

    def hang_traceback(self) -> str:
        p = self.outdir / "hang-traceback.txt"
        return p.read_text(errors="replace") if p.exists() else ""

    def pytest_output(self, n: int = 6000) -> str:
        p = self.outdir / "pytest.out"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    # ----------------------------------------------------------------- context for messages

    def console_tail(self, n: int = CONTEXT_LINES) -> str:
        return "\n".join(self.console[-n:])

    def console_panic(self) -> list[str]:
        """From the first panic/oops/BUG line of the console on: how the guest died."""
        for i, ln in enumerate(self.console):
            if _PANIC.search(ln) and MARK not in ln:
                return self.console[i : i + CONTEXT_LINES]
        return []

    def where(self) -> str:
        return f"(console log: {self.outdir / 'console.log'})"


def script_start(ev: Evidence) -> str:
    """The guest uptime at which virtme-ng started the script ('?' if not seen): the boot's cost."""
    for ln in ev.kmsg.lines if ev.kmsg else []:
        if "virtme-ng-init: starting script" in ln:
            return ln.split("]", 1)[0].strip("[ ") + "s"
    return "?"


# --------------------------------------------------------------------------- verdicts


def splat_message(where: str, splats: Sequence[str], context: Sequence[str]) -> str:
    return f"{where}: kernel log shows a splat:\n" + "\n".join(splats) + "\n--- log ---\n" + "\n".join(context[-80:])


def boot_problems(ev: Evidence, expect_modules: Sequence[str]) -> list[str]:
    """Did the guest come up with the modules loaded, a readable kernel log, a clean boot,
    and (on a kernel with lockdep) lock debugging still on?"""
    if ev.start is None:
        how = guest_end(ev) or "it ended before the session started"
        panic = ev.console_panic()
        tail = "\n".join(panic) if panic else ev.console_tail()
        return [f"guest setup failed ({how}): modules not loaded or no shell {ev.where()}\n--- console ---\n{tail}"]
    out = []
    states = ev.start.get("modules", {})
    missing = [m for m in expect_modules if states.get(m, "absent") == "absent"]
    if missing:
        out.append(f"not loaded in the guest (neither a module nor built in): {missing}")
    if ev.start.get("mark_error"):
        out.append(f"the harness cannot write markers into the kernel log: {ev.start['mark_error']}")
    locks = ev.start.get("debug_locks")
    if locks is not None and locks != "1":
        out.append(
            f"lockdep is off at the start of the session (debug_locks: {locks}): a report during boot "
            "turned lock debugging off, so this run does not count"
        )
    if ev.kmsg is None:
        out.append(f"the guest saved no kernel log {ev.where()}")
        return out
    out += ev.kmsg.problems()
    if ev.kmsg.index_of(MARK_MODULES) < 0:
        out.append("the kernel log has no `loading modules` marker: it cannot be split into boot and session")
    splats = find_splats(ev.boot_lines())
    if splats:
        out.append(
            splat_message(
                "boot, before WrapDrive's modules loaded (the kernel's or its configuration's report, not "
                "ours; the run does not count)",
                splats,
                ev.boot_lines(),
            )
        )
    return out


def guest_end(ev: Evidence) -> str:
    """'' when the guest ended by itself after the command, else how it ended."""
    if ev.boot.get("killed"):
        return f"killed by the host: {ev.boot['killed']}"
    if ev.timeout and ev.status is None:
        t = ev.timeout
        return (
            f"the guest powered itself off after {t.get('nodeid')} ran past its {t.get('limit')}s limit "
            "(stacks, blocked tasks and the kernel log saved first)"
        )
    if ev.status is None:
        rc = ev.boot.get("returncode")
        panic = " after a kernel panic" if ev.console_panic() else ""
        return f"the guest ended before the command finished{panic} (vng exit {rc})"
    return ""


def end_problems(ev: Evidence, rmmod: Sequence[str]) -> list[str]:
    """The end-of-session checks: no pin or mdev left, rmmod of both modules, kmemleak."""
    end = ev.end
    if end is None:
        return ["the end-of-session checks did not run (no session-end.json)"]
    out = []
    if rmmod:
        if end.get("pinned_error"):
            out.append(f"pinned pages unreadable at the end of the session: {end['pinned_error']}")
        elif end.get("pinned_pages") != 0:
            out.append(f"{end.get('pinned_pages')} page(s) still pinned at the end of the session (debugfs)")
    if end.get("mdevs"):
        out.append(f"mdev(s) left at the end of the session: {', '.join(end['mdevs'])}")
    done = {r.get("module"): r for r in end.get("rmmod", [])}
    for m in rmmod:
        r = done.get(m)
        if r is None:
            out.append(f"rmmod {m} was not run")
        elif r.get("timed_out"):
            out.append(f"rmmod {m} did not return within {r.get('seconds')}s (stuck; blocked tasks dumped)")
        elif r.get("rc") != 0 or r.get("after") != "absent":
            out.append(f"rmmod {m} failed (exit {r.get('rc')}, module {r.get('after')}): {r.get('output', '')}")
    leak = end.get("kmemleak") or {}
    if leak.get("error"):
        out.append(f"kmemleak scan failed: {leak['error']}")
    elif leak.get("report", "").strip():
        out.append("kmemleak found unreferenced objects after rmmod:\n" + leak["report"].strip()[:6000])
    start_locks = (ev.start or {}).get("debug_locks")
    if start_locks == "1" and end.get("debug_locks") != "1":
        out.append(f"lockdep turned itself off during the session (debug_locks: {end.get('debug_locks')})")
    return out


def session_problems(ev: Evidence, rmmod: Sequence[str]) -> list[str]:
    """Everything after the modules loaded that belongs to no test: how the guest ended,
    the kernel log's completeness, splats outside tests, the end-of-session checks."""
    out = []
    how = guest_end(ev)
    if how:
        panic = ev.console_panic()
        detail = "\n--- console ---\n" + ("\n".join(panic) if panic else ev.console_tail())
        out.append(f"{how} {ev.where()}{detail}")
    if ev.kmsg is None:
        out.append(f"the guest saved no kernel log {ev.where()}")
    else:
        # every save counts: a log the guest could not read at the end is a finding even
        # when an earlier save was complete
        out += [p for k in ev.kmsg_all for p in k.problems() if k is not ev.kmsg] + ev.kmsg.problems()
        outside = ev.outside_tests()
        splats = find_splats(outside)
        if splats:
            out.append(splat_message("outside any test (module load, between tests, rmmod)", splats, outside))
    if not how or ev.end is not None:
        out += end_problems(ev, rmmod)
    return out


def test_problems(ev: Evidence, nodeid: str) -> list[str]:
    """The kernel's side of one in-guest test: its log window exists and has no splat."""
    lines = ev.test_kmsg(nodeid)
    if lines is None:
        why = ev.kmsg.error if ev.kmsg is not None and ev.kmsg.error else "its markers are not in the saved log"
        return [f"{nodeid}: no kernel log for this test ({why}): a splat would go unseen"]
    splats = find_splats(lines)
    return [splat_message(nodeid, splats, lines)] if splats else []


def run_problems(ev: Evidence, expect_modules: Sequence[str], rmmod: Sequence[str]) -> list[str]:
    """`tools/build.py run`: the boot, then every splat after the modules loaded, and the
    end-of-session checks."""
    out = boot_problems(ev, expect_modules)
    if ev.start is None:
        return out
    return out + session_problems(ev, rmmod)
