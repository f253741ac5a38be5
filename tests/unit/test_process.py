"""The garbage collector settings of the long-running processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from saga.process import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_the_startup_heap_and_raises_the_young_threshold() -> None:
    gen1, gen2 = gc.get_threshold()[1:]
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
