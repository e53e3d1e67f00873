"""The probes run with the in-guest conftest's checks (tests/qemu/guest/conftest.py),
loaded under another name (this folder is the in-guest pytest's rootdir)."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[5] / "tests" / "qemu" / "guest" / "conftest.py"
_spec = importlib.util.spec_from_file_location("wd_guest_conftest", _path)
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
nothing_leaks_between_files = _mod.nothing_leaks_between_files
