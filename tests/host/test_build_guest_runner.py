"""The in-guest half of the VM suite (tools/guest_runner.py, tools/wd_guest_plugin.py,
tests/qemu/guest/conftest.py), run here on the host on throw-away test files, with a
plain file standing in for /dev/kmsg ($WD_KMSG) and temporary folders for sysfs and
debugfs: per-test records and kernel-log markers, a crashed pytest restarted without
losing its log, a hung test stopped from outside with its stack dumped, the `slow`
marker, -k forwarded, the host conftest never loaded, leaks named between files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))

import guest_session  # noqa: E402
import verdict  # noqa: E402

GUEST_CONFTEST = REPO / "tests" / "qemu" / "guest" / "conftest.py"


def run_runner(tmp_path: Path, files: list[Path], *extra: str, env: dict[str, str] | None = None) -> Path:
    out = tmp_path / "out"
    kmsg = tmp_path / "kmsg"
    if not kmsg.exists():
        kmsg.write_text("6,0,100,-;Linux version 6.1.0-fake\n5,1,200,-;wd-harness: loading modules\n")
    run_env = dict(os.environ, WD_KMSG=str(kmsg), WD_SYSFS=str(tmp_path / "sys"), WD_DEBUGFS=str(tmp_path / "dbg"))
    run_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "guest_runner.py"), "--host-test", "--out", str(out), "--timeout", "120",
         *extra, *map(str, files)],
        capture_output=True, text=True, timeout=240, check=False, env=run_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (out / "report.jsonl").read_text().splitlines()]


def results(out: Path) -> dict[str, dict[str, Any]]:
    return {r["nodeid"].split("::")[-1]: r for r in records(out) if r["event"] == "result"}


def test_records_results_and_marks_each_test_in_the_kernel_log(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_a.py").write_text(
        "import os\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'deliberate'\n"
        "def test_warns():\n"
        "    with open(os.environ['WD_KMSG'], 'a') as f:\n"
        "        f.write('4,99,5000,-;WARNING: CPU: 0 PID: 1 at fake.c:1 f+0x1/0x2\\n')\n"
    )
    (t / "test_b.py").write_text("import pytest\ndef test_skip():\n    pytest.skip('not here')\n")
    out = run_runner(tmp_path, [t / "test_a.py", t / "test_b.py"])
    r = results(out)
    assert r["test_ok"]["outcome"] == "passed"
    assert r["test_bad"]["outcome"] == "failed" and "deliberate" in r["test_bad"]["longrepr"]
    assert r["test_skip"]["outcome"] == "skipped"
    assert r["test_ok"]["nodeid"] == "test_a.py::test_ok"  # relative to the guest tests' folder
    ev = verdict.Evidence.load(out)
    assert verdict.test_problems(ev, "test_a.py::test_ok") == []
    assert "WARNING: CPU: 0" in "\n".join(verdict.test_problems(ev, "test_a.py::test_warns"))
    assert (out / "kmsg-pytest-1.txt").exists()


def test_a_crashed_pytest_is_restarted_and_its_kernel_log_kept(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_a.py").write_text(
        "import os, signal\n"
        "def test_before():\n    pass\n"
        "def test_dies():\n"
        "    with open(os.environ['WD_KMSG'], 'a') as f:\n"
        "        f.write('4,99,5000,-;BUG: unable to handle page fault for address: 0\\n')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "def test_after():\n    pass\n"
    )
    out = run_runner(tmp_path, [t / "test_a.py"])
    r = results(out)
    assert set(r) == {"test_before", "test_after"}
    started = [x["nodeid"] for x in records(out) if x["event"] == "start"]
    assert started.count("test_a.py::test_before") == 1, "a restart does not rerun what already ran"
    info = json.loads((out / "runner.json").read_text())
    assert [x["returncode"] for x in info["runs"]] == [-9, 0]
    ev = verdict.Evidence.load(out)
    assert "BUG: unable to handle" in "\n".join(verdict.test_problems(ev, "test_a.py::test_dies"))


def test_a_hung_test_is_stopped_from_outside_with_its_stack(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_h.py").write_text(
        "import time, pytest\n"
        "@pytest.mark.slow(30)\n"
        "def test_slow_but_marked():\n    time.sleep(3)\n"
        "def test_hangs():\n    time.sleep(600)\n"
        "def test_never():\n    pass\n"
    )
    out = run_runner(tmp_path, [t / "test_h.py"], "--test-timeout", "2")
    r = results(out)
    assert r["test_slow_but_marked"]["outcome"] == "passed"  # 3 s, within its marker's 30 s
    info = json.loads((out / "runner.json").read_text())
    assert info["timeout"]["nodeid"] == "test_h.py::test_hangs" and info["timeout"]["limit"] == 2.0
    assert "test_hangs" not in r and "test_never" not in r
    dump = (out / "hang-traceback.txt").read_text()
    # the stack itself, not just the header line naming the test
    assert 'test_h.py", line 6 in test_hangs' in dump
    assert (out / "kmsg-timeout.txt").exists()


def test_timeout_scale_stretches_every_limit(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_s.py").write_text("import time\ndef test_three_seconds():\n    time.sleep(3)\n")
    out = run_runner(tmp_path, [t / "test_s.py"], "--test-timeout", "2", "--timeout-scale", "5")
    assert results(out)["test_three_seconds"]["outcome"] == "passed"
    start = next(x for x in records(out) if x["event"] == "start")
    assert start["timeout"] == 10.0


def test_keyword_selects_in_guest_tests(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_k.py").write_text("def test_alpha():\n    pass\ndef test_beta():\n    pass\n")
    out = run_runner(tmp_path, [t / "test_k.py"], "-k", "beta")
    assert set(results(out)) == {"test_beta"}


def test_the_guest_pytest_loads_only_the_plugins_it_names(tmp_path: Path) -> None:
    """hypothesis is installed (the host tests use it) and registers a pytest plugin; the
    guest tests name theirs, and importing it cost seconds per boot under TCG."""
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_p.py").write_text(
        "import sys\n"
        "def test_no_autoloaded_plugin(pytestconfig):\n"
        "    assert not pytestconfig.pluginmanager.has_plugin('hypothesispytest')\n"
        "    assert 'hypothesis' not in sys.modules\n"
    )
    out = run_runner(tmp_path, [t / "test_p.py"])
    assert results(out)["test_no_autoloaded_plugin"]["outcome"] == "passed"


def test_precompile_leaves_the_rewritten_modules_the_guest_reads(tmp_path: Path) -> None:
    """The guest never writes bytecode; what the host compiled before the boot is what it
    reads: pytest's assertion-rewritten module, next to its source."""
    import guest_runner

    t = tmp_path / "t"
    t.mkdir()
    (t / "test_r.py").write_text("def test_r():\n    assert 1 + 1 == 2\n")
    assert guest_runner.precompile(sys.executable, [t / "test_r.py"]) == ""
    assert [p.name for p in (t / "__pycache__").iterdir() if "pytest" in p.name], "no rewritten module"
    (t / "test_broken.py").write_text("def test_x(:\n")
    trouble = guest_runner.precompile(sys.executable, [t / "test_broken.py"])
    assert "exited" in trouble and "SyntaxError" in trouble, trouble


