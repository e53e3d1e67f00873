"""The in-guest tests' own conftest (the host's tests/qemu/conftest.py is never loaded in
the guest: tools/guest_runner.py sets --confcutdir to this folder).

Between test files it checks that the file left nothing behind: no mdev (a queue is an
mdev) and no page pinned (debugfs wrapdrive/pinned_pages) that was not there before the
file started.  A leak fails the file's last test at teardown, naming what was left.

Markers (registered by tools/wd_guest_plugin.py): `@pytest.mark.slow` or
`@pytest.mark.slow(seconds)` for a test that needs longer than the default limit.
"""

from __future__ import annotations

from collections.abc import Iterator

import guest_session as gs
import pytest


def leak_state() -> tuple[set[str], int | None]:
    pinned, _ = gs.pinned_pages()  # None while our module is not loaded
    return set(gs.mdevs()), pinned


def leaks(before: tuple[set[str], int | None], after: tuple[set[str], int | None]) -> list[str]:
    out = []
    new = sorted(after[0] - before[0])
    if new:
        out.append(f"{len(new)} mdev(s) left: {', '.join(new)}")
    if after[1] and after[1] > (before[1] or 0):
        out.append(f"pinned pages {before[1] or 0} -> {after[1]} (debugfs wrapdrive/pinned_pages)")
    return out


@pytest.fixture(scope="module", autouse=True)
def nothing_leaks_between_files(request: pytest.FixtureRequest) -> Iterator[None]:
    before = leak_state()
    yield
    found = leaks(before, leak_state())
    if found:
        pytest.fail(f"{request.module.__name__} left behind: " + "; ".join(found), pytrace=False)
