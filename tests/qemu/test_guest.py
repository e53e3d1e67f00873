"""The VM suite: per kernel, one boot (see conftest.py); here, one host-side test that the
guest came up with the modules loaded and a clean kernel log, and one test per in-guest
file, with each in-guest test reported as a subtest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import vm

GuestRun = Any  # conftest.GuestRun (conftest modules are not importable by name)


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
    res = guest_run.result_for(guest_file)
    tests: list[dict[str, Any]] = res["tests"]
    for t in tests:
        name = t["nodeid"].split("::", 1)[-1]
        with subtests.test(msg=name):
            if t["outcome"] == "skipped":
                pytest.skip(t["longrepr"] or "skipped in the guest")
            assert t["outcome"] == "passed", f"[{guest_run.kernel}] {t['nodeid']} {t['outcome']}:\n{t['longrepr']}"
            splats = vm.find_splats(t["kmsg"])
            assert not splats, _splat_message(f"[{guest_run.kernel}] {t['nodeid']}", splats, t["kmsg"])
    head = f"[{guest_run.kernel}] {guest_file.name}"
    assert not res["timed_out"], f"{head}: timed out in the guest\n{res['output'][-4000:]}"
    # pytest exit 0 = all passed; 5 = no test collected, which is a broken file here
    assert res["returncode"] == 0, f"{head}: guest pytest exited {res['returncode']}\n{res['output'][-6000:]}"
    assert tests, f"{head}: no test ran in the guest\n{res['output'][-4000:]}"
    splats = vm.find_splats(res["kmsg"])
    assert not splats, _splat_message(head, splats, res["kmsg"])
