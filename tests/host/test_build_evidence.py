"""The verdicts of the VM harness re-judged on recorded guest output, the way the kernel's
kunit_tool_test re-parses recorded logs.  Each folder under data/guest/ is the output
folder of one real boot of Debian's 6.1 through vm.boot() (data/guest/record.py made
them; data/guest/probes/ are the in-guest tests that fail on purpose).  One test per way
kernel evidence used to be lost (issue 9, section 2)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))

import build  # noqa: E402
import guest_session  # noqa: E402
import verdict  # noqa: E402
import vm  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "guest"
LOADED = vm.STOCK_MODULES + vm.OUR_MODULES
RMMOD = ("wd_dummy", "wrapdrive")


def load(name: str) -> verdict.Evidence:
    return verdict.Evidence.load(DATA / name)


def joined(problems: list[str]) -> str:
    return "\n".join(problems)


# --------------------------------------------------------------------------- the console


def test_a_panicking_guest_leaves_its_oops_in_the_console_log() -> None:
    """virtme-ng 1.42 without --verbose boots `quiet loglevel=0` with the console on
    /dev/null: this oops would not exist on the host."""
    ev = load("panic")
    assert "--verbose" in ev.boot["command"]
    assert "--verbose" in vm.vng_command(Path("/k"), exec_cmd="true", kvm=False)
    problems = verdict.run_problems(ev, LOADED, RMMOD)
    text = joined(problems)
    assert "the guest ended before the command finished after a kernel panic" in text
    assert "Kernel panic - not syncing: sysrq triggered crash" in text
    assert "sysrq_handle_crash" in text  # the backtrace, not only the headline
    assert build.run_status(ev) != 0


# --------------------------------------------------------------------------- /dev/kmsg unreadable


def test_a_kernel_log_that_cannot_be_read_fails_instead_of_passing() -> None:
    """/dev/kmsg removed in the guest: the probe test passed in the guest and made the
    kernel log backtraces that nobody could read; the host must fail it."""
    ev = load("kmsg-gone")
    (result,) = ev.results()
    assert result["outcome"] == "passed"
    test = joined(verdict.test_problems(ev, result["nodeid"]))
    assert "no kernel log for this test" in test
    session = joined(verdict.session_problems(ev, RMMOD))
    assert "could not read its kernel log (kmsg-end.txt): cannot open /dev/kmsg" in session


# --------------------------------------------------------------------------- killed and hung tests


def test_the_kernel_log_of_a_test_whose_pytest_died_is_not_lost() -> None:
    """The probe made the kernel log backtraces, then killed its pytest; the runner saved
    the whole log and restarted pytest for the rest.  The dead test keeps its lines."""
    ev = load("session")
    assert [r["returncode"] for r in (ev.runner or {})["runs"]] == [-9, 1]
    (dead,) = ev.unfinished()
    assert dead == "probe_crash.py::test_logs_then_dies"
    problems = joined(verdict.test_problems(ev, dead))
    assert "sysrq: Show backtrace of all active CPUs" in problems and "Call Trace" in problems
    after = {r["nodeid"]: r for r in ev.results()}["probe_crash.py::test_after_the_crash"]
    assert after["outcome"] == "passed" and verdict.test_problems(ev, after["nodeid"]) == []


def test_a_test_stuck_in_the_kernel_is_stopped_from_outside_with_its_evidence() -> None:
    """The probe blocked in D state (vfork) past its 15 s limit: the in-guest runner
    dumped the blocked tasks, saved the log and powered off in seconds, not at the VM
    timeout; the stuck task's kernel stack and the lines it logged before are its own."""
    ev = load("hang")
    t = ev.timeout
    assert t is not None and t["nodeid"] == "probe_hang.py::test_hangs_in_the_kernel"
    assert t["limit"] == 15.0 and t["elapsed"] < 15.0 + 5
    assert not ev.boot["killed"] and ev.boot["elapsed"] < 300
    lines = ev.test_kmsg(t["nodeid"]) or []
    text = "\n".join(lines)
    assert "sysrq: Show backtrace of all active CPUs" in text  # logged before it hung
    assert "sysrq: Show Blocked State" in text and "state:D" in text and "__do_sys_vfork" in text
    assert verdict.test_problems(ev, t["nodeid"])
    assert "powered itself off after probe_hang.py::test_hangs_in_the_kernel" in verdict.guest_end(ev)
    assert [r["nodeid"] for r in ev.started()] == [t["nodeid"]]  # the next test never started


