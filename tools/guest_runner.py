"""Runs INSIDE a guest booted by the VM suite (tests/qemu/conftest.py): one pytest process
over all the in-guest files (importing pytest costs ~30 s under TCG over 9p, so it is
paid once), with wd_guest_plugin recording each test into --out, a folder shared
read-write with the host, and marking each test's start and end in the kernel log.

The per-test time limit is enforced from here, outside pytest: a test stuck in the
kernel (D state) cannot be interrupted from inside.  When the running test passes its
limit (the plugin's start record carries it: --test-timeout, or a `slow` marker's), this
runner dumps the Python stacks (SIGUSR1 -> faulthandler) and the blocked tasks (sysrq-w),
saves the whole kernel log, and powers the guest off: a hang costs its limit, not the VM
timeout.  After a pytest process that ended without finishing (a crash), the whole
kernel log is saved before the next process starts for the tests not started yet.

Standard library only (pytest runs in the child); guest_session does the kernel side.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guest_session as gs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEST_TIMEOUT = 60.0
# Seconds the dump of Python stacks may take before the kernel side is dumped.
STACK_DUMP_WAIT = 3.0
POLL = 0.5
MAX_RUNS = 20
# The host kills a guest whose test is this long past its limit (the guest did not act).
HANG_GRACE = 120.0


def pytest_cmd(
    python: str,
    files: list[str],
    report: Path,
    *,
    rootdir: Path,
    test_timeout: float,
    keyword: str = "",
    durations: int = 0,
) -> list[str]:
    """The in-guest pytest: conftests are looked up no higher than the guest tests'
    folder (the host's tests/qemu/conftest.py is not for the guest)."""
    cmd = [
        python, "-m", "pytest", "-p", "wd_guest_plugin", "-p", "no:cacheprovider",
        f"--rootdir={rootdir}", f"--confcutdir={rootdir}",
        f"--wd-report={report}", f"--wd-test-timeout={test_timeout}", "-rA", "-v", "--color=no",
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    if durations:
        cmd.append(f"--durations={durations}")
    return cmd + files


def guest_env(base: dict[str, str], timeout_scale: float = 1.0) -> dict[str, str]:
    """The in-guest pytest's environment: tools/ importable (the plugin), and no plugin
    loaded unless named (the guest tests name theirs: scanning every installed package's
    entry points and importing hypothesis cost seconds of TCG per boot)."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tools"), env.get("PYTHONPATH", "")]))
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if timeout_scale != 1.0:
        env["WD_TIMEOUT_SCALE"] = str(timeout_scale)
    return env


def precompile(python: str, files: list[Path]) -> str:
    """On the host, before a boot: byte-compile what the guest imports (the userlib, tools/)
    and let pytest write its assertion-rewritten test modules, next to their sources,
    where the guest finds them.  The guest never writes bytecode (PYTHONDONTWRITEBYTECODE),
    so without this every boot compiles all of it again under TCG.  A failure costs only
    that time: it is returned as a message, not raised."""
    env = guest_env({k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    names = [str(f) for f in files]
    collect = pytest_cmd(python, names, Path(os.devnull), rootdir=common_root(names), test_timeout=DEFAULT_TEST_TIMEOUT)
    steps = [
        [python, "-m", "compileall", "-q", str(REPO / "userlib" / "src"), str(REPO / "tools")],
        [a for a in collect if not a.startswith("--wd-")] + ["--collect-only", "-q"],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-800:]
            return f"precompile: {' '.join(cmd[1:4])} exited {done.returncode}: {tail}"
    return ""


def host_command(
    python: str,
    out: Path,
    files: list[Path],
    *,
    test_timeout: float = DEFAULT_TEST_TIMEOUT,
    run_timeout: float = 1200.0,
    timeout_scale: float = 1.0,
    keyword: str = "",
    durations: int = 0,
) -> list[str]:
    """The command the host gives vm.boot() to run this runner in the guest."""
    cmd = [python, str(Path(__file__).resolve()), "--out", str(out)]
    cmd += ["--test-timeout", str(test_timeout), "--timeout", str(run_timeout)]
    if timeout_scale != 1.0:
        cmd.append(f"--timeout-scale={timeout_scale}")
    if keyword:
        cmd += ["-k", keyword]
    if durations:
        cmd.append(f"--durations={durations}")
    return cmd + [str(f) for f in files]


def common_root(files: list[str]) -> Path:
    paths = [Path(f).resolve() for f in files]
    return Path(os.path.commonpath([p.parent for p in paths])) if paths else REPO


class ReportTail:
    """Follows report.jsonl as the plugin appends to it: which test runs, since when, and
    how long it may take."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.running: dict[str, Any] | None = None
        self.started = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for line in data[: end + 1].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "start":
                self.running = rec
                self.started += 1
            elif rec.get("event") == "result" and self.running and rec.get("nodeid") == self.running["nodeid"]:
                self.running = None

    def overdue(self, now: float) -> dict[str, Any] | None:
        """The running test when it is past its limit."""
        r = self.running
        if r and r.get("timeout", 0) > 0 and now - float(r["t"]) > float(r["timeout"]):
            return r
        return None


class HangWatch:
    """On the HOST (vm.boot's watch): the backstop for a guest that cannot power itself
    off (a wedged kernel).  A test seen running for longer than its limit plus `grace`
    gets the guest killed; the runner in the guest normally acts within seconds."""

    def __init__(self, report: Path, grace: float = HANG_GRACE, clock: Any = time.monotonic) -> None:
        self.tail = ReportTail(report)
        self.grace = grace
        self.clock = clock
        self.seen: tuple[str, float] | None = None

    def __call__(self) -> str | None:
        self.tail.poll()
        r = self.tail.running
        if r is None:
            self.seen = None
            return None
        if self.seen is None or self.seen[0] != r["nodeid"]:
            self.seen = (r["nodeid"], self.clock())
        limit = float(r.get("timeout") or 0)
        waited = self.clock() - self.seen[1]
        if limit and waited > limit + self.grace:
            return f"{r['nodeid']} still running after {waited:.0f}s (limit {limit:.0f}s); the guest did not power off"
        return None


def stop_for_timeout(
    out: Path, proc: subprocess.Popen[bytes], test: dict[str, Any], info: dict[str, Any], host_test: bool = False
) -> None:
    """A test ran past its limit: leave every piece of evidence, then power off (on the
    host, in host tests: no sysrq, pytest is killed instead)."""
    nodeid = test["nodeid"]
    elapsed = time.monotonic() - float(test["t"])
    gs.mark(f"{gs.MARK_TIMEOUT}{nodeid}")
    try:
        os.kill(proc.pid, signal.SIGUSR1)  # the plugin's faulthandler: Python stacks
    except ProcessLookupError:
        pass
    time.sleep(STACK_DUMP_WAIT)
    if not host_test:
        gs.write_sysfs(gs.SYSRQ, "w")  # tasks blocked in the kernel (D state), with stacks
        time.sleep(1.0)
    info["timeout"] = {"nodeid": nodeid, "limit": test.get("timeout"), "elapsed": round(elapsed, 1)}
    gs.save_kmsg(out, "timeout")
    gs.write_durable(out / "runner.json", json.dumps(info, indent=1))
    print(f"[wd-guest] {nodeid} still running after {elapsed:.0f}s (limit {test.get('timeout')}s): "
          "stacks and blocked tasks dumped, kernel log saved; powering off", flush=True)  # fmt: skip
    if host_test:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return
    gs.power_off()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT, help="per test unless marked slow")
    p.add_argument("--timeout", type=float, default=1200.0, help="whole pytest run, seconds")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiplies every per-test limit (debug kernels)")
    p.add_argument("-k", dest="keyword", default="", help="pytest -k expression, forwarded")
    p.add_argument("--durations", type=int, default=0)
    p.add_argument("--host-test", action="store_true", help="on the host (tests): no sysrq, no power-off")
    p.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"runs": [], "timeout": None, "keyword": args.keyword}
    # Without the kernel log the host cannot see a splat: it fails every test then (no
    # window in the log), so the tests still run and their own results are kept.
    info["mark_error"] = gs.mark(f"{gs.MARK} pytest runner start")
    if not args.files:
        gs.write_durable(out / "runner.json", json.dumps(info, indent=1))
        return 0
    env = guest_env(dict(os.environ), args.timeout_scale)
    report = out / "report.jsonl"
    cmd = pytest_cmd(sys.executable, args.files, report, rootdir=common_root(args.files),
                     test_timeout=args.test_timeout, keyword=args.keyword, durations=args.durations)  # fmt: skip
    t0 = time.monotonic()
    tail = ReportTail(report)
    with (out / "pytest.out").open("wb") as log:
        while len(info["runs"]) < MAX_RUNS:
            started_before = tail.started
            run_t0 = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip
            while proc.poll() is None:
                time.sleep(POLL)
                tail.poll()
                now = time.monotonic()
                late = tail.overdue(now)
                if late is None and now - t0 > args.timeout and tail.running:
                    late = dict(tail.running, timeout=round(now - float(tail.running["t"]), 1))
                if late is not None:
                    stop_for_timeout(out, proc, late, info, args.host_test)
                    break
            tail.poll()
            rc = proc.wait()
            run = len(info["runs"]) + 1
            info["runs"].append({"returncode": rc, "seconds": round(time.monotonic() - run_t0, 1)})
            gs.save_kmsg(out, f"pytest-{run}")
            if info["timeout"] or session_ended(report) or tail.started == started_before:
                break
            # pytest died in the middle (a crash): go on with the tests not started yet, in a
            # new process; the kernel log up to here is saved above, nothing of it is lost
            log.write(f"\n[wd-guest] pytest ended without finishing (exit {rc}); restarting for the rest\n".encode())
            log.flush()
    info["duration"] = round(time.monotonic() - t0, 2)
    gs.write_durable(out / "runner.json", json.dumps(info, indent=1))
    print(f"[wd-guest] pytest: {len(info['runs'])} process(es) in {info['duration']}s", flush=True)
    return 0


def session_ended(report: Path) -> bool:
    """The last pytest process wrote its session record (it was not cut short)."""
    if not report.exists():
        return False
    lines = report.read_text(errors="replace").splitlines()
    return bool(lines) and '"event": "session"' in lines[-1]


if __name__ == "__main__":
    sys.exit(main())
