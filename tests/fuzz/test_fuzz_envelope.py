"""Fuzz the envelope decoder: any bytes in, an Envelope or a ContractDecodeError out.

A consume loop decides "poison, to the DLQ" on exactly one exception type, so anything
else escaping :meth:`contracts.Envelope.from_bytes` would stop the loop.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import ContractDecodeError, Envelope, MessageKind

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID: dict[str, Any] = json.loads(
    Envelope(
        saga_id=uuid4(),
        saga_type="order_placement",
        saga_version=1,
        step="reserve_inventory",
        kind=MessageKind.REPLY,
        type="reply.succeeded",
        payload={"output": {"reservation_id": "r-1"}},
    ).to_bytes()
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def rejection(data: bytes | None) -> ContractDecodeError | None:
    """Decode; return the ContractDecodeError (any other exception fails the test)."""
    try:
        Envelope.from_bytes(data)
    except ContractDecodeError as exc:
        return exc
    return None


def decode(data: bytes | None) -> Envelope | None:
    """Decode; fail the test unless the outcome is an Envelope or a described rejection."""
    error = rejection(data)
    assert error is None or str(error).strip(), "a rejection must say what is wrong"
    return None if error is not None else Envelope.from_bytes(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_decode_or_are_rejected_cleanly(data: bytes) -> None:
    decode(data)


@FUZZ
@given(json_values)
def test_arbitrary_json_decodes_or_is_rejected_cleanly(value: Any) -> None:
    decode(json.dumps(value).encode())


@FUZZ
@given(field=st.sampled_from(sorted(VALID)), value=json_values)
def test_a_valid_envelope_with_one_field_replaced(field: str, value: Any) -> None:
    decoded = decode(json.dumps({**VALID, field: value}).encode())
    if decoded is not None:
        assert getattr(decoded, field) is not None or value is None


@FUZZ
@given(field=st.sampled_from(sorted(VALID)))
def test_a_missing_required_field_is_named(field: str) -> None:
    data = {k: v for k, v in VALID.items() if k != field}
    error = rejection(json.dumps(data).encode())
    assert error is None or field in str(error)


@FUZZ
@given(version=st.integers().filter(lambda v: v != 1) | st.text(max_size=5))
def test_any_other_schema_version_is_rejected_naming_the_field(version: object) -> None:
    error = rejection(json.dumps({**VALID, "schema_version": version}).encode())
    assert error is not None, f"schema_version {version!r} was accepted"
    assert "schema_version" in str(error)


def test_no_value_and_deep_nesting_are_rejected_cleanly() -> None:
    assert decode(None) is None
    deep = b"[" * 100_000 + b"]" * 100_000
    assert decode(deep) is None
    nested_payload = json.dumps({**VALID, "payload": {"a": 1}}).encode()
    nested_payload = nested_payload.replace(b'{"a":1}', b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}")
    decode(nested_payload)