# --------------------------------------------------------------------------- the end of the session


def test_the_end_of_the_session_sees_leaks_and_a_report_after_the_last_test() -> None:
    ev = load("session")
    text = joined(verdict.session_problems(ev, RMMOD))
    assert "4 page(s) still pinned at the end of the session" in text
    assert "mdev(s) left at the end of the session" in text
    assert "rmmod wd_dummy failed (exit 1, module loaded): rmmod: ERROR: Module wd_dummy is in use" in text
    assert "rmmod wrapdrive failed" in text
    # sysrq-l fired once the last pytest process had exited: outside every test's window
    assert "outside any test" in text and "sysrq: Show backtrace of all active CPUs" in text
    last = ev.test_kmsg("probe_leak_b.py::test_last") or []
    assert not verdict.find_splats(last)


def test_a_clean_end_of_session_has_no_problem() -> None:
    ev = load("run-splat")
    assert ev.end is not None and ev.end["pinned_pages"] == 0 and ev.end["mdevs"] == []
    assert verdict.end_problems(ev, RMMOD) == []


def test_the_guest_conftest_names_what_a_file_left_behind() -> None:
    ev = load("session")
    results = {r["nodeid"]: r for r in ev.results()}
    a = results["probe_leak_a.py::test_leaves_an_mdev"]
    assert a["outcome"] == "error" and "probe_leak_a left behind: 1 mdev(s) left" in a["longrepr"]
    b = results["probe_leak_b.py::test_last"]
    assert b["outcome"] == "error" and "pinned pages 0 -> 4" in b["longrepr"]


# --------------------------------------------------------------------------- build.py run


def test_run_fails_after_a_kernel_splat_although_the_command_passed() -> None:
    ev = load("run-splat")
    assert ev.status == 0
    assert build.run_status(ev) == 1
    assert "sysrq: Show backtrace" in joined(verdict.run_problems(ev, LOADED, RMMOD))


def test_run_passes_when_the_guest_is_clean(tmp_path: Path) -> None:
    """The same recording with the report's lines taken out of the log: nothing to fail."""
    out = copy(tmp_path, "run-splat")
    for f in out.glob("kmsg-*.txt"):
        lines = f.read_text().splitlines(keepends=True)
        f.write_text("".join(ln for ln in lines if not verdict.find_splats([ln])))
    ev = verdict.Evidence.load(out)
    assert verdict.run_problems(ev, LOADED, RMMOD) == []
    assert build.run_status(ev) == 0


# --------------------------------------------------------------------------- ready for the debug kernel


