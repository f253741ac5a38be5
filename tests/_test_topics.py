"""Topic prefixes of the test suite, and removing the topics made under them.

Every test makes topics under a prefix of its own, and every partition is a few open
files on the broker: a broker that keeps the topics of every earlier run ends up at
its open-files limit and refuses work ("Too many open files"). So the suite deletes
the topics of the prefixes it handed out when the session ends, and at the start the
topics of earlier runs that never got that far (killed, or cut off) once they are
older than :data:`STALE_AFTER_S`: the prefix carries its creation time.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections.abc import Callable

PREFIX = re.compile(r"^t(?P<created>[0-9a-f]{8})[0-9a-f]{6}\.")
"""``t`` + creation time (unix seconds, 8 hex digits) + 6 random hex digits + ``.``."""

OLD_PREFIX = re.compile(r"^(?:t[0-9a-f]{10}|ui[0-9a-f]{8})\.")
"""Prefixes of earlier versions of the suite (no creation time: always stale)."""

STALE_AFTER_S = 6 * 3600
"""A test run's topics older than this belong to a run that ended long ago."""

_handed_out: set[str] = set()


def new_prefix() -> str:
    """A fresh topic-name prefix, deleted with its topics when the session ends."""
    prefix = f"t{int(time.time()):08x}{uuid.uuid4().hex[:6]}."
    _handed_out.add(prefix)
    return prefix


def is_stale(topic: str, now: float) -> bool:
    """Whether ``topic`` was made by a test run that ended long ago."""
    if OLD_PREFIX.match(topic):
        return True
    match = PREFIX.match(topic)
    return match is not None and now - int(match["created"], 16) > STALE_AFTER_S


def delete_stale(bootstrap: str) -> None:
    """Delete the topics earlier runs left behind."""
    now = time.time()
    _delete(bootstrap, lambda name: is_stale(name, now), "topics of earlier test runs")


def delete_handed_out(bootstrap: str) -> None:
    """Delete the topics made under the prefixes this session handed out."""
    prefixes = tuple(_handed_out)
    if prefixes:
        _delete(bootstrap, lambda name: name.startswith(prefixes), "this run's topics")
        _handed_out.clear()


def _delete(bootstrap: str, select: Callable[[str], bool], what: str) -> None:
    from saga.errors import TransportError
    from saga.kafka import delete_topics

    try:
        asyncio.run(delete_topics(bootstrap, select))
    except TransportError as exc:
        # Not a test failure: the tests ran; the broker just keeps the topics.
        print(f"\ncould not delete {what}: {exc}", file=sys.stderr)
