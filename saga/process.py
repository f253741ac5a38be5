"""Processes: GC settings for the long-running loops, and waiting for child processes."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import time

GEN0_THRESHOLD = 50_000
"""Allocations (minus deallocations) of container objects between two young collections."""


def tune_gc(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """Tune CPython's cyclic garbage collector for a batch loop; call once after startup.

    A batch allocates thousands of short-lived objects (rows, envelopes, models,
    dicts) that reference counting frees on its own. With the default threshold of
    700, the collector ran every few hundred of them and, walking the older
    generations too, took about a quarter of the coordinator's CPU in ``saga bench``.
    This freezes what exists after startup (modules, definitions, caches: never
    scanned again) and raises the young-generation threshold. Cyclic garbage is still
    collected, only later; the coordinator's peak RSS stays within its budget (see
    the README's benchmark figures).

    Args:
        gen0_threshold: The new young-generation threshold.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


async def wait_for_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait (without blocking the event loop) until ``proc`` exits; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
