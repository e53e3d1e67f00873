"""The wheel a packager builds from userlib/ (`pip wheel ./userlib`): what is in it and
what its metadata says.  Builds it for real (cffi compiles libwd into it)."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(REPO / "userlib")], check=True, timeout=900)
    (whl,) = out.glob("wrapdrive-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_holds_the_package_and_nothing_for_tests(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert not [n for n in names if "fakesysfs" in n or "/tests/" in n], names
    assert "wrapdrive/py.typed" in names
    assert "wrapdrive/data/wrapdrive-udev" in names
    assert "wrapdrive/data/70-wrapdrive.rules.in" in names
    assert any(n.startswith("wrapdrive/_native.") and n.endswith(".so") for n in names)
    assert any(n.startswith("wrapdrive/_abi.") and n.endswith(".so") for n in names)


def test_wheel_metadata_license_and_classifiers(wheel: zipfile.ZipFile) -> None:
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["License-Expression"] == "GPL-2.0-only"
    assert not [c for c in meta.get_all("Classifier", []) if c.startswith("License ::")]
    assert "Operating System :: POSIX :: Linux" in meta.get_all("Classifier", [])
    assert meta.get_all("License-File") == ["COPYING"]
    dist = meta_name.rsplit("/", 1)[0]
    assert "GNU GENERAL PUBLIC LICENSE" in wheel.read(f"{dist}/licenses/COPYING").decode()
