"""Host tests of tools/build.py and its helpers: command lines, package resolution, the
headers fix, the KVM probe fallback, the guest script, splat detection.  Nothing here
builds, downloads or boots."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import build  # noqa: E402
import kernels  # noqa: E402
import vm  # noqa: E402

# --------------------------------------------------------------------------- make / lint command lines


def test_make_modules_cmd_w1_and_out_of_tree(tmp_path: Path) -> None:
    cmd = build.make_modules_cmd(Path("/k"), tmp_path / "b", jobs=3)
    assert cmd == ["make", "-C", "/k", f"M={tmp_path / 'b'}", "-j3", "W=1", "modules"]


def test_make_modules_cmd_sparse_and_no_btf() -> None:
    cmd = build.make_modules_cmd(Path("/k"), Path("/m"), sparse=2, btf=False)
    assert "C=2" in cmd and "CONFIG_DEBUG_INFO_BTF_MODULES=" in cmd
    assert cmd[-1] == "modules"


def test_checkpatch_cmd_is_strict_and_treeless() -> None:
    cmd = build.checkpatch_cmd(Path("/c/checkpatch.pl"), [Path("a.c"), Path("b.h")])
    assert cmd[:2] == ["perl", "/c/checkpatch.pl"]
    assert "--strict" in cmd and "--no-tree" in cmd
    assert "--ignore=CAMELCASE" in cmd
    assert cmd[-3:] == ["-f", "a.c", "b.h"]


def test_checkpatch_uapi_headers_may_not_use_bit() -> None:
    root = Path("/r/kernel")
    files = [root / "a.c", root / "uapi" / "wrapdrive.h", root / "include" / "wrapdrive.h"]
    rest, uapi = build.checkpatch_cmds(Path("/c/checkpatch.pl"), files, root)
    assert rest[-2:] == [str(root / "a.c"), str(root / "include" / "wrapdrive.h")]
    assert "--ignore=CAMELCASE" in rest
    assert uapi[-1] == str(root / "uapi" / "wrapdrive.h")
    assert "--ignore=CAMELCASE,BIT_MACRO" in uapi


def test_checkpatch_extract_takes_the_three_files() -> None:
    cmd = build.checkpatch_extract_cmd(Path("/usr/src/linux-source-6.1.tar.xz"), Path("/d"))
    assert cmd[:4] == ["tar", "-xJf", "/usr/src/linux-source-6.1.tar.xz", "-C"]
    names = [Path(c).name for c in cmd[-3:]]
    assert names == ["checkpatch.pl", "spelling.txt", "const_structs.checkpatch"]


def test_compiler_warnings() -> None:
    out = "  CC [M]  x.o\nx.c:3:1: warning: no previous prototype\nx.c:9: error: nope\nfine\n"
    assert build.compiler_warnings(out) == ["x.c:3:1: warning: no previous prototype", "x.c:9: error: nope"]


def test_sync_tree_mirrors_sources_not_products(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "include").mkdir(parents=True)
    (src / "a.c").write_text("int a;\n")
    (src / "include" / "h.h").write_text("#define X 1\n")
    (src / "stale.o").write_text("product in the source tree\n")
    changed = build.sync_tree(src, dst)
    assert sorted(changed) == ["a.c", "include/h.h"]
    assert not (dst / "stale.o").exists()
    # products in the build folder survive; a source removed from src goes
    (dst / "a.o").write_text("obj")
    (dst / "old.c").write_text("gone from src")
    assert build.sync_tree(src, dst) == ["-old.c"]
    assert (dst / "a.o").exists() and not (dst / "old.c").exists()
    # unchanged: nothing copied (make stays incremental)
    assert build.sync_tree(src, dst) == []


def test_source_tree_target_names_are_stable_and_distinct(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "linux", tmp_path / "y" / "linux"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    assert build.source_tree_name(a) == build.source_tree_name(a)
    assert build.source_tree_name(a) != build.source_tree_name(b)
    assert build.source_tree_name(a).startswith("src-linux-")


def test_resolve_target_rejects_non_tree(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="kernel source tree"):
        build.resolve_target(str(tmp_path))


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, str(TOOLS / "build.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for sub in ("deps", "kernels", "config", "build", "lint", "run"):
        assert sub in out


def test_run_parses_command_after_dashes() -> None:
    args = build.parser().parse_args(["run", "--kernel", "6.12", "--tcg", "--", "wrapdrive", "list"])
    assert args.kernel == "6.12" and args.kvm is False
    assert args.command == ["--", "wrapdrive", "list"]


# --------------------------------------------------------------------------- apt sources and packages

DEBIAN_SOURCES = """\
Types: deb
# a comment
URIs: http://archive.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_backports_stanza_copies_the_bookworm_archive() -> None:
    st = kernels.backports_stanza(DEBIAN_SOURCES)
    assert st is not None
    assert "URIs: http://archive.invalid/debian\n" in st
    assert "Suites: bookworm-backports\n" in st
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in st


