"""Processes: GC settings of the long-running loops, running until a signal, child processes."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

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


StopCallback = Callable[[], None]
Register = Callable[[StopCallback], None]


def run_until_signal(main: Callable[[Register], Awaitable[None]]) -> None:
    """Run an async main; SIGTERM/SIGINT call the ``stop`` callback it registers.

    The garbage collector is tuned for a batch loop first (:func:`tune_gc`).

    ``main(register)`` is called with a function that registers the stop callback.
    """

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        stops: list[StopCallback] = []

        def on_signal() -> None:
            for stop in stops:
                stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await main(stops.append)

    tune_gc()
    asyncio.run(runner())


async def wait_for_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait (without blocking the event loop) until ``proc`` exits; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
