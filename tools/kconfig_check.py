"""Kconfig requirements of WrapDrive on a kernel source tree, checked and enabled with kconfiglib."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Requirement:
    """One need; met when every symbol of any one alternative is y (or m if allowed)."""

    why: str
    alternatives: tuple[tuple[str, ...], ...]
    module_ok: bool = True


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("loadable modules", (("MODULES",),), module_ok=False),
    Requirement("VFIO core", (("VFIO",),)),
    Requirement("mediated devices", (("VFIO_MDEV",),)),
    Requirement("VFIO type1 IOMMU (MAP_DMA)", (("VFIO_IOMMU_TYPE1",),)),
    Requirement("debugfs (driver statistics)", (("DEBUG_FS",),), module_ok=False),
    Requirement("a queue dies with its owner's address space (mmu notifier)",
                (("MMU_NOTIFIER",),), module_ok=False),
    Requirement("dummy engine: deflate", (("ZLIB_DEFLATE",),)),
    Requirement("dummy engine: inflate", (("ZLIB_INFLATE",),)),
    Requirement("dummy engine: sha256", (("CRYPTO_SHA256",),)),
    Requirement("dummy engine: crc32c", (("CRYPTO_CRC32C",),)),
    Requirement("AF_ALG baseline (hash)", (("CRYPTO_USER_API_HASH",),)),
    Requirement("virtme-ng: virtio PCI", (("VIRTIO", "VIRTIO_PCI"),)),
    Requirement("virtme-ng: console", (("VIRTIO_CONSOLE",),)),
    Requirement(
        "virtme-ng: root filesystem (9p or virtiofs)",
        (("NET_9P", "NET_9P_VIRTIO", "9P_FS"), ("FUSE_FS", "VIRTIO_FS")),
    ),
    Requirement("virtme-ng: devtmpfs", (("DEVTMPFS",),), module_ok=False),
    Requirement("virtme-ng: overlayfs", (("OVERLAY_FS",),)),
    Requirement("virtme-ng: tmpfs", (("TMPFS",),), module_ok=False),
)


# Symbols with no prompt of their own, only `select`ed by others: enabled through this one.
# On virtme-ng's minimal config nothing selects ZLIB_DEFLATE, and setting it directly is a no-op.
# Since Linux 6.0 VFIO_MDEV has no prompt either: the mtty sample (a module never loaded)
# is the smallest thing that selects it on x86.
ENABLED_THROUGH: dict[str, str] = {
    "ZLIB_DEFLATE": "CRYPTO_DEFLATE",
    "ZLIB_INFLATE": "CRYPTO_DEFLATE",
    "VFIO_MDEV": "SAMPLE_VFIO_MDEV_MTTY",
    # KVM selects it in distribution kernels; a guest-only kernel without KVM gets it from
    # the Intel IOMMU's shared virtual memory, which WD_CAPA_SHARE_ALL hardware needs anyway.
    "MMU_NOTIFIER": "INTEL_IOMMU_SVM",
}


def symbol_ok(kconf: Any, name: str, module_ok: bool) -> bool:
    sym = kconf.syms.get(name)
    if sym is None:
        return False
    return bool(sym.tri_value == 2 or (module_ok and sym.tri_value == 1))


def requirement_ok(kconf: Any, req: Requirement) -> bool:
    return any(all(symbol_ok(kconf, s, req.module_ok) for s in alt) for alt in req.alternatives)


def missing_symbols(kconf: Any, reqs: Sequence[Requirement] = REQUIREMENTS) -> list[str]:
    """CONFIG_ names to report: for an unmet need, the unmet symbols of its first alternative."""
    out: list[str] = []
    for req in reqs:
        if requirement_ok(kconf, req):
            continue
        for s in req.alternatives[0]:
            if not symbol_ok(kconf, s, req.module_ok) and s not in out:
                out.append(s)
    return out


def _kconfig_class(kconfiglib: Any) -> Any:
    """kconfiglib 14.1 (its last release) predates Linux 5.15's bare `modules` attribute
    (formerly `option modules`) and stops at kernel/module/Kconfig; it already treats
    MODULES as the modules symbol, so the old spelling is handed to it."""

    class Kconfig(kconfiglib.Kconfig):  # type: ignore[misc]
        def _tokenize(self, s: str) -> Any:
            if s.strip() == "modules":
                s = s.replace("modules", "option modules", 1)
            return super()._tokenize(s)

    return Kconfig


def load(kconfig: Path, dotconfig: Path | None, env: dict[str, str] | None = None) -> Any:
    """Parse srctree/Kconfig and load a .config (kconfiglib reads srctree/ARCH from os.environ)."""
    import kconfiglib

    srctree = kconfig.parent
    defaults = {
        "srctree": str(srctree),
        "ARCH": "x86",
        "SRCARCH": "x86",
        "SUBARCH": "x86",
        "CC": "gcc",
        "LD": "ld",
        "HOSTCC": "gcc",
        "KERNELVERSION": "wrapdrive-check",
    }
    old = {k: os.environ.get(k) for k in defaults}
    os.environ.update(defaults | (env or {}))
    cwd = os.getcwd()
    try:
        os.chdir(srctree)
        kconf = _kconfig_class(kconfiglib)(str(kconfig), warn=False)
        if dotconfig is not None and dotconfig.exists():
            kconf.load_config(str(dotconfig), replace=True)
    finally:
        os.chdir(cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return kconf


def _dep_symbols(kconf: Any, sym: Any) -> list[Any]:
    import kconfiglib

    return [s for s in kconfiglib.expr_items(sym.direct_dep) if isinstance(s, kconfiglib.Symbol) and s is not kconf.y]


def enable(kconf: Any, name: str, module_ok: bool = True, _depth: int = 0) -> bool:
    """Set name to y (or m) enabling the symbols its `depends on` names first."""
    sym = kconf.syms.get(name)
    if sym is None or _depth > 8:
        return False
    if symbol_ok(kconf, name, module_ok):
        return True
    for dep in _dep_symbols(kconf, sym):
        if dep.tri_value == 0 and dep.name != name:
            enable(kconf, dep.name, True, _depth + 1)
    for value in (2, 1) if module_ok else (2,):
        if value in sym.assignable:
            sym.set_value(value)
            if symbol_ok(kconf, name, module_ok):
                return True
    via = ENABLED_THROUGH.get(name)
    if via is not None and not symbol_ok(kconf, name, module_ok):
        enable(kconf, via, module_ok, _depth + 1)
    return symbol_ok(kconf, name, module_ok)


def enable_missing(kconf: Any, reqs: Sequence[Requirement] = REQUIREMENTS) -> list[str]:
    """Enable every unmet requirement's first alternative; returns the names still unmet."""
    for req in reqs:
        if requirement_ok(kconf, req):
            continue
        for s in req.alternatives[0]:
            enable(kconf, s, req.module_ok)
    return missing_symbols(kconf, reqs)
