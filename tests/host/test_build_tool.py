"""Host tests of tools/build.py and its helpers: package resolution, the deb cache and the
shared unpacked kernels, time limits, the headers fix, the KVM probe fallback, the guest
script, the environment vng runs in, a real module build from clean.  Nothing here
downloads or boots; apt, dpkg and vng are stand-ins where named."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))

import build  # noqa: E402
import kernels  # noqa: E402
import vm  # noqa: E402

# --------------------------------------------------------------------------- make / lint command lines


def test_checkpatch_uapi_headers_may_not_use_bit() -> None:
    root = Path("/r/kernel")
    files = [root / "a.c", root / "uapi" / "wrapdrive.h", root / "include" / "wrapdrive.h"]
    rest, uapi = build.checkpatch_cmds(Path("/c/checkpatch.pl"), files, root)
    assert rest[-2:] == [str(root / "a.c"), str(root / "include" / "wrapdrive.h")]
    assert "--ignore=CAMELCASE" in rest
    assert uapi[-1] == str(root / "uapi" / "wrapdrive.h")
    assert "--ignore=CAMELCASE,BIT_MACRO" in uapi


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


def test_fixed_makefile_points_into_the_cache(tmp_path: Path) -> None:
    text = "include /usr/src/linux-headers-6.1.0-56-common/Makefile\nX := 1\n"
    assert kernels.fixed_makefile(text, tmp_path) == (
        f"include {tmp_path}/usr/src/linux-headers-6.1.0-56-common/Makefile\nX := 1\n"
    )
    # idempotent, and re-pointed when the cache moved
    once = kernels.fixed_makefile(text, tmp_path / "a")
    assert kernels.fixed_makefile(once, tmp_path / "a") == once
    assert str(tmp_path / "b") in kernels.fixed_makefile(once, tmp_path / "b")


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


def test_run_vng_times_out_and_kills_the_group() -> None:
    res = vm.run_vng(["sh", "-c", "echo started; sleep 30 & sleep 30"], timeout=1.0)
    assert res.timed_out and "started" in res.output
    assert res.elapsed < 15


def test_run_vng_keeps_both_streams_and_echoes_only_the_commands_output(tmp_path: Path) -> None:
    shown: list[str] = []
    console = tmp_path / "console.log"
    cmd = ["sh", "-c", "echo out; echo '[    1.000000] kernel line' >&2; echo err >&2"]
    res = vm.run_vng(cmd, timeout=10, console=console, echo=shown.append)
    assert res.returncode == 0
    assert sorted(console.read_text().splitlines()) == ["[    1.000000] kernel line", "err", "out"]
    assert sorted(shown) == ["err", "out"]


def test_run_vng_kills_when_the_watch_says_so(tmp_path: Path) -> None:
    calls = []

    def watch() -> str | None:
        calls.append(1)
        return "a test is stuck" if len(calls) >= 2 else None

    res = vm.run_vng(["sleep", "60"], timeout=60, console=tmp_path / "c", watch=watch, poll=0.2)
    assert res.killed == "a test is stuck" and not res.timed_out and res.elapsed < 10
    assert "[wd-host] guest killed: a test is stuck" in (tmp_path / "c").read_text()




# --------------------------------------------------------------------------- the environment of a boot

FAKE_VNG = """#!/bin/sh
# like virtme-ng's vng: starts virtme-run BY NAME through a shell
exec /bin/sh -c 'virtme-run "$@"' sh "$@"
"""
FAKE_VIRTME_RUN = """#!/bin/sh
echo "virtme-run started"
exit 0
"""


def test_boot_gives_vng_its_venv_bin_first_whatever_the_callers_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug of a fresh machine: vng ran from .venv/bin, but virtme-run (beside it) was
    not on the PATH vng's shell saw: `/bin/sh: 1: virtme-run: not found`, exit 127."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("vng", FAKE_VNG), ("virtme-run", FAKE_VIRTME_RUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")  # CI's clean environment
    monkeypatch.setattr(vm, "VM_CACHE", tmp_path / "vm")
    guest = vm.Guest("6.1", tmp_path / "vmlinuz", None, kvm=False)
    out = vm.new_outdir("run", "6.1")
    res = vm.boot(guest, ["true"], out, timeout=30, vng=str(bin_dir / "vng"), log=lambda m: None)
    assert res.returncode == 0, res.console.read_text()
    assert "virtme-run started" in res.console.read_text()
    env = vm.tool_env(str(bin_dir / "vng"), {"PATH": "/usr/bin:/bin"})
    assert env["PATH"].split(":")[0] == str(bin_dir)
    assert vm.tool_env("/x/vng", {})["PATH"].endswith(vm.SYSTEM_PATH)  # no PATH at all: the system's


def test_new_outdir_keeps_only_the_newest(tmp_path: Path) -> None:
    dirs = []
    for i in range(5):
        d = vm.new_outdir("run", f"k{i}", root=tmp_path, keep=3)
        (d / "guest.sh").write_text("")
        os.utime(d, (1000 + i, 1000 + i))
        dirs.append(d)
    vm.new_outdir("run", "last", root=tmp_path, keep=3)
    assert [d.exists() for d in dirs] == [False, False, True, True, True]


def test_guest_setup_script_loads_in_order_and_marks_the_boundary() -> None:
    s = vm.guest_setup_script(Path("/b/6.1"), "6.1", Path("/o"), path="/v/bin:/usr/bin", python="/py",
                              cached_dirs=["/py"])  # fmt: skip
    order = [
        s.index(x)
        for x in (
            "modprobe vfio ",
            "modprobe vfio_iommu_type1",
            "modprobe mdev",
            "wd-harness: loading modules",
            "insmod /b/6.1/wrapdrive.ko",
            "insmod /b/6.1/wd_dummy.ko",
            "guest_session.py start",
        )
    ]
    assert order == sorted(order)
    assert "export WD_MODULE_DIR=/b/6.1" in s and "export WD_KERNEL=6.1" in s and "export WD_OUT=/o" in s
    assert "--modules vfio,vfio_iommu_type1,mdev,wrapdrive,wd_dummy" in s
    subprocess.run(["bash", "-n"], input=s, text=True, check=True)


def test_session_script_records_the_status_then_ends_the_session(tmp_path: Path) -> None:
    fake_py = tmp_path / "py"
    fake_py.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls'}\n")
    fake_py.chmod(0o755)
    setup = f"export WD_OUT={tmp_path}\nset +e\n"
    s = vm.session_script(setup, ["sh", "-c", "exit 7"], ("wd_dummy", "wrapdrive"), python=str(fake_py))
    proc = subprocess.run(["bash", "-c", s], check=False)
    assert proc.returncode == 7
    assert (tmp_path / "status").read_text().strip() == "7"
    assert (tmp_path / "calls").read_text().split()[1:] == ["end", "--out", str(tmp_path), "--rmmod",
                                                             "wd_dummy,wrapdrive"]  # fmt: skip


# --------------------------------------------------------------------------- time limits


def test_run_limited_kills_the_whole_group_past_its_limit(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    t0 = time.monotonic()
    with pytest.raises(kernels.SetupError, match="did not finish within 1s: killed"):
        kernels.run_limited(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1.0)
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_every_external_command_has_a_limit() -> None:
    for cmd in (["apt-get", "update"], ["apt-get", "download", "x"], ["dpkg", "-x"], ["depmod", "-a"],
                ["apt-cache", "show"], ["tar", "-x"]):  # fmt: skip
        assert 0 < kernels.timeout_for(cmd) < 4 * 3600


def test_a_failed_apt_get_update_ends_in_one_clear_line(tmp_path: Path) -> None:
    """`tools/build.py deps` as root with apt-get failing: one line of ours, no traceback."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\necho 'E: The repository is not signed.' >&2\nexit 100\n")
    (fake / "apt-get").chmod(0o755)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import build, kernels;"
        "kernels.is_root = lambda: True; kernels.ensure_backports = lambda: False;"
        "kernels.missing_packages = lambda p: ['sparse']; sys.exit(build.main(['deps']))"
    )
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin")
    proc = subprocess.run([sys.executable, "-c", code, str(TOOLS)], capture_output=True, text=True, env=env,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("tools/build.py")]
    assert ours == ["tools/build.py deps: `apt-get update -q` failed (exit 100); its messages are above"]
    assert proc.stderr.strip().splitlines()[-1] == ours[0]