def test_host_conftest_is_not_loaded_but_the_guest_one_is(tmp_path: Path) -> None:
    """The in-guest pytest stops looking for conftests at the guest tests' folder.  An
    ini file above it, as the repository's pyproject.toml, would otherwise make pytest
    load every conftest from there down."""
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tmp_path / "conftest.py").write_text("raise RuntimeError('the host conftest was loaded in the guest')\n")
    t = tmp_path / "guest"
    t.mkdir()
    (t / "conftest.py").write_text("import pytest\n@pytest.fixture\ndef from_guest_conftest():\n    return 7\n")
    (t / "test_c.py").write_text("def test_uses_guest_fixture(from_guest_conftest):\n    assert from_guest_conftest\n")
    out = run_runner(tmp_path, [t / "test_c.py"])
    assert results(out)["test_uses_guest_fixture"]["outcome"] == "passed"


def test_guest_conftest_names_what_a_file_leaves_behind(tmp_path: Path) -> None:
    """The real tests/qemu/guest/conftest.py, on fake sysfs/debugfs folders."""
    t = tmp_path / "guest"
    t.mkdir()
    (t / "conftest.py").write_text(GUEST_CONFTEST.read_text())
    devices = tmp_path / "sys" / "bus" / "mdev" / "devices"
    devices.mkdir(parents=True)
    pinned = tmp_path / "dbg" / "wrapdrive" / "pinned_pages"
    pinned.parent.mkdir(parents=True)
    pinned.write_text("0\n")
    (t / "test_1leaky.py").write_text(
        "import os, pathlib\n"
        "def test_leaks():\n"
        f"    pathlib.Path({str(devices)!r}, 'uuid-1').mkdir()\n"
        f"    pathlib.Path({str(pinned)!r}).write_text('3\\n')\n"
    )
    (t / "test_2clean.py").write_text("def test_clean():\n    pass\n")
    out = run_runner(tmp_path, [t / "test_1leaky.py", t / "test_2clean.py"])
    r = results(out)
    assert r["test_leaks"]["outcome"] == "error"
    assert "test_1leaky left behind: 1 mdev(s) left: uuid-1; pinned pages 0 -> 3" in r["test_leaks"]["longrepr"]
    assert r["test_clean"]["outcome"] == "passed", "only what a file added is its leak"


