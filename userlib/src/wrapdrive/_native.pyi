"""Stub: the cffi module built by build_native.py (libwd and the uapi header)."""
from typing import Any

ffi: Any
lib: Any
