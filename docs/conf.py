"""Sphinx configuration of WrapDrive's documentation (`nox -s docs`, warnings are errors)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "WrapDrive"
author = "the WrapDrive developers"
copyright = "the WrapDrive developers; GPL-2.0"  # noqa: A001  (Sphinx's name)
extensions = ["sphinx.ext.autodoc", "kerneldoc"]
exclude_patterns = ["_build", "ABI"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
primary_domain = "py"
# the kernel-doc of include/wrapdrive.h uses the C domain; its kernel types
# (u32, struct device ...) have no entries here
suppress_warnings = ["c.duplicate_declaration"]
