from __future__ import annotations

from datetime import UTC, datetime

import pytest

from saga.operations import decode_cursor, encode_cursor

SAGA = "0190a1b2-0000-7000-8000-000000000001"


@pytest.mark.parametrize(
    "at", [datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), datetime(2025, 1, 2, 3, 4, 5)]
)
def test_cursor_round_trips_exactly(at: datetime) -> None:
    cursor = encode_cursor((at, SAGA))
    assert not set(cursor) & set("=/+")
    assert decode_cursor(cursor) == (at, SAGA)


@pytest.mark.parametrize(
    "cursor", ["garbage", "", "bm90IGpzb24", "WzFd", encode_cursor((datetime.now(UTC), SAGA))[:-3]]
)
def test_foreign_cursors_are_a_value_error(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(cursor)