def test_unwritable_kernel_log_leaves_tests_without_evidence(tmp_path: Path) -> None:
    t = tmp_path / "t"
    t.mkdir()
    (t / "test_u.py").write_text("def test_passes():\n    pass\n")
    (tmp_path / "kmsg").mkdir()  # neither readable as a log nor writable: like a missing /dev/kmsg
    out = run_runner(tmp_path, [t / "test_u.py"])
    assert results(out)["test_passes"]["outcome"] == "passed"
    ev = verdict.Evidence.load(out)
    assert "no kernel log for this test" in "\n".join(verdict.test_problems(ev, "test_u.py::test_passes"))


def test_read_kmsg_formats_records_and_keeps_sequence_numbers(tmp_path: Path) -> None:
    f = tmp_path / "kmsg"
    f.write_text("6,0,1000000,-;Linux version 6.1\n4,1,5678901,-;WARNING: x\n SUBSYSTEM=y\n")
    recs, err = guest_session.read_kmsg(str(f))
    assert err == "" and recs == [(0, "[    1.000000] Linux version 6.1"), (1, "[    5.678901] WARNING: x")]
    assert guest_session.format_record("garbage") is None


@pytest.mark.parametrize("state", ["1", "0", None])
def test_debug_locks_read_from_lockdep_stats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str | None
) -> None:
    stats = tmp_path / "lockdep_stats"
    if state is not None:
        stats.write_text(f" lock-classes:                         1718 [max: 8192]\n debug_locks:  {state}\n")
    monkeypatch.setattr(guest_session, "LOCKDEP_STATS", stats)
    assert guest_session.debug_locks() == state


def test_the_host_kills_a_guest_whose_test_outlives_its_limit_and_grace(tmp_path: Path) -> None:
    """guest_runner.HangWatch, the host's backstop when the guest cannot power off."""
    import guest_runner

    report = tmp_path / "report.jsonl"
    now = [100.0]
    watch = guest_runner.HangWatch(report, grace=30, clock=lambda: now[0])
    assert watch() is None  # nothing yet
    report.write_text(json.dumps({"event": "start", "nodeid": "f.py::t", "timeout": 60, "t": 1.0}) + "\n")
    assert watch() is None
    now[0] += 89
    assert watch() is None
    now[0] += 2
    assert "f.py::t still running after 91s (limit 60s)" in (watch() or "")
    with report.open("a") as f:
        f.write(json.dumps({"event": "result", "nodeid": "f.py::t"}) + "\n")
    assert watch() is None
