"""The VM suite: per kernel, one boot (see conftest.py).  Host-side tests here: the guest
came up with the modules loaded and a clean kernel log; one test per in-guest file, each
in-guest test reported as a subtest (failure text and kernel log splats included); the
in-guest pytest run as a whole ended normally with a clean log between tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import vm

GuestRun = Any  # conftest.GuestRun (a conftest module is not importable by name)


def _splat_message(where: str, lines: list[str], context: list[str]) -> str:
    return f"{where}: kernel log shows a splat:\n" + "\n".join(lines) + "\n--- log ---\n" + "\n".join(context[-80:])


def test_guest_boots_with_modules(wd_kernel: str, guest_run: GuestRun) -> None:
    pre = guest_run.preamble
    loaded = set(pre["modules"])
    wanted = set(vm.STOCK_MODULES) | set(vm.OUR_MODULES)
    assert wanted <= loaded, f"not loaded in the guest: {sorted(wanted - loaded)}"
    assert pre["env"]["WD_MODULE_DIR"], "WD_MODULE_DIR not exported in the guest"
    assert pre["env"]["WD_KERNEL"] == guest_run.kernel
    splats = vm.find_splats(pre["dmesg"])
    assert not splats, _splat_message("boot + module load", splats, pre["dmesg"])


def test_guest_file(wd_kernel: str, guest_file: Path, guest_run: GuestRun, subtests: Any) -> None:
    head = f"[{guest_run.kernel}] {guest_file.name}"
    results = guest_run.results_for(guest_file)
    for t in results:
        name = t["nodeid"].split("::", 1)[-1]
        with subtests.test(msg=name):
            if t["outcome"] == "skipped":
                pytest.skip(t["longrepr"] or "skipped in the guest")
            assert t["outcome"] == "passed", f"[{guest_run.kernel}] {t['nodeid']} {t['outcome']}:\n{t['longrepr']}"
            splats = vm.find_splats(t["kmsg"])
            assert not splats, _splat_message(f"[{guest_run.kernel}] {t['nodeid']}", splats, t["kmsg"])
    hung = guest_run.unfinished_in(guest_file)
    why = (
        "did not finish (hung past --guest-test-timeout, or crashed the in-guest pytest)"
        if guest_run.session
        else f"was running when {guest_run.ended_why()}"
    )
    assert not hung, (
        f"{head}: {', '.join(hung)} {why}\n"
        f"--- in-guest output ---\n{guest_run.output_tail()}\n--- console ---\n{guest_run.console_tail()}"
    )
    why = "none collected" if guest_run.session else guest_run.ended_why()
    out = guest_run.output_tail()
    assert results, f"{head}: no test of this file ran in the guest ({why})\n--- in-guest output ---\n{out}"


def test_guest_session(wd_kernel: str, guest_run: GuestRun) -> None:
    """The in-guest pytest run ended by itself, and nothing splatted outside any test."""
    session = guest_run.session
    assert session is not None and guest_run.pytest_info, (
        f"[{guest_run.kernel}] {guest_run.ended_why()}\n--- in-guest output ---\n{guest_run.output_tail()}"
        f"\n--- console ---\n{guest_run.console_tail()}"
    )
    # 0: all passed; 1: some failed (reported per test above); anything else is a crash,
    # an internal error, a usage error or no test collected
    assert session["exitstatus"] in (0, 1), (
        f"[{guest_run.kernel}] in-guest pytest exit status {session['exitstatus']}\n{guest_run.output_tail()}"
    )
    kmsg = guest_run.outside_kmsg()
    splats = vm.find_splats(kmsg)
    assert not splats, _splat_message(f"[{guest_run.kernel}] outside tests", splats, kmsg)
    restarts = guest_run.pytest_info.get("runs", 1) - 1
    assert not restarts, f"[{guest_run.kernel}] {restarts} in-guest test(s) hung and were killed (see their files)"
