"""The ``wrapdrive`` command on fake sysfs trees (host; no device is opened)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakesysfs import FakeDevice, FakeType, build
from wrapdrive import cli
from wrapdrive.abi import WD_CAPA_SHARE_ALL, WD_WEAK_ORDER


def tree(tmp_path: Path) -> Path:
    types = [FakeType("sha256", "sha256", 0, 7), FakeType("crc32c-weak", "crc32c", WD_WEAK_ORDER, 3),
             FakeType("sha256-sva", "sha256", WD_CAPA_SHARE_ALL, 0)]
    return build(tmp_path, [FakeDevice("wd_dummy.0", 0, 10, types=types),
                            FakeDevice("wd_dummy.1", 1, 101, types=types[:1])])


def test_list_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--sysfs", str(tree(tmp_path)), "list"]) == 0
    out = capsys.readouterr().out
    assert "wd_dummy.0  numa_zone=0  priority=10" in out
    assert "wd_dummy.1  numa_zone=1  priority=101 (out of 1..100: disabled)" in out
    assert "wd_dummy-crc32c-weak" in out and "(WD_WEAK_ORDER)" in out and "free=3" in out
    assert "flags=0x00000001 (WD_CAPA_SHARE_ALL)" in out


def test_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--sysfs", str(tree(tmp_path)), "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == ["wd_dummy.0", "wd_dummy.1"]
    d0 = data[0]
    assert d0["numa_zone"] == 0 and d0["priority"] == 10 and d0["selectable"]
    assert not data[1]["selectable"]
    t = {x["name"]: x for x in d0["types"]}
    assert t["wd_dummy-sha256"]["available_instances"] == 7
    assert t["wd_dummy-crc32c-weak"]["flags"] == WD_WEAK_ORDER
    assert t["wd_dummy-sha256-sva"]["flag_names"] == "WD_CAPA_SHARE_ALL"


def test_list_without_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--sysfs", str(tmp_path), "list"]) == 1
    assert "no WrapDrive devices" in capsys.readouterr().err
    assert cli.main(["--sysfs", str(tmp_path), "list", "--json"]) == 1  # as the text form
    assert json.loads(capsys.readouterr().out) == []


def test_run_without_a_device_explains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"x")
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "zlib", str(f)]) == 1
    err = capsys.readouterr().err
    assert "no device offers algo_type 'zlib'" in err and "wd_dummy.0" in err


def test_run_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "sha256",
                     str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "wrapdrive", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "list" in out and "run" in out and "bench" in out


def test_bare_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "usage: wrapdrive" in out and "list" in out and "setup" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from wrapdrive import __version__
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0
    assert capsys.readouterr().out.strip() == f"wrapdrive {__version__}"


def test_bench_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 5)" in out and "(default: 0.25)" in out


def test_ctrl_c_exits_130_without_traceback(tmp_path: Path) -> None:
    # a real SIGINT to a real process, while the command runs
    code = ("import signal, os, wrapdrive.cli as c\n"
            "def slow(args):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    return 0\n"
            "c.cmd_gc = slow\n"
            "raise SystemExit(c.main(['gc']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r
    assert "Traceback" not in r.stderr


OURS_DEAD = "57447276-0001-4000-8000-00000000fffe"
PROVISIONED = "11111111-2222-4333-8444-555555555555"


def queues_tree(tmp_path: Path) -> Path:
    alive = f"57447276-0003-4000-8000-{os.getpid():012x}"
    t = FakeType("sha256", "sha256", 0, 7,
                 devices=[(OURS_DEAD, 1), (alive, 2), (PROVISIONED, 3)])
    return build(tmp_path, [FakeDevice("wd_dummy.0", 0, 10, types=[t])])


def test_list_says_which_queues_are_stale(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = queues_tree(tmp_path)
    assert cli.main(["--sysfs", str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert f"{OURS_DEAD}  stale: creator pid 65534 is gone" in out
    assert f"in use by pid {os.getpid()}" in out
    assert f"{PROVISIONED}  provisioned" in out
    assert cli.main(["--sysfs", str(root), "list", "--json"]) == 0
    states = json.loads(capsys.readouterr().out)[0]["types"][0]["queue_states"]
    assert states[OURS_DEAD].startswith("stale") and states[PROVISIONED] == "provisioned"


def test_gc_removes_stale_queues_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = queues_tree(tmp_path)
    # the fake tree's remove files do not make the mdev vanish: gc reports it left
    assert cli.main(["--sysfs", str(root), "gc"]) == 1
    captured = capsys.readouterr()
    assert f"removed {OURS_DEAD}" in captured.out
    assert (root / "bus/mdev/devices" / OURS_DEAD / "remove").read_text() == "1"
    assert (root / "bus/mdev/devices" / PROVISIONED / "remove").read_text() == ""


# -- run zlib never overwrites FILE.z without -f ------------------------------------------
# The fake tree offers no zlib queue: a run that gets past the refusal ends at
# "no device offers algo_type 'zlib'", which is how these tests tell the two apart.

def test_run_zlib_refuses_an_existing_output(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"x")
    z = tmp_path / "data.z"
    z.write_bytes(b"old")
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "zlib", str(f)]) == 1
    err = capsys.readouterr().err
    assert err == f"wrapdrive: {z} already exists; use -f to overwrite\n"
    assert z.read_bytes() == b"old"


def test_run_zlib_refuses_a_dangling_symlink_as_output(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"x")
    (tmp_path / "data.z").symlink_to(tmp_path / "elsewhere")
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "zlib", str(f)]) == 1
    assert "already exists; use -f to overwrite" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_run_zlib_force_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "data"
    f.write_bytes(b"x")
    z = tmp_path / "data.z"
    z.write_bytes(b"old")
    for force in ("-f", "--force"):
        assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "zlib", force, str(f)]) == 1
        err = capsys.readouterr().err
        assert "already exists" not in err and "no device offers algo_type 'zlib'" in err
        assert z.read_bytes() == b"old"  # the queue comes first: nothing was touched


def test_run_zlib_of_standard_input_has_no_output_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "-.z").write_bytes(b"old")  # "-" is standard input, never a file named "-"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", "zlib", "-"]) == 1
    err = capsys.readouterr().err
    assert "already exists" not in err and "no device offers algo_type 'zlib'" in err


def test_create_is_exclusive_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "f.z"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        cli._create(str(out), force=False)
    with cli._create(str(out), force=True) as dst:
        dst.write(b"new")
    assert out.read_bytes() == b"new"


def test_create_forced_replaces_a_symlink_without_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    out = tmp_path / "f.z"
    out.symlink_to(target)
    with cli._create(str(out), force=True) as dst:
        dst.write(b"new")
    assert not out.is_symlink() and out.read_bytes() == b"new"
    assert target.read_bytes() == b"keep"


def test_create_forced_over_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "f.z").mkdir()
    with pytest.raises(IsADirectoryError):
        cli._create(str(tmp_path / "f.z"), force=True)
    assert (tmp_path / "f.z").is_dir()


def test_output_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    out = tmp_path / "f.z"
    with pytest.raises(KeyboardInterrupt), cli._output(str(out), force=False) as dst:
        dst.write(b"half")
        raise KeyboardInterrupt
    assert not out.exists()
    with cli._output(str(out), force=False) as dst:
        dst.write(b"whole")
    assert out.read_bytes() == b"whole"


# -- directories and standard input ------------------------------------------------------

@pytest.mark.parametrize("algo", ["sha256", "crc32c", "zlib"])
def test_run_a_directory_is_an_error(algo: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    assert cli.main(["--sysfs", str(tree(tmp_path)), "run", algo, str(d)]) == 1
    assert capsys.readouterr().err == f"wrapdrive: {d}: Is a directory\n"
    assert not (tmp_path / "dir.z").exists()


def test_run_a_directory_as_a_process_sees_it(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "wrapdrive", "--sysfs", str(tree(tmp_path)),
                        "run", "sha256", str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert r.stderr == f"wrapdrive: {tmp_path}: Is a directory\n"


def test_dash_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"from a pipe")))
    monkeypatch.setattr(sys, "stdin", stdin)
    f = cli._open_input("-")
    assert f is stdin.buffer and f.read() == b"from a pipe"


def test_bench_output_directory_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # bench.run would take seconds and need AF_ALG: refused before it
    assert cli.main(["bench", "--json", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"wrapdrive bench: {tmp_path}: Is a directory\n"
    assert cli.main(["bench", "--json", str(tmp_path / "r.json"),
                     "--plot", str(tmp_path)]) == 1
    assert cli.main(["bench", "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs --json" in capsys.readouterr().err


def test_a_file_error_in_any_command_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: object) -> int:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/some/dir")

    monkeypatch.setattr(cli, "cmd_gc", fails)
    assert cli.main(["gc"]) == 1
    assert capsys.readouterr().err == "wrapdrive: /some/dir: Is a directory\n"
