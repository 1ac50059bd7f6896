"""``twofa.heap``: what a process made by the time it calls ``freeze_startup_objects`` is out of the collector's
reach, and only that."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from twofa.heap import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this is the test process: its objects go back to the collector


@pytest.mark.usefixtures("unfrozen")
def test_what_exists_is_frozen_and_what_comes_later_is_collected() -> None:
    before: list[object] = []  # a container: the collector tracks it
    assert any(o is before for o in gc.get_objects())
    frozen = freeze_startup_objects()
    assert frozen == gc.get_freeze_count() > len(gc.get_objects())
    assert not any(o is before for o in gc.get_objects())  # out of the collector's reach

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    later = Cycle()
    assert any(o is later for o in gc.get_objects())
    del later
    assert gc.collect() >= 1  # made after the freeze: collected as ever