def test_backports_stanza_none_without_bookworm() -> None:
    assert kernels.backports_stanza("Types: deb\nURIs: x\nSuites: trixie\n") is None


def test_has_suite_deb822_and_one_line() -> None:
    assert not kernels.has_suite([DEBIAN_SOURCES], "bookworm-backports")
    assert kernels.has_suite(
        [DEBIAN_SOURCES, "deb http://a.invalid/debian bookworm-backports main\n"], "bookworm-backports"
    )
    assert kernels.has_suite(["Types: deb\nURIs: u\nSuites: bookworm-backports\n"], "bookworm-backports")


APT_DEPENDS_META = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
APT_DEPENDS_HEADERS = """linux-headers-6.12.117+deb12-amd64
  Depends: linux-base
  Depends: linux-headers-6.12.117+deb12-common
 |Depends: linux-image-6.12.117+deb12-amd64
  Depends: linux-image-6.12.117+deb12-amd64-unsigned
  Depends: linux-kbuild-6.12.117+deb12
  Depends: gcc-12
"""


def test_apt_depends_and_header_support() -> None:
    names = kernels.apt_depends(APT_DEPENDS_HEADERS)
    assert names[0] == "linux-base" and "gcc-12" in names
    assert kernels.header_support_packages(names) == [
        "linux-headers-6.12.117+deb12-common",
        "linux-kbuild-6.12.117+deb12",
    ]


def test_newest_612_image_compares_numerically() -> None:
    names = [
        "linux-image-6.12.95+deb12-amd64-unsigned",
        "linux-image-6.12.117+deb12-amd64-unsigned",
        "linux-image-6.12.115+deb12-amd64-unsigned",
        "linux-image-6.12.200+deb12-rt-amd64-unsigned",  # other flavours ignored
        "linux-image-6.12.300+deb12-amd64-dbg",
    ]
    assert kernels.newest_612_image(names) == "linux-image-6.12.117+deb12-amd64-unsigned"
    assert kernels.newest_612_image([]) is None


def test_release_of() -> None:
    assert kernels.release_of("linux-image-6.1.0-56-amd64") == "6.1.0-56-amd64"
    assert kernels.release_of("linux-image-6.12.117+deb12-amd64-unsigned") == "6.12.117+deb12-amd64"


def fake_apt(answers: dict[tuple[str, ...], str]) -> kernels.Runner:
    def run(cmd: Sequence[str]) -> str:
        return answers[tuple(cmd)]

    return run


def test_resolve_kernel_61_from_the_metapackage() -> None:
    runner = fake_apt(
        {
            ("apt-cache", "depends", "linux-image-amd64"): APT_DEPENDS_META,
            ("apt-cache", "depends", "linux-headers-6.1.0-56-amd64"): (
                "linux-headers-6.1.0-56-amd64\n  Depends: linux-headers-6.1.0-56-common\n"
                "  Depends: linux-kbuild-6.1\n  Depends: linux-compiler-gcc-12-x86\n"
            ),
        }
    )
    pk = kernels.resolve_kernel("6.1", runner)
    assert pk.release == "6.1.0-56-amd64"
    assert pk.packages == (
        "linux-image-6.1.0-56-amd64",
        "linux-headers-6.1.0-56-amd64",
        "linux-headers-6.1.0-56-common",
        "linux-kbuild-6.1",
    )


def test_resolve_kernel_612_newest() -> None:
    runner = fake_apt(
        {
            ("apt-cache", "pkgnames", "linux-image-6.12."): "linux-image-6.12.95+deb12-amd64-unsigned\n"
            "linux-image-6.12.117+deb12-amd64-unsigned\nlinux-image-6.12.117+deb12-amd64\n",
            ("apt-cache", "depends", "linux-headers-6.12.117+deb12-amd64"): APT_DEPENDS_HEADERS,
        }
    )
    pk = kernels.resolve_kernel("6.12", runner)
    assert pk.packages == (
        "linux-image-6.12.117+deb12-amd64-unsigned",
        "linux-headers-6.12.117+deb12-amd64",
        "linux-headers-6.12.117+deb12-common",
        "linux-kbuild-6.12.117+deb12",
    )