# --------------------------------------------------------------------------- debs and kernels, shared


def deb_bytes(pkg: str) -> bytes:
    return f"!<arch>\n{pkg}\n".encode() * 10


def show(pkg: str, version: str = "6.1.192-2") -> str:
    data = deb_bytes(pkg)
    return (f"Package: {pkg}\nVersion: {version}\nFilename: pool/main/l/linux/{pkg}_{version}_amd64.deb\n"
            f"Size: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n\n")  # fmt: skip


PKGS_61 = ("linux-image-6.1.0-56-amd64", "linux-headers-6.1.0-56-amd64", "linux-headers-6.1.0-56-common")


class FakeApt:
    """apt-cache, dpkg -x and depmod for prepare_kernel; counts what it did."""

    def __init__(self) -> None:
        self.unpacked: list[str] = []
        self.downloads: list[list[str]] = []
        self.fail_unpack = False

    def runner(self, cmd: Sequence[str]) -> str:
        if list(cmd[:3]) == ["apt-cache", "depends", "linux-image-amd64"]:
            return APT_DEPENDS_META
        if cmd[:2] == ["apt-cache", "depends"]:
            return "x\n  Depends: linux-headers-6.1.0-56-common\n"
        if cmd[:2] == ["apt-cache", "show"]:
            return show(cmd[-1])
        if cmd[0] == "dpkg":
            if self.fail_unpack:
                raise kernels.SetupError("dpkg -x: killed")
            self.unpacked.append(Path(cmd[2]).name)
            if "linux-image" in cmd[2]:
                fake_kernel(Path(cmd[3]))
            return ""
        if cmd[0] == "depmod":
            return ""
        raise AssertionError(cmd)

    def download(self, cmd: list[str], cwd: Path) -> None:
        self.downloads.append(cmd)
        for spec in cmd[2:]:
            pkg, _, version = spec.partition("=")
            (cwd / f"{pkg}_{version}_amd64.deb").write_bytes(deb_bytes(pkg))


