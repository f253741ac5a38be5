"""A dedicated broker's ports are free and outside the kernel's ephemeral range."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from saga.chaos import free_port, free_port_pair
from saga.chaos._broker import _ephemeral_ports
from saga.errors import ConfigError


@contextmanager
def listening(port: int) -> Iterator[None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def four_free_ports(first: int, last: int) -> int:
    """``p`` such that nothing listens on ``p`` to ``p + 3`` now."""
    for port in range(first, last, 4):
        try:
            with listening(port), listening(port + 1), listening(port + 2), listening(port + 3):
                return port
        except OSError:
            continue
    raise AssertionError(f"no four free ports in a row between {first} and {last}")


def test_the_pair_is_free_and_outside_the_ephemeral_range() -> None:
    port = free_port_pair()
    ephemeral = _ephemeral_ports()
    assert port not in ephemeral
    assert port + 1 not in ephemeral
    with listening(port), listening(port + 1):  # both can be bound
        pass


def test_a_taken_port_is_never_chosen() -> None:
    first = four_free_ports(24_000, 26_000)
    second = first + 2
    with listening(first + 1):  # the first pair is half taken
        for _ in range(20):
            assert free_port_pair(first, second + 2) == second
        with listening(second), pytest.raises(ConfigError, match="no two free ports"):
            free_port_pair(first, second + 2)


def test_a_single_free_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert not any(p in _ephemeral_ports() for p in ports)
    for port in ports:
        with listening(port):
            pass
    first = four_free_ports(26_000, 28_000)
    with listening(first), listening(first + 1), listening(first + 3):
        for _ in range(20):
            assert free_port(first, first + 4) == first + 2
        with listening(first + 2), pytest.raises(ConfigError, match="no free port between"):
            free_port(first, first + 4)
