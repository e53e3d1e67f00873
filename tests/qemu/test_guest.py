"""The VM suite: per kernel, one boot (see conftest.py), judged by tools/verdict.py.
Host-side tests here: the guest came up with the modules loaded (or built in), a readable
kernel log and a clean boot; one test per in-guest file, each in-guest test reported as a
subtest (its failure text, its time limit, the splats in its own window of the kernel
log); the session as a whole: it ended by itself, nothing splatted outside a test, and at
its end no pin or mdev was left, both modules unloaded and kmemleak (if there) was clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import verdict
import vm

GuestRun = Any  # conftest.GuestRun (a conftest module is not importable by name)


def _fail(problems: list[str]) -> None:
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def test_guest_boots_with_modules(wd_kernel: str, guest_run: GuestRun) -> None:
    ev = guest_run.evidence
    _fail([f"[{guest_run.kernel}] {p}" for p in verdict.boot_problems(ev, vm.STOCK_MODULES + guest_run.modules)])
    env = (ev.start or {}).get("env", {})
    assert env.get("WD_MODULE_DIR"), "WD_MODULE_DIR not exported in the guest"
    assert env.get("WD_KERNEL") == guest_run.kernel.partition("@")[0]
    assert env.get("WD_MACHINE") == guest_run.machine.name


def _stopped(ev: verdict.Evidence, nodeid: str) -> str:
    """Why a test that started never reported, with what the guest left about it."""
    t = ev.timeout
    if t and t.get("nodeid") == nodeid:
        head = (
            f"{nodeid} was still running after {t.get('elapsed')}s (limit {t.get('limit')}s): the guest dumped its "
            "stacks and blocked tasks (sysrq-w), saved the kernel log and powered off"
        )
    elif ev.session is not None or (ev.runner and len(ev.runner.get("runs", [])) > 1):
        head = f"{nodeid} did not finish: the in-guest pytest died in it (a crash) and was restarted for the rest"
    else:
        head = f"{nodeid} was running when {verdict.guest_end(ev) or 'the in-guest pytest ended'}"
    stacks = ev.hang_traceback()
    part = stacks[stacks.find(f"--- {nodeid} ") :] if f"--- {nodeid} " in stacks else ""
    kmsg = ev.test_kmsg(nodeid) or []
    return (
        f"{head} {ev.where()}\n--- Python stacks ---\n{part[:8000]}\n--- its kernel log ---\n"
        + "\n".join(kmsg[-150:])
        + f"\n--- in-guest output ---\n{ev.pytest_output()}"
    )


def test_guest_file(wd_kernel: str, guest_file: Path, guest_run: GuestRun, subtests: Any) -> None:
    ev = guest_run.evidence
    head = f"[{guest_run.kernel}] {guest_file.name}"
    results = guest_run.results_for(guest_file)
    for t in results:
        name = t["nodeid"].split("::", 1)[-1]
        with subtests.test(msg=name):
            if t["outcome"] == "skipped":
                pytest.skip(t["longrepr"] or "skipped in the guest")
            assert t["outcome"] == "passed", f"[{guest_run.kernel}] {t['nodeid']} {t['outcome']}:\n{t['longrepr']}"
            _fail([f"[{guest_run.kernel}] {p}" for p in verdict.test_problems(ev, t["nodeid"])])
    for nodeid in guest_run.unfinished_in(guest_file):
        with subtests.test(msg=nodeid.split("::", 1)[-1]):
            pytest.fail(f"[{guest_run.kernel}] {_stopped(ev, nodeid)}", pytrace=False)
    if results or guest_run.unfinished_in(guest_file):
        return
    if guest_run.keyword and ev.session is not None:
        pytest.skip(f"no test of this file matches -k {guest_run.keyword!r}")
    if ev.timeout:
        why = f"the guest was powered off after {ev.timeout['nodeid']} ran past its limit"
    elif ev.runner and ev.runner.get("error"):
        why = ev.runner["error"]
    else:
        why = "none collected" if ev.session is not None else (verdict.guest_end(ev) or "the in-guest pytest ended")
    pytest.fail(f"{head}: no test of this file ran in the guest ({why})\n{ev.pytest_output()}", pytrace=False)


def test_guest_session(wd_kernel: str, guest_run: GuestRun) -> None:
    """The in-guest pytest run ended by itself; nothing splatted outside any test; the
    end-of-session checks passed."""
    ev = guest_run.evidence
    k = guest_run.kernel
    problems = [f"[{k}] {p}" for p in verdict.session_problems(ev, tuple(reversed(guest_run.modules)))]
    if ev.runner and ev.runner.get("error"):
        problems.insert(0, f"[{k}] in-guest runner: {ev.runner['error']}")
    elif ev.timeout:
        problems.insert(0, f"[{k}] {ev.timeout['nodeid']} ran past its {ev.timeout.get('limit')}s limit (see its file)")
    elif ev.session is None:
        problems.insert(0, f"[{k}] the in-guest pytest did not finish\n{ev.pytest_output()}")
    else:
        # 0: all passed; 1: some failed (reported per test); 5 with -k: nothing matched;
        # anything else is a crash, an internal or usage error, or nothing collected
        status = ev.session["exitstatus"]
        if status not in (0, 1):
            what = f"no in-guest test matches -k {guest_run.keyword!r}" if status == 5 and guest_run.keyword else ""
            problems.insert(0, f"[{k}] in-guest pytest exit status {status} {what}\n{ev.pytest_output()}")
        restarts = len((ev.runner or {}).get("runs", [1])) - 1
        if restarts:
            problems.insert(0, f"[{k}] the in-guest pytest died {restarts} time(s) and was restarted (see the files)")
    _fail(problems)
