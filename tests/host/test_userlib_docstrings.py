"""Every public name of the wrapdrive package says what it is: the API reference
(docs/api.rst, built by `nox -s docs`) is made of these docstrings."""

from __future__ import annotations

import inspect

import wrapdrive


def undocumented() -> list[str]:
    missing = []
    for name in wrapdrive.__all__:
        obj = getattr(wrapdrive, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            fn = value.fget if isinstance(value, property) else value
            fn = getattr(fn, "__func__", fn)
            if callable(fn) and not (fn.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    assert undocumented() == []
