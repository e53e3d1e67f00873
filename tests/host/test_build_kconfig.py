"""Kconfig checks of tools/build.py on a small fake kernel tree (a Kconfig + .config in
tmp_path, parsed by kconfiglib): what is reported missing, what --enable-missing sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import build  # noqa: E402
import kconfig_check as kc  # noqa: E402

pytest.importorskip("kconfiglib")

KCONFIG = """
mainmenu "fake"

config MODULES
	bool "modules"
	modules

config DEBUG_FS
	bool "debugfs"

config MMU_NOTIFIER
	bool "mmu notifier"

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

config ZLIB_DEFLATE
	tristate "deflate"

config ZLIB_INFLATE
	tristate "inflate"

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

config FUSE_FS
	tristate "fuse"

config VIRTIO_FS
	tristate "virtiofs"
	depends on FUSE_FS && VIRTIO

config DEVTMPFS
	bool "devtmpfs"

config OVERLAY_FS
	tristate "overlay"

config TMPFS
	bool "tmpfs"

config BROKEN_DEP
	bool

config NEEDS_BROKEN
	bool "cannot be enabled"
	depends on BROKEN_DEP
"""

COMPLETE = """
CONFIG_MODULES=y
CONFIG_DEBUG_FS=y
CONFIG_MMU_NOTIFIER=y
CONFIG_VFIO=m
CONFIG_VFIO_IOMMU_TYPE1=m
CONFIG_VFIO_MDEV=m
CONFIG_CRYPTO=y
CONFIG_CRYPTO_SHA256=y
CONFIG_CRYPTO_CRC32C=m
CONFIG_CRYPTO_USER_API_HASH=m
CONFIG_ZLIB_DEFLATE=m
CONFIG_ZLIB_INFLATE=y
CONFIG_VIRTIO=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_CONSOLE=m
CONFIG_NET_9P=m
CONFIG_NET_9P_VIRTIO=m
CONFIG_9P_FS=m
CONFIG_DEVTMPFS=y
CONFIG_OVERLAY_FS=m
CONFIG_TMPFS=y
"""


def tree(tmp_path: Path, dotconfig: str) -> Path:
    (tmp_path / "Kconfig").write_text(KCONFIG)
    (tmp_path / "Makefile").write_text("# fake\n")
    (tmp_path / ".config").write_text(dotconfig)
    return tmp_path


def drop(config: str, *names: str) -> str:
    return "".join(ln + "\n" for ln in config.splitlines() if ln and ln.split("=")[0][7:] not in names)


def test_complete_config_has_nothing_missing(tmp_path: Path) -> None:
    t = tree(tmp_path, COMPLETE)
    kconf = kc.load(t / "Kconfig", t / ".config")
    assert kc.missing_symbols(kconf) == []
    assert build.check_config(t) == []


def test_missing_symbols_are_reported_by_name(tmp_path: Path) -> None:
    t = tree(tmp_path, drop(COMPLETE, "VFIO_MDEV", "DEBUG_FS", "CRYPTO_CRC32C"))
    kconf = kc.load(t / "Kconfig", t / ".config")
    assert kc.missing_symbols(kconf) == ["VFIO_MDEV", "DEBUG_FS", "CRYPTO_CRC32C"]


def test_module_not_enough_for_bool_needs(tmp_path: Path) -> None:
    kconf = kc.load(tree(tmp_path, COMPLETE) / "Kconfig", tmp_path / ".config")
    assert kc.symbol_ok(kconf, "VFIO", module_ok=True)
    assert not kc.symbol_ok(kconf, "VFIO", module_ok=False)
    assert not kc.symbol_ok(kconf, "NO_SUCH_SYMBOL", module_ok=True)


def test_virtiofs_is_an_alternative_to_9p(tmp_path: Path) -> None:
    cfg = drop(COMPLETE, "NET_9P", "NET_9P_VIRTIO", "9P_FS") + "CONFIG_FUSE_FS=y\nCONFIG_VIRTIO_FS=y\n"
    kconf = kc.load(tree(tmp_path, cfg) / "Kconfig", tmp_path / ".config")
    assert kc.missing_symbols(kconf) == []
    # neither: the first alternative (9p) is what gets reported
    kconf = kc.load(
        tree(tmp_path, drop(COMPLETE, "NET_9P", "NET_9P_VIRTIO", "9P_FS")) / "Kconfig", tmp_path / ".config"
    )
    assert kc.missing_symbols(kconf) == ["NET_9P", "NET_9P_VIRTIO", "9P_FS"]


def test_enable_missing_follows_dependencies_and_writes(tmp_path: Path) -> None:
    t = tree(tmp_path, drop(COMPLETE, "VFIO", "VFIO_MDEV", "VFIO_IOMMU_TYPE1", "CRYPTO", "CRYPTO_SHA256"))
    missing = build.check_config(t, enable_missing=True)
    assert missing == []
    text = (t / ".config").read_text()
    for sym in ("VFIO", "VFIO_MDEV", "VFIO_IOMMU_TYPE1", "CRYPTO", "CRYPTO_SHA256"):
        assert f"CONFIG_{sym}=" in text, sym
    kconf = kc.load(t / "Kconfig", t / ".config")
    assert kc.missing_symbols(kconf) == []


def test_enable_reports_what_cannot_be_enabled(tmp_path: Path) -> None:
    t = tree(tmp_path, COMPLETE)
    kconf = kc.load(t / "Kconfig", t / ".config")
    req = (kc.Requirement("impossible", (("NEEDS_BROKEN",),), module_ok=False),)
    assert kc.enable_missing(kconf, req) == ["NEEDS_BROKEN"]


def test_build_on_a_tree_stops_at_missing_symbols(tmp_path: Path) -> None:
    t = tree(tmp_path, drop(COMPLETE, "VFIO_MDEV"))
    assert build.main(["build", "--kernel", str(t)]) == 1