def test_resolve_kernel_612_missing_says_what_to_run() -> None:
    runner = fake_apt({("apt-cache", "pkgnames", "linux-image-6.12."): ""})
    with pytest.raises(kernels.SetupError, match="tools/build.py deps"):
        kernels.resolve_kernel("6.12", runner)


def test_missing_packages_uses_dpkg_status() -> None:
    def runner(cmd: Sequence[str]) -> str:
        assert cmd[0] == "dpkg-query"
        return "sparse installed\nqemu-system-x86 not-installed\n"

    assert kernels.missing_packages(["sparse", "qemu-system-x86", "cpio"], runner) == ["qemu-system-x86", "cpio"]


# --------------------------------------------------------------------------- unpacked kernel layout


def fake_kernel(root: Path, release: str = "6.1.0-56-amd64") -> None:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ")
    (root / "lib/modules" / release).mkdir(parents=True)
    kdir = root / "usr/src" / f"linux-headers-{release}"
    kdir.mkdir(parents=True)
    (kdir / ".config").write_text("CONFIG_VFIO=m\n")
    common = release.replace("-amd64", "-common")
    (kdir / "Makefile").write_text(f"include /usr/src/linux-headers-{common}/Makefile\n# more\n")


def test_fixed_makefile_points_into_the_cache(tmp_path: Path) -> None:
    text = "include /usr/src/linux-headers-6.1.0-56-common/Makefile\nX := 1\n"
    assert kernels.fixed_makefile(text, tmp_path) == (
        f"include {tmp_path}/usr/src/linux-headers-6.1.0-56-common/Makefile\nX := 1\n"
    )
    # idempotent, and re-pointed when the cache moved
    once = kernels.fixed_makefile(text, tmp_path / "a")
    assert kernels.fixed_makefile(once, tmp_path / "a") == once
    assert str(tmp_path / "b") in kernels.fixed_makefile(once, tmp_path / "b")


def test_prepare_kernel_reuses_a_complete_tree(tmp_path: Path) -> None:
    fake_kernel(tmp_path / "6.1")

    def no_apt(cmd: Sequence[str]) -> str:
        raise AssertionError(f"nothing should be fetched: {cmd}")

    k = kernels.prepare_kernel("6.1", cache=tmp_path, runner=no_apt, log=lambda m: None, shared=None)
    assert k.release == "6.1.0-56-amd64"
    assert k.image == tmp_path / "6.1/boot/vmlinuz-6.1.0-56-amd64"
    assert k.kdir == tmp_path / "6.1/usr/src/linux-headers-6.1.0-56-amd64"
    first = (k.kdir / "Makefile").read_text().splitlines()[0]
    assert first == f"include {(tmp_path / '6.1').resolve()}/usr/src/linux-headers-6.1.0-56-common/Makefile"


