"""What one PostgreSQL notification costs the process that LISTENs for it.

Every process with relays LISTENs for outbox notifications; a notification wakes every
listener of its channel, whether the lane it names is theirs or not. This measures the
CPU that a listener spends per notification (asyncpg, the event loop, the callback),
in a process of its own, while another connection sends notifications at a steady
pace. Multiply by the notifications a process receives for lanes not its own to see
what a shared channel costs.

Run it against the local PostgreSQL (``deploy/local/up --postgres``)::

    .venv/bin/python deploy/bench/notify_cost.py --count 5000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Event as EventType
from typing import Any

import asyncpg  # type: ignore[import-untyped]

CHANNEL = "saga_bench_notify_cost"


def _listen(dsn: str, count: int, ready: EventType, results: Any) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        got = 0
        done = asyncio.Event()

        def on_notify(*_args: object) -> None:
            nonlocal got
            got += 1
            if got >= count:
                done.set()

        await conn.add_listener(CHANNEL, on_notify)
        ready.set()
        started = time.process_time()
        await done.wait()
        results.put(time.process_time() - started)
        await conn.close()

    asyncio.run(main())


async def _notify(dsn: str, count: int, gap_s: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(count):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"lane:{n % 6}")
            await asyncio.sleep(gap_s)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://saga@127.0.0.1:15432/saga")
    parser.add_argument("--count", type=int, default=5000, help="notifications to send")
    parser.add_argument("--gap-ms", type=float, default=0.5, help="pause between two")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        ready = multiprocessing.Event()
        results: Any = multiprocessing.Queue()
        listener = multiprocessing.Process(
            target=_listen, args=(args.dsn, args.count, ready, results)
        )
        listener.start()
        ready.wait(30)
        asyncio.run(_notify(args.dsn, args.count, args.gap_ms / 1000))
        cpu_s = results.get(timeout=60)
        listener.join()
        print(
            f"round {round_}: {args.count} notifications,"
            f" listener CPU {cpu_s * 1e6 / args.count:.1f} us per notification"
        )


if __name__ == "__main__":
    main()
