"""Only for cffi: the two extension modules (see build_native.py).  Everything
else about the package is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["build_native.py:abi", "build_native.py:native"])
