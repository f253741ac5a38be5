"""Building blocks shared by the example domain's messages."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from contracts.envelope import Frozen

Simulate = Literal["payment_declined", "out_of_stock", "inventory_timeout", "shipping_flaky"]
"""Failure modes the example services simulate on request (demo and tests only).

The saga input carries ``simulate``; the definition maps it into every command, and each
service acts only on the value that concerns it:

* ``out_of_stock``: inventory replies a permanent failure (compensation starts);
* ``inventory_timeout``: inventory never replies (the step times out);
* ``payment_declined``: payments replies a permanent failure (compensation starts);
* ``shipping_flaky``: shipping replies a retriable failure for the first attempts.
"""

Id = Annotated[str, Field(min_length=1, max_length=100)]
"""A business identifier (order, customer, reservation, ...)."""

Cents = Annotated[int, Field(ge=0)]
"""An amount of money in the currency's minor unit (integer cents, never floats)."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 currency code, e.g. ``EUR``."""


class Message(Frozen):
    """Base of the example domain's messages: attribute docstrings become schema descriptions."""

    model_config = ConfigDict(use_attribute_docstrings=True)