def fake_kernel(root: Path, release: str = "6.1.0-56-amd64") -> None:
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ")
    (root / "lib/modules" / release).mkdir(parents=True, exist_ok=True)
    kdir = root / "usr/src" / f"linux-headers-{release}"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / ".config").write_text("CONFIG_VFIO=m\n")
    common = release.replace("-amd64", "-common")
    (kdir / "Makefile").write_text(f"include /usr/src/linux-headers-{common}/Makefile\n# more\n")


def prepare(apt: FakeApt, cache: Path, shared: Path) -> kernels.Kernel:
    return kernels.prepare_kernel("6.1", cache=cache, runner=apt.runner, log=lambda m: None, shared=shared,
                                  download=apt.download)  # fmt: skip


def test_prepare_kernel_downloads_checks_unpacks_and_links(tmp_path: Path) -> None:
    apt = FakeApt()
    k = prepare(apt, tmp_path / "clone" / "kernels", tmp_path / "shared")
    assert len(apt.downloads) == 1 and sorted(apt.unpacked) == sorted(f"{p}_6.1.192-2_amd64.deb" for p in PKGS_61)
    assert k.root.is_symlink() and k.root.resolve() == tmp_path / "shared" / "kernels" / "6.1.0-56-amd64"
    assert kernels.is_complete(k)
    first = (k.kdir / "Makefile").read_text().splitlines()[0]
    shared_root = tmp_path / "shared" / "kernels" / "6.1.0-56-amd64"
    assert first == f"include {shared_root}/usr/src/linux-headers-6.1.0-56-common/Makefile"
    assert not list((tmp_path / "shared" / "kernels").glob(".unpack-*"))


def test_a_fresh_clone_links_the_shared_kernel_without_unpacking(tmp_path: Path) -> None:
    prepare(FakeApt(), tmp_path / "a" / "kernels", tmp_path / "shared")
    apt = FakeApt()
    k = prepare(apt, tmp_path / "b" / "kernels", tmp_path / "shared")
    assert apt.unpacked == [] and apt.downloads == []
    assert kernels.is_complete(k)
    again = FakeApt()  # the clone's own link: not even the apt index is asked
    again.runner = lambda cmd: (_ for _ in ()).throw(AssertionError(cmd))  # type: ignore[method-assign]
    prepare(again, tmp_path / "b" / "kernels", tmp_path / "shared")