def test_prepare_kernel_unpacks_debs_already_downloaded(tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    pkgs = ("linux-image-6.1.0-56-amd64", "linux-headers-6.1.0-56-amd64")
    for p in pkgs:
        (debs / f"{p}_6.1.192-2_amd64.deb").write_bytes(b"!<arch>")
    unpacked: list[str] = []

    def runner(cmd: Sequence[str]) -> str:
        if cmd[:2] == ["apt-cache", "depends"] and cmd[2] == "linux-image-amd64":
            return APT_DEPENDS_META
        if cmd[:2] == ["apt-cache", "depends"]:
            return "x\n  Depends: linux-base\n"
        if cmd[0] == "dpkg":
            unpacked.append(Path(cmd[2]).name)
            if "linux-image" in cmd[2]:  # what dpkg -x would lay out
                fake_kernel(Path(cmd[3]))
            return ""
        raise AssertionError(cmd)

    k = kernels.prepare_kernel(
        "6.1", cache=tmp_path, runner=runner, log=lambda m: None, shared=None, download=lambda c, d: 1 / 0
    )
    assert sorted(unpacked) == sorted(f"{p}_6.1.192-2_amd64.deb" for p in pkgs)
    assert kernels.is_complete(k)


def test_prepare_kernel_takes_debs_from_the_shared_cache(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb").write_bytes(b"!<arch>")
    downloads: list[list[str]] = []

    def download(cmd: list[str], cwd: Path) -> None:
        downloads.append(cmd)
        for p in cmd[2:]:
            (cwd / f"{p}_6.1.192-2_amd64.deb").write_bytes(b"!<arch>")

    def runner(cmd: Sequence[str]) -> str:
        if cmd[:3] == ["apt-cache", "depends", "linux-image-amd64"]:
            return APT_DEPENDS_META
        if cmd[:2] == ["apt-cache", "depends"]:
            return "x\n  Depends: linux-base\n"
        if cmd[0] == "dpkg":
            if "linux-image" in cmd[2]:
                fake_kernel(Path(cmd[3]))
            return ""
        raise AssertionError(cmd)

    cache = tmp_path / "cache"
    kernels.prepare_kernel("6.1", cache=cache, runner=runner, log=lambda m: None, shared=shared, download=download)
    assert (cache / "debs" / "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb").exists()
    # only what the shared cache lacked was downloaded, and it is kept there for next time
    assert downloads == [["apt-get", "download", "linux-headers-6.1.0-56-amd64"]]
    assert (shared / "linux-headers-6.1.0-56-amd64_6.1.192-2_amd64.deb").exists()


def test_download_and_unpack_cmds(tmp_path: Path) -> None:
    assert kernels.download_cmd(["a", "b"]) == ["apt-get", "download", "a", "b"]
    assert kernels.unpack_cmd(tmp_path / "x.deb", tmp_path / "k") == [
        "dpkg",
        "-x",
        str(tmp_path / "x.deb"),
        str(tmp_path / "k"),
    ]


def test_ensure_backports_non_root_says_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "is_root", lambda: False)
    with pytest.raises(kernels.SetupError, match="sudo python3 tools/build.py deps"):
        kernels.ensure_backports({Path("/etc/apt/sources.list.d/debian.sources"): DEBIAN_SOURCES})


def test_prepare_kernel_non_root_without_apt_lists_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "is_root", lambda: False)
    runner = fake_apt({("apt-cache", "pkgnames", "linux-image-6.12."): ""})
    with pytest.raises(kernels.SetupError, match="sudo python3 tools/build.py deps"):
        kernels.prepare_kernel("6.12", cache=tmp_path, runner=runner, log=lambda m: None, shared=None)


def test_ensure_backports_noop_when_present() -> None:
    srcs = {Path("a.sources"): DEBIAN_SOURCES, Path("b.sources"): "Types: deb\nURIs: u\nSuites: bookworm-backports\n"}
    assert kernels.ensure_backports(srcs) is False


# --------------------------------------------------------------------------- VM command lines and KVM


def test_numa_args_one_cpu_per_node() -> None:
    assert vm.numa_args(2048, 2) == ["--numa", "1024M,cpus=0", "--numa", "1024M,cpus=1"]
    assert vm.numa_args(4096, 4) == ["--numa", "2048M,cpus=0-1", "--numa", "2048M,cpus=2-3"]
    assert vm.numa_args(2048, 2, nodes=1) == []
    with pytest.raises(ValueError):
        vm.numa_args(2048, 3)


def test_vng_command_tcg() -> None:
    cmd = vm.vng_command(Path("/k/vmlinuz"), exec_cmd="true", kvm=False, rwdirs=[Path("/r")], vng="vng")
    assert cmd[:3] == ["vng", "--run", "/k/vmlinuz"]
    assert "--disable-kvm" in cmd
    assert cmd[cmd.index("--cpus") + 1] == "2"
    assert cmd[cmd.index("--memory") + 1] == "2048M"
    assert cmd.count("--numa") == 2
    assert cmd[cmd.index("--rwdir") + 1] == "/r"
    assert cmd[-2:] == ["--exec", "true"]
    # one socket per NUMA node, passed in the --opt=value form (vng's argparse would take
    # a separate "-smp ..." value for its own -f option)
    assert "--qemu-opts=-smp 2,sockets=2,cores=1,threads=1" in cmd
    assert any(c.startswith("--qemu-opts=-fsdev local,id=wdcache,path=/") for c in cmd)


def test_vng_command_kvm_has_no_disable_flag() -> None:
    cmd = vm.vng_command(Path("/k"), exec_cmd="true", kvm=True, cached_root=False)
    assert "--disable-kvm" not in cmd
    assert not any("wdcache" in c for c in cmd)


def test_kvm_probe_cmd() -> None:
    cmd = vm.kvm_probe_cmd(Path("/k/vmlinuz"))
    assert cmd[0] == "qemu-system-x86_64"
    assert cmd[cmd.index("-accel") + 1] == "kvm"
    assert "-no-reboot" in cmd and "/k/vmlinuz" in cmd
    assert "panic=-1" in cmd[cmd.index("-append") + 1]


