"""tools/debugkernel.py without building a kernel: the fragment and its check on a small fake
Kconfig tree (kconfiglib), the cache key, the cache layout and its reuse, the command lines,
the step runner's errors, and the boot verdict on recorded guest output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(TOOLS))

import build  # noqa: E402
import debugkernel as dk  # noqa: E402
import kconfig_check as kc  # noqa: E402

# --------------------------------------------------------------------------- fragment


def test_fragment_parses_set_unset_and_strings() -> None:
    frag = dk.parse_fragment(
        "# a comment\n\nCONFIG_KASAN=y\n# CONFIG_KVM is not set\nCONFIG_LOCALVERSION=\"-x\"\nCONFIG_N=16000\n"
    )
    assert frag == {"KASAN": "y", "KVM": "n", "LOCALVERSION": "-x", "N": "16000"}


BAD_FRAGMENTS = ["KASAN=y\n", "CONFIG_KASAN\n", "CONFIG_A=y\nCONFIG_A=n\n", "CONFIG_A=y\n# CONFIG_A is not set\n"]


@pytest.mark.parametrize("text", BAD_FRAGMENTS)
def test_fragment_rejects_what_it_cannot_check(text: str) -> None:
    with pytest.raises(dk.DebugKernelError, match="fragment line"):
        dk.parse_fragment(text)


def test_repository_fragment_asks_for_every_checker_of_issue_11() -> None:
    frag = dk.parse_fragment(dk.FRAGMENT.read_text())
    wanted_y = (
        "KASAN KASAN_GENERIC KASAN_VMALLOC PROVE_LOCKING DEBUG_ATOMIC_SLEEP DEBUG_KMEMLEAK UBSAN DEBUG_LIST "
        "DEBUG_OBJECTS DEBUG_KOBJECT_RELEASE DMA_API_DEBUG DEBUG_VM FAULT_INJECTION FAILSLAB FAIL_PAGE_ALLOC "
        "FAULT_INJECTION_DEBUG_FS FAIL_FUNCTION FUNCTION_ERROR_INJECTION PCI PCI_MSI IOMMU_SUPPORT INTEL_IOMMU "
        "DEBUG_INFO_NONE"
    ).split()
    assert {s: frag.get(s) for s in wanted_y} == dict.fromkeys(wanted_y, "y")
    assert frag["KVM"] == "n"
    assert frag.get("DEBUG_KMEMLEAK_DEFAULT_OFF", "n") == "n"


# A fake kernel: WrapDrive's needs (ZLIB_DEFLATE without a prompt, as in Linux) and a few
# debug symbols with the dependency shapes of the real ones.
KCONFIG = """
mainmenu "fake"

config MODULES
	bool "modules"
	modules

config DEBUG_FS
	bool "debugfs"

config MMU_NOTIFIER
	bool

config INTEL_IOMMU_SVM
	bool "intel iommu svm"
	select MMU_NOTIFIER

config VFIO
	tristate "vfio"
	depends on MODULES

config VFIO_IOMMU_TYPE1
	tristate "type1"
	depends on VFIO

config VFIO_MDEV
	tristate "mdev"
	depends on VFIO

config CRYPTO
	bool "crypto"

config CRYPTO_SHA256
	tristate "sha256"
	depends on CRYPTO

config CRYPTO_CRC32C
	tristate "crc32c"
	depends on CRYPTO

config CRYPTO_USER_API_HASH
	tristate "af_alg hash"
	depends on CRYPTO

config CRYPTO_DEFLATE
	tristate "deflate"
	depends on CRYPTO
	select ZLIB_DEFLATE
	select ZLIB_INFLATE

config ZLIB_DEFLATE
	tristate

config ZLIB_INFLATE
	tristate

config VIRTIO
	tristate "virtio"

config VIRTIO_PCI
	tristate "virtio pci"
	depends on VIRTIO

config VIRTIO_CONSOLE
	tristate "virtio console"
	depends on VIRTIO

config NET_9P
	tristate "9p"

config NET_9P_VIRTIO
	tristate "9p virtio"
	depends on NET_9P && VIRTIO

config 9P_FS
	tristate "9p fs"
	depends on NET_9P

config DEVTMPFS
	bool "devtmpfs"

config OVERLAY_FS
	tristate "overlay"

config TMPFS
	bool "tmpfs"

config DEBUG_KERNEL
	bool "debug kernel"

config X86_64
	def_bool y

config DEBUG_OBJECTS
	bool "debug objects"
	depends on DEBUG_KERNEL