def copy(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(DATA / name, out)
    return out


def insert_before(path: Path, marker: str, lines: list[str]) -> None:
    text = path.read_text().splitlines(keepends=True)
    i = next(n for n, ln in enumerate(text) if marker in ln)
    path.write_text("".join(text[:i] + [ln + "\n" for ln in lines] + text[i:]))


# The messages DESIGN.md records from boots of a debug (KASAN + lockdep + kmemleak) 6.1
# kernel, in the kernel's line format (the timestamps and the offset are not from it).
RCU_LOCKDEP_LINE = "[    0.000000] rcu: RCU lockdep checking is enabled."
BOOT_KASAN = [
    "[    1.712345] ==================================================================",
    "[    1.712350] BUG: KASAN: wild-memory-access in do_raw_spin_lock+0x4d/0x1a0",
    "[    1.712999] Disabling lock debugging due to kernel taint",
]
DEBUG_BOOT_NOISE = [
    RCU_LOCKDEP_LINE,
    "[    0.100000] kasan: KernelAddressSanitizer initialized",
    "[    0.200000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15)",
]


def test_a_debug_kernel_boot_counts_with_built_in_modules_and_lockdep_on() -> None:
    """A real boot of a debug 6.1 (KASAN, PROVE_LOCKING, DEBUG_KMEMLEAK; vfio, type1 and
    mdev =y): nothing in the boot is taken for a report, lockdep is on at the start, the
    stock modules count as loaded though built in, and kmemleak scanned at the end."""
    ev = load("debug-boot")
    boot = "\n".join(ev.boot_lines())
    assert "RCU lockdep checking is enabled." in boot and "KernelAddressSanitizer initialized" in boot
    assert verdict.boot_problems(ev, LOADED) == []
    assert ev.start is not None and ev.start["debug_locks"] == "1" and ev.start["kmemleak"] is True
    assert {m: ev.start["modules"][m] for m in vm.STOCK_MODULES} == dict.fromkeys(vm.STOCK_MODULES, "builtin")
    assert ev.end is not None and ev.end["kmemleak"]["present"] and ev.end["kmemleak"]["report"] == ""
    assert all(verdict.test_problems(ev, r["nodeid"]) == [] for r in ev.results())


def test_a_use_after_free_at_rmmod_after_the_last_test_fails_the_session() -> None:
    """Found by this harness on that debug kernel: `rmmod wd_dummy` at the end of the
    session frees what a kobject released later (CONFIG_DEBUG_KOBJECT_RELEASE) still
    uses.  No test was running; the old harness ended with the last test and never saw
    it.  KASAN's report also turned lockdep off, which the end record shows."""
    ev = load("debug-boot")
    text = joined(verdict.session_problems(ev, RMMOD))
    assert "outside any test" in text
    assert "BUG: KASAN: use-after-free in kobject_put" in text
    assert "lockdep turned itself off during the session (debug_locks: 0)" in text


def test_debug_kernel_boot_lines_are_not_splats() -> None:
    assert verdict.find_splats(DEBUG_BOOT_NOISE) == []
    assert verdict.find_splats(BOOT_KASAN) == BOOT_KASAN[1:]
    reports = [
        "[    9.000000] WARNING: possible circular locking dependency detected",
        "[    9.100000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
    ]
    assert verdict.find_splats(reports) == reports


# What the debug kernel printed when fail-nth failed finit_module's vmalloc (stop 18)
INJECTED_VMALLOC = [
    "[  685.349503] FAULT_INJECTION: forcing a failure.",
    "[  685.349503] name failslab, interval 1, probability 0, space 0, times 1",
    "[  685.353292] python: vmalloc error: size 163096, vm_struct allocation failed, "
    "mode:0xcc0(GFP_KERNEL), nodemask=(null),cpuset=/,mems_allowed=0-1",
    "[  685.357962] CPU: 1 PID: 140 Comm: python Tainted: G           O       6.1.192-wd-debug #1",
    "[  685.357962] Call Trace:",
    "[  685.357962]  <TASK>",
    "[  685.357962]  dump_stack_lvl+0x4c/0x63",
    "[  685.357962]  warn_alloc.cold+0x95/0x1a7",
    "[  685.357962]  vmalloc+0x86/0xc0",
    "[  685.357962]  kernel_read_file+0x3c1/0x680",
    "[  685.357962]  </TASK>",
    "[  685.378878] Mem-Info:",
]


def test_an_injected_allocation_failure_s_warn_alloc_stack_is_not_a_splat() -> None:
    assert verdict.find_splats(INJECTED_VMALLOC) == []


def test_warn_alloc_without_an_injection_and_reports_inside_the_echo_still_count() -> None:
    real = INJECTED_VMALLOC[2:]  # the same failure, nothing forced it
    assert verdict.find_splats(real) == ["[  685.357962] Call Trace:"]
    kasan = "[  685.357962] BUG: KASAN: slab-out-of-bounds in kernel_read_file+0x3c1/0x680"
    inside = [*INJECTED_VMALLOC[:8], kasan, *INJECTED_VMALLOC[8:]]
    assert verdict.find_splats(inside) == [kasan]
    # the echo ends at </TASK>: a second stack after it is judged on its own
    assert verdict.find_splats([*INJECTED_VMALLOC, *real[2:4]]) == ["[  685.357962] Call Trace:"]
    far = [*INJECTED_VMALLOC[:2], *["[  685.35] kobject: x"] * verdict.INJECTION_REACH, *real]
    assert verdict.find_splats(far) == ["[  685.357962] Call Trace:"]


def test_a_report_during_boot_is_judged_apart_from_ours(tmp_path: Path) -> None:
    out = copy(tmp_path, "run-splat")
    for f in out.glob("kmsg-*.txt"):
        insert_before(f, guest_session.MARK_MODULES, [RCU_LOCKDEP_LINE, *BOOT_KASAN])
    ev = verdict.Evidence.load(out)
    boot = joined(verdict.boot_problems(ev, LOADED))
    assert "before WrapDrive's modules loaded" in boot and "wild-memory-access" in boot
    assert "RCU lockdep checking" not in boot.split("--- log ---")[0]
    session = joined(verdict.session_problems(ev, RMMOD))
    assert "wild-memory-access" not in session  # ours are judged on what follows the load


def test_lockdep_off_at_the_start_means_the_run_does_not_count(tmp_path: Path) -> None:
    out = copy(tmp_path, "run-splat")
    start = json.loads((out / "session-start.json").read_text())
    assert start["debug_locks"] is None  # Debian's kernel has no lockdep: nothing to check
    assert verdict.boot_problems(verdict.Evidence.load(out), LOADED) == []
    for value, bad in (("1", False), ("0", True)):
        start["debug_locks"] = value
        (out / "session-start.json").write_text(json.dumps(start))
        problems = joined(verdict.boot_problems(verdict.Evidence.load(out), LOADED))
        assert ("does not count" in problems) == bad


def test_built_in_stock_modules_count_as_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A debug kernel may build vfio, vfio_iommu_type1 and mdev in (=y)."""
    sysfs = tmp_path / "sys"
    (sysfs / "module" / "vfio_iommu_type1" / "parameters").mkdir(parents=True)  # built in, has parameters
    (sysfs / "module" / "wrapdrive").mkdir(parents=True)
    (sysfs / "module" / "wrapdrive" / "initstate").write_text("live\n")
    monkeypatch.setattr(guest_session, "SYSFS", sysfs)
    assert guest_session.module_state("vfio_iommu_type1", set()) == "builtin"
    assert guest_session.module_state("vfio", {"vfio"}) == "builtin"  # no parameters: modules.builtin
    assert guest_session.module_state("wrapdrive", set()) == "loaded"
    assert guest_session.module_state("mdev", set()) == "absent"
    out = copy(tmp_path, "run-splat")
    start = json.loads((out / "session-start.json").read_text())
    start["modules"].update(vfio="builtin", vfio_iommu_type1="builtin", mdev="builtin")
    (out / "session-start.json").write_text(json.dumps(start))
    assert verdict.boot_problems(verdict.Evidence.load(out), LOADED) == []
    start["modules"]["mdev"] = "absent"
    (out / "session-start.json").write_text(json.dumps(start))
    assert "['mdev']" in joined(verdict.boot_problems(verdict.Evidence.load(out), LOADED))


def test_a_wrapped_kernel_log_is_a_problem(tmp_path: Path) -> None:
    out = copy(tmp_path, "run-splat")
    for f in out.glob("kmsg-*.txt"):
        text = f.read_text().replace("first=0 ", "first=812 ", 1)
        f.write_text(text)
    assert "buffer wrapped" in joined(verdict.session_problems(verdict.Evidence.load(out), RMMOD))


# --------------------------------------------------------------------------- escaped markers


def test_a_test_id_with_a_backslash_keeps_its_kernel_log_window() -> None:
    """/dev/kmsg shows a backslash as \\x5c: a parametrized id such as
    `test_inflate[x\\x9c]` read back otherwise than the marker was written, and the
    test was failed for "no kernel log" (seen on 6.1 with test_kernel_stream.py)."""
    nodeid = "test_kernel_stream.py::test_inflate[4194304-x\\x9c]"
    shown = nodeid.replace("\\", "\\x5c")
    log = verdict.KernelLog(Path("kmsg-end.txt"), [
        f"[    1.0] {guest_session.MARK_TEST_START}{shown}",
        "[    1.5] WARNING: CPU: 0 PID: 1 at somewhere",
        f"[    2.0] {guest_session.MARK_TEST_END}{shown}",
    ], first=0, last=2)
    ev = verdict.Evidence(Path("."), kmsg=log)
    assert verdict.unescape(shown) == nodeid
    window = ev.test_kmsg(nodeid)
    assert window is not None and any("WARNING:" in ln for ln in window)