def test_a_damaged_cached_deb_is_dropped_and_fetched_again(tmp_path: Path) -> None:
    debs = tmp_path / "shared" / "debs"
    debs.mkdir(parents=True)
    bad = debs / f"{PKGS_61[0]}_6.1.192-2_amd64.deb"
    bad.write_bytes(deb_bytes(PKGS_61[0])[:-3])  # cut short
    good = debs / f"{PKGS_61[1]}_6.1.192-2_amd64.deb"
    good.write_bytes(deb_bytes(PKGS_61[1]))
    apt = FakeApt()
    prepare(apt, tmp_path / "kernels", tmp_path / "shared")
    assert apt.downloads == [["apt-get", "download", f"{PKGS_61[0]}=6.1.192-2", f"{PKGS_61[2]}=6.1.192-2"]]
    assert bad.read_bytes() == deb_bytes(PKGS_61[0])


def test_a_download_that_does_not_match_the_index_never_takes_its_name(tmp_path: Path) -> None:
    apt = FakeApt()

    def corrupt(cmd: list[str], cwd: Path) -> None:
        for spec in cmd[2:]:
            pkg, _, version = spec.partition("=")
            (cwd / f"{pkg}_{version}_amd64.deb").write_bytes(b"X" * len(deb_bytes(pkg)))

    with pytest.raises(kernels.SetupError, match="SHA256"):
        kernels.prepare_kernel("6.1", cache=tmp_path / "k", runner=apt.runner, log=lambda m: None,
                               shared=tmp_path / "shared", download=corrupt)  # fmt: skip
    assert [p.name for p in (tmp_path / "shared" / "debs").iterdir()] == []


def test_a_half_unpacked_kernel_counts_as_absent(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    apt = FakeApt()
    apt.fail_unpack = True
    with pytest.raises(kernels.SetupError, match="killed"):
        prepare(apt, tmp_path / "kernels", shared)
    assert not (shared / "kernels" / "6.1.0-56-amd64").exists()  # never under its final name
    assert not list((shared / "kernels").glob(".unpack-*"))
    # one left by an older harness, complete-looking but without the stamp: unpacked again
    fake_kernel(shared / "kernels" / "6.1.0-56-amd64")
    apt = FakeApt()
    k = prepare(apt, tmp_path / "kernels", shared)
    assert apt.unpacked and kernels.is_complete(k)


def test_index_entry_wants_size_and_checksum() -> None:
    with pytest.raises(kernels.SetupError, match="no usable record"):
        kernels.index_entry("p", lambda cmd: "Package: p\nVersion: 1\n")
    d = kernels.index_entry("p", lambda cmd: show("p", "1:2.0-1"))
    assert d.version == "1:2.0-1" and d.size == len(deb_bytes("p"))


# --------------------------------------------------------------------------- a real build, from clean


def test_werror_builds_from_clean_so_old_warnings_are_seen(tmp_path: Path) -> None:
    """A module with a W=1 warning against Debian's 6.1 headers: an incremental rebuild
    would compile nothing and print no warning; --werror must see it every time."""
    k = kernels.kernel("6.1")
    assert kernels.is_complete(k), "run tools/bootstrap.sh (it unpacks the kernels) first"
    src = tmp_path / "src"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m += wdwarn.o\n")
    (src / "wdwarn.c").write_text(
        '#include <linux/module.h>\nint wd_unprototyped(void) { return 1; }\n'
        'static int __init wdw_init(void) { return 0; }\nmodule_init(wdw_init);\nMODULE_LICENSE("GPL");\n'
    )
    target = build.Target("6.1", k.kdir, k.image)
    out = tmp_path / "build"
    build.build(target, build_dir=out, src=src)  # warns, builds
    with pytest.raises(SystemExit, match="no previous prototype for .wd_unprototyped"):
        build.build(target, build_dir=out, src=src, werror=True)


# --------------------------------------------------------------------------- -k reaches the guest


def test_keyword_is_for_the_guest_and_does_not_deselect_the_host_tests() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "tests" / "qemu"), "--kernel", "6.1", "-k", "test_types",
         "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deselected" not in proc.stdout
    ids = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert "tests/qemu/test_guest.py::test_guest_boots_with_modules[6.1]" in ids
    assert "tests/qemu/test_guest.py::test_guest_session[6.1]" in ids