config DEBUG_OBJECTS_TIMERS
	bool "debug timers"
	depends on DEBUG_OBJECTS

config DEBUG_KOBJECT_RELEASE
	bool "kobject release"
	depends on DEBUG_OBJECTS_TIMERS

config STACKTRACE_FILTER
	bool "only elsewhere"
	depends on DEBUG_KERNEL && !X86_64

config LOCALVERSION
	string "local version"
	default ""
"""

BASE = "CONFIG_MODULES=y\nCONFIG_VIRTIO=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\n"


def fake_tree(tmp_path: Path, dotconfig: str = BASE) -> Path:
    (tmp_path / "Kconfig").write_text(KCONFIG)
    (tmp_path / "Makefile").write_text("# fake\n")
    (tmp_path / ".config").write_text(dotconfig)
    return tmp_path


def test_configure_applies_the_fragment_and_wrapdrives_needs(tmp_path: Path) -> None:
    t = fake_tree(tmp_path)
    frag = {"DEBUG_KERNEL": "y", "DEBUG_OBJECTS": "y", "DEBUG_OBJECTS_TIMERS": "y", "DEBUG_KOBJECT_RELEASE": "y",
            "LOCALVERSION": "-wd-debug"}  # fmt: skip
    assert dk.configure(t, frag) == []
    assert dk.config_problems(t, frag) == []
    text = (t / ".config").read_text()
    assert "CONFIG_DEBUG_KOBJECT_RELEASE=y" in text and 'CONFIG_LOCALVERSION="-wd-debug"' in text
    # ZLIB_DEFLATE has no prompt: it came through CRYPTO_DEFLATE, which selects it
    assert "CONFIG_ZLIB_DEFLATE=y" in text and "CONFIG_CRYPTO_DEFLATE=y" in text


def test_a_symbol_lost_to_its_dependencies_is_named_with_them(tmp_path: Path) -> None:
    t = fake_tree(tmp_path)
    # the fragment forgets DEBUG_OBJECTS_TIMERS: Kconfig drops DEBUG_KOBJECT_RELEASE silently
    frag = {"DEBUG_KERNEL": "y", "DEBUG_OBJECTS": "y", "DEBUG_KOBJECT_RELEASE": "y", "STACKTRACE_FILTER": "y"}
    dk.configure(t, frag)
    problems = dk.config_problems(t, frag)
    assert len(problems) == 2, problems
    assert problems[0].startswith("CONFIG_DEBUG_KOBJECT_RELEASE: wanted 'y', got 'n'")
    assert "depends on DEBUG_OBJECTS_TIMERS" in problems[0] and "DEBUG_OBJECTS_TIMERS=n" in problems[0]
    assert problems[1].startswith("CONFIG_STACKTRACE_FILTER: wanted 'y', got 'n'") and "X86_64=y" in problems[1]


def test_absent_symbols_and_unmet_needs_are_problems(tmp_path: Path) -> None:
    t = fake_tree(tmp_path)
    problems = dk.config_problems(t, {"NO_SUCH_THING": "n", "TMPFS": "y"})
    assert problems[0] == "CONFIG_NO_SUCH_THING: wanted 'n', got '<absent>' (no such symbol in this kernel's Kconfig)"
    assert "CONFIG_VFIO: required by WrapDrive, not set" in problems
    assert "CONFIG_ZLIB_DEFLATE: required by WrapDrive, not set" in problems


def test_unset_and_string_values_are_compared_as_written(tmp_path: Path) -> None:
    t = fake_tree(tmp_path, BASE + 'CONFIG_DEBUG_KERNEL=y\nCONFIG_LOCALVERSION="-other"\n')
    kconf = kc.load(t / "Kconfig", t / ".config")
    lost = dk.lost_symbols(kconf, {"DEBUG_KERNEL": "n", "LOCALVERSION": "-wd-debug", "TMPFS": "y", "VFIO": "n"})
    got = [(x.name, x.wanted, x.got) for x in lost]
    assert got == [("DEBUG_KERNEL", "n", "y"), ("LOCALVERSION", "-wd-debug", "-other")]


# --------------------------------------------------------------------------- cache key

KEY_INPUTS = {"source_digest": "ab" * 32, "patches": "0001-x.patch\0diff\0", "fragment": "CONFIG_KASAN=y\n",
              "requirements": "reqs", "recipe": 1, "compiler": "gcc 12.2.0", "virtme": "1.42"}  # fmt: skip


def test_cache_key_is_stable_and_hex() -> None:
    k = dk.cache_key(**KEY_INPUTS)  # type: ignore[arg-type]
    assert k == dk.cache_key(**KEY_INPUTS)  # type: ignore[arg-type]
    assert len(k) == 64 and int(k, 16) >= 0


@pytest.mark.parametrize("field", sorted(KEY_INPUTS))
def test_every_input_changes_the_key(field: str) -> None:
    changed = dict(KEY_INPUTS)
    changed[field] = 2 if field == "recipe" else str(changed[field]) + "x"
    assert dk.cache_key(**changed) != dk.cache_key(**KEY_INPUTS)  # type: ignore[arg-type]


def test_key_fields_do_not_run_into_each_other() -> None:
    a = dict(KEY_INPUTS, fragment="A", requirements="B")
    b = dict(KEY_INPUTS, fragment="A\0requirements ", requirements="B")
    assert dk.cache_key(**a) != dk.cache_key(**b)  # type: ignore[arg-type]


def test_patches_are_applied_in_name_order_and_keyed_by_content(tmp_path: Path) -> None:
    src = dk.Source("6.1", tmp_path / "l.tar.xz", "linux-source-6.1")
    (tmp_path / "6.1").mkdir()
    for name in ("0002-b.patch", "0001-a.patch", "README"):
        (tmp_path / "6.1" / name).write_text(name)
    got = dk.patches_of(src, tmp_path)
    assert [p.name for p in got] == ["0001-a.patch", "0002-b.patch"]
    before = dk.patches_text(got)
    (tmp_path / "6.1" / "0002-b.patch").write_text("changed")
    assert dk.patches_text(got) != before
    assert dk.patch_cmd(got[0]) == ["git", "apply", "-p1", "--whitespace=nowarn", str(got[0])]


def test_carried_patches_apply_to_their_source(tmp_path: Path) -> None:
    """Every carried patch applies to the tarball it is for (the files it touches only)."""
    for src in dk.SOURCES.values():
        patches = dk.patches_of(src)
        if not patches:
            continue
        if not src.tarball.is_file():
            pytest.skip(f"{src.tarball} not installed")
        for patch in patches:
            lines = patch.read_text().splitlines()
            files = [line[6:].split("\t")[0].strip() for line in lines if line.startswith("+++ b/")]
            members = [f"linux-source-{src.name}/{f}" for f in files]
            subprocess.run(["tar", "-xJf", str(src.tarball), "-C", str(tmp_path), "--strip-components=1", *members],
                           check=True, timeout=600)  # fmt: skip
            subprocess.run(dk.patch_cmd(patch), cwd=tmp_path, check=True, timeout=60)


def test_requirements_text_names_every_requirement() -> None:
    text = dk.requirements_text()
    for req in kc.REQUIREMENTS:
        assert req.alternatives[0][0] in text
    assert "ZLIB_DEFLATE through CRYPTO_DEFLATE" in text


def test_missing_tarball_names_the_package(tmp_path: Path) -> None:
    src = dk.Source("6.1", tmp_path / "linux-source-6.1.tar.xz", "linux-source-6.1")
    with pytest.raises(dk.DebugKernelError, match="apt-get install linux-source-6.1"):
        dk.key_for(src)


# --------------------------------------------------------------------------- specs, layout, reuse


def test_specs() -> None:
    assert dk.is_spec("debug") and dk.is_spec("debug-6.1") and dk.is_spec("debug-6.12")
    assert not dk.is_spec("6.1") and not dk.is_spec("debug-5.10") and not dk.is_spec("debugx")
    assert dk.source_of("debug").name == "6.1" and dk.source_of("debug-6.12").name == "6.12"
    with pytest.raises(dk.DebugKernelError):
        dk.source_of("6.1")


def finished_layout(root: Path, release: str = "6.1.192-wd-debug") -> Path:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"kernel")
    (root / "lib" / "modules" / release).mkdir(parents=True)
    (root / "lib" / "modules" / release / "modules.dep").write_text("")
    (root / "build").mkdir()
    (root / "build" / "Module.symvers").write_text("")
    (root / "manifest.json").write_text(json.dumps({"release": release}))
    return root


def test_only_a_complete_layout_with_its_manifest_is_finished(tmp_path: Path) -> None:
    root = finished_layout(tmp_path / "k")
    assert dk.is_finished(root)
    (root / "manifest.json").unlink()  # written last: an interrupted build has none
    assert not dk.is_finished(root)
    root = finished_layout(tmp_path / "k2")
    (root / "build" / "Module.symvers").unlink()
    assert not dk.is_finished(root)
    assert not dk.is_finished(tmp_path / "absent")


def test_ensure_reuses_a_finished_kernel_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "c0ffee" * 10 + "abcd"
    monkeypatch.setattr(dk, "key_for", lambda source: key)
    monkeypatch.setattr(dk, "build_kernel", lambda *a, **k: pytest.fail("built instead of reusing"))
    root = finished_layout(tmp_path / dk.folder_name("6.1", key))
    # a half-built tree of the same kernel is never taken for it
    finished_layout(tmp_path / f".tmp-{dk.folder_name('6.1', key)}-pid1")
    got = dk.ensure("debug", cache=tmp_path, log=lambda m: None)
    assert got.root == root and got.image == root / "boot" / "vmlinuz-6.1.192-wd-debug"
    assert got.kdir == root / "build" and got.name == f"debug-6.1-{key[:16]}"


def test_build_target_for_the_debug_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "1234" * 16
    monkeypatch.setattr(dk, "key_for", lambda source: key)
    monkeypatch.setattr(dk, "CACHE_ROOT", tmp_path)
    with pytest.raises(build.kernels.SetupError, match="kernels --debug"):
        build.resolve_target("debug", prepare=False)
    root = finished_layout(tmp_path / dk.folder_name("6.1", key))
    t = build.resolve_target("debug", prepare=False)
    assert (t.name, t.kdir) == (f"debug-6.1-{key[:16]}", root / "build")
    assert t.image == root / "boot/vmlinuz-6.1.192-wd-debug"
    assert t.build_dir.name == t.name  # modules built against another debug kernel are never reused


def test_stale_temporary_folders_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".tmp-debug-6.1-x-pid999999999"
    live = tmp_path / f".tmp-debug-6.1-y-pid{os.getpid()}"
    dead.mkdir()
    live.mkdir()
    dk.remove_stale_temps(tmp_path, log=lambda m: None)
    assert not dead.exists() and live.exists()


def test_prune_keeps_what_module_builds_need(tmp_path: Path) -> None:
    files = ["kernel/fork.o", "kernel/built-in.a", "vmlinux.o", ".tmp_vmlinux.kallsyms1", "drivers/x/y.ko",
             "scripts/mod/modpost.o", "scripts/mod/modpost", "tools/objtool/objtool", "vmlinux", "Module.symvers",
             "include/linux/kernel.h", "arch/x86/Makefile", ".config", "kernel/fork.c"]  # fmt: skip
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    pruned = sorted(str(p.relative_to(tmp_path)) for p in dk.prune_candidates(tmp_path))
    assert pruned == [".tmp_vmlinux.kallsyms1", "drivers/x/y.ko", "kernel/built-in.a", "kernel/fork.o", "vmlinux.o"]


# --------------------------------------------------------------------------- command lines


def test_command_lines() -> None:
    t, d = Path("/c/t"), Path("/c/tmp")
    assert dk.unpack_cmd(Path("/usr/src/l.tar.xz"), t) == ["tar", "-xJf", "/usr/src/l.tar.xz", "-C", "/c/t",
                                                            "--strip-components=1"]  # fmt: skip
    assert dk.configkernel_cmd("vck", Path("/r/tools/debug.config")) == [
        "vck", "--defconfig", "--custom", "/r/tools/debug.config"]  # fmt: skip
    assert dk.build_cmd(t, 2) == ["make", "-C", "/c/t", "-j2", "bzImage", "modules"]
    assert dk.install_cmd(t, d, 2) == ["make", "-C", "/c/t", "-j2", "INSTALL_MOD_PATH=/c/tmp", "modules_install"]
    assert dk.make_cmd(t, "olddefconfig") == ["make", "-C", "/c/t", "-j1", "olddefconfig"]


def test_build_py_kernels_accepts_debug() -> None:
    args = build.parser().parse_args(["kernels", "--debug"])
    assert args.debug == "6.1"
    assert build.parser().parse_args(["kernels", "--debug", "6.12"]).debug == "6.12"
    assert build.parser().parse_args(["kernels"]).debug is None


# --------------------------------------------------------------------------- running steps


def test_run_step_logs_and_times(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    took = dk.run_step("hello", ["sh", "-c", "echo out; echo err >&2"], logfile=log, timeout=30)
    text = log.read_text()
    assert took >= 0 and "===== hello: sh -c" in text and "out\nerr\n" in text


def test_run_step_failure_names_step_log_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    with pytest.raises(dk.DebugKernelError) as e:
        dk.run_step("make", ["sh", "-c", "echo 'error: no rule'; exit 3"], logfile=log, timeout=30)
    msg = str(e.value)
    assert msg.startswith("make failed (exit 3)") and str(log) in msg and "error: no rule" in msg


def test_run_step_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    pidfile = tmp_path / "child"
    with pytest.raises(dk.DebugKernelError, match=r"no result after 1s, killed"):
        dk.run_step("slow", ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], logfile=log, timeout=1)
    assert not running(int(pidfile.read_text())), "the step's child outlived the timeout"


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan killed with its group waits for init to reap it)."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def test_run_step_missing_program(tmp_path: Path) -> None:
    with pytest.raises(dk.DebugKernelError, match="cannot run /no/such/prog"):
        dk.run_step("x", ["/no/such/prog"], logfile=tmp_path / "l", timeout=5)


# --------------------------------------------------------------------------- boot verdicts


def test_boot_check_command_prints_lockdep_state_and_log() -> None:
    cmd = dk.boot_check_command()
    assert cmd[:2] == ["sh", "-c"] and "/proc/lockdep_stats" in cmd[2] and "dmesg" in cmd[2]


def test_boot_check_log_lines_survive_the_relay(tmp_path: Path) -> None:
    """build.py run relays only lines that do not look like kernel log lines, so the check
    prefixes the log (before, it judged 3 lines of a 500-line log and called it clean)."""
    import vm

    fake_dmesg = tmp_path / "dmesg"
    fake_dmesg.write_text("#!/bin/sh\nprintf '[    0.000000] Linux version 6.1\\n[    1.5] WARNING: x\\n'\n")
    fake_dmesg.chmod(0o755)
    cat = tmp_path / "cat"
    cat.write_text("#!/bin/sh\necho ' debug_locks: 1'\n")
    cat.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    out = subprocess.run(dk.boot_check_command(), capture_output=True, text=True, env=env, check=True).stdout
    relayed = "\n".join(ln for ln in out.splitlines() if not vm.is_kernel_line(ln))
    v = dk.judge_boot(relayed)
    assert v.saw_banner and v.dmesg_lines == 2 and v.debug_locks == 1
    assert v.reports == ["[    1.5] WARNING: x"] and not v.clean


def test_a_boot_check_that_did_not_see_the_log_is_not_clean() -> None:
    out = f"{dk.BOOT_MARK}-LOCKDEP\n debug_locks: 1\n{dk.BOOT_MARK}-DMESG\nsome line\n{dk.BOOT_MARK}-END\n"
    v = dk.judge_boot(out)
    assert v.debug_locks == 1 and not v.reports and not v.saw_banner and not v.clean


def test_judge_clean_boot_recorded() -> None:
    """`tools/debugkernel.py boots` on the debug kernel as built: a whole virtme-ng boot."""
    v = dk.judge_boot((DATA / "debug-boot-clean.txt").read_text())
    assert v.clean and v.debug_locks == 1 and v.reports == []
    assert v.uptime_at_script is not None and v.dmesg_lines > 100


def test_early_kasan_report_recorded() -> None:
    """The serial console of a TCG boot (-cpu max) of the debug kernel built with X86_5LEVEL=y:
    the false wild-memory-access of tools/debug.config, and lockdep switching itself off."""
    lines = (DATA / "debug-early-kasan-console.txt").read_text().splitlines()
    reports = dk.find_reports(lines)
    assert any("BUG: KASAN: wild-memory-access in do_raw_spin_lock" in r for r in reports)
    assert any("Disabling lock debugging due to kernel taint" in r for r in reports)
    out = f"{dk.BOOT_MARK}-LOCKDEP\n debug_locks:     0\n{dk.BOOT_MARK}-DMESG\n" + "\n".join(lines)
    v = dk.judge_boot(out)
    assert not v.clean and v.debug_locks == 0 and v.reports == reports


def test_judge_boot_does_not_take_the_rcu_banner_for_a_report() -> None:
    out = (
        f"{dk.BOOT_MARK}-LOCKDEP\n debug_locks:                             1\n{dk.BOOT_MARK}-DMESG\n"
        "[    0.000000] Linux version 6.1.192-wd-debug\n"
        "[    0.000000] rcu: RCU lockdep checking is enabled.\n"
        "[    0.100000] Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar\n"
        f"{dk.BOOT_MARK}-END\n"
    )
    v = dk.judge_boot(out)
    assert v.clean, v.reports


def test_judge_boot_without_lockdep_stats_is_not_clean() -> None:
    v = dk.judge_boot(f"{dk.BOOT_MARK}-LOCKDEP\ncat: /proc/lockdep_stats: No such file\n{dk.BOOT_MARK}-DMESG\n")
    assert v.debug_locks is None and not v.clean