def test_probe_kvm_verdicts(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    d = str(dev)
    assert vm.probe_kvm(Path("/k"), run=lambda c, t: "Linux version 6.1\nKernel panic - not syncing: VFS", dev=d)
    assert not vm.probe_kvm(Path("/k"), run=lambda c, t: None, dev=d)  # hung: timed out
    assert not vm.probe_kvm(Path("/k"), run=lambda c, t: "qemu: KVM: entry failed, MSR 0x...", dev=d)
    assert not vm.probe_kvm(Path("/k"), run=lambda c, t: "SeaBIOS\nBooting from ROM...", dev=d)  # guest hung


def test_probe_kvm_without_device_does_not_start_qemu(tmp_path: Path) -> None:
    def never(cmd: list[str], timeout: float) -> str:
        raise AssertionError("no qemu without /dev/kvm")

    assert vm.probe_kvm(Path("/k"), run=never, dev=str(tmp_path / "absent")) is False


def test_use_kvm_falls_back_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WD_KVM", raising=False)
    calls: list[Path] = []

    def broken(image: Path) -> bool:
        calls.append(image)
        return False

    cache = tmp_path / "kvm-probe"
    assert vm.use_kvm(Path("/k"), probe=broken, cache=cache) is False
    assert vm.use_kvm(Path("/k"), probe=broken, cache=cache) is False
    assert len(calls) == 1, "the verdict is cached for this host boot"
    cache.write_text("another-boot-id kvm\n")
    assert vm.use_kvm(Path("/k"), probe=lambda i: True, cache=cache) is True


def test_use_kvm_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(image: Path) -> bool:
        raise AssertionError("forced: no probe")

    monkeypatch.setenv("WD_KVM", "0")
    assert vm.use_kvm(Path("/k"), probe=never, cache=tmp_path / "c") is False
    monkeypatch.setenv("WD_KVM", "1")
    assert vm.use_kvm(Path("/k"), probe=never, cache=tmp_path / "c") is True


def test_guest_setup_script_loads_in_order() -> None:
    s = vm.guest_setup_script(Path("/b/6.1"), "6.1", path="/v/bin:/usr/bin", cached_dirs=["/py"])
    order = [
        s.index(x)
        for x in (
            "modprobe vfio ",
            "modprobe vfio_iommu_type1",
            "modprobe mdev",
            "insmod /b/6.1/wrapdrive.ko",
            "insmod /b/6.1/wd_dummy.ko",
        )
    ]
    assert order == sorted(order)
    assert "export WD_MODULE_DIR=/b/6.1" in s and "export WD_KERNEL=6.1" in s
    assert "mount -t debugfs" in s
    assert "mount --bind /run/wdcache/py /py" in s
    # bash accepts it
    subprocess.run(["bash", "-n"], input=s, text=True, check=True)


def test_guest_setup_script_without_modules() -> None:
    s = vm.guest_setup_script(None, "6.12", path="/usr/bin", cached_dirs=[])
    assert "insmod" not in s and "WD_MODULE_DIR" not in s
    assert "modprobe mdev" in s


def test_run_script_records_status_and_dmesg(tmp_path: Path) -> None:
    s = vm.run_script("set -e\n", ["sh", "-c", "exit 7"], tmp_path)
    proc = subprocess.run(["bash", "-c", s.replace("dmesg >", "echo fake-dmesg >")], check=False)
    assert proc.returncode == 7
    assert (tmp_path / "status").read_text().strip() == "7"


def test_run_vng_times_out_and_kills_the_group() -> None:
    res = vm.run_vng(["sh", "-c", "echo started; sleep 30 & sleep 30"], timeout=1.0)
    assert res.timed_out and "started" in res.output
    assert res.elapsed < 15


def test_find_splats() -> None:
    log = [
        "[    1.0] wd_dummy wd_dummy.0: MDEV: Registered",
        "[    2.0] WARNING: CPU: 1 PID: 9 at drivers/x.c:1 f+0x1/0x2",
        "[    2.1] Call Trace:",
        "[    3.0] BUG: KASAN: use-after-free in wd_recv",
        "[    4.0] general protection fault, probably for non-canonical address",
        "[    5.0] ======================================================\n",
        "[    5.1] WARNING: possible circular locking dependency detected",
        "[    6.0] Oops: 0000 [#1] PREEMPT SMP",
        "[    7.0] ordinary line mentioning a bug fix",
    ]
    found = vm.find_splats(log)
    assert log[0] not in found and log[-1] not in found and log[5] not in found
    assert len(found) == 6
