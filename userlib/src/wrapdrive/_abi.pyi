"""Stub: the cffi module built by build_native.py (the uapi header alone)."""
from typing import Any

ffi: Any
lib: Any
