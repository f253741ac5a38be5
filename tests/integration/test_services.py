"""The example services: handlers and compensations on real databases, then over Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from _participant_helpers import command, create_topics, envelopes, read, send
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import (
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    Address,
    AuthorizePayment,
    ConfirmOrder,
    Envelope,
    InventoryReleased,
    InventoryReserved,
    MessageKind,
    OrderLine,
    PaymentAuthorized,
    PaymentVoided,
    ReleaseInventory,
    ReserveInventory,
    ScheduleShipment,
    ShipmentScheduled,
    StepFailed,
    VoidPayment,
)
from saga.participant import NO_REPLY, CommandContext, PermanentError, RetriableError
from saga.settings import Settings
from services import inventory, orders, payments, shipping
from services._runner import create_service_tables, run_services

pytestmark = pytest.mark.postgres


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await create_service_tables(db_engine)
    return db_engine


async def call(
    engine: AsyncEngine, handler: Any, cmd: Any, *, compensation: bool = False, attempt: int = 1
) -> Any:
    """Run a handler in its own transaction, as the SDK does (rolled back if it raises)."""
    envelope = Envelope(
        saga_id=uuid.uuid4(),
        saga_type="order_placement",
        saga_version=1,
        step="s",
        attempt=attempt,
        kind=MessageKind.COMPENSATION if compensation else MessageKind.COMMAND,
        type="t",
    )
    async with engine.begin() as conn:
        ctx = CommandContext(
            envelope=envelope, participant="t", topic="t", partition=0, offset=0, connection=conn
        )
        return await handler(cmd, ctx)


async def stock_of(engine: AsyncEngine, sku: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(inventory.stock.c.available).where(inventory.stock.c.sku == sku)
                )
            ).scalar_one()
        )


def reserve(order_id: str, *lines: tuple[str, int], simulate: Any = None) -> ReserveInventory:
    return ReserveInventory(
        order_id=order_id,
        lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
        simulate=simulate,
    )


async def test_inventory_reserve_is_all_or_nothing_and_idempotent(engine: AsyncEngine) -> None:
    apples = await stock_of(engine, "sku-apple")
    first = await call(engine, inventory.reserve, reserve("o1", ("sku-apple", 2), ("sku-fig", 1)))
    again = await call(engine, inventory.reserve, reserve("o1", ("sku-apple", 2), ("sku-fig", 1)))
    assert first == again == InventoryReserved(reservation_id="res-o1", order_id="o1")
    assert await stock_of(engine, "sku-apple") == apples - 2
    assert await stock_of(engine, "sku-fig") == 2

    with pytest.raises(PermanentError) as info:
        await call(engine, inventory.reserve, reserve("o2", ("sku-apple", 1), ("sku-fig", 5)))
    assert info.value.code == "inventory.out_of_stock"
    assert await stock_of(engine, "sku-apple") == apples - 2  # nothing taken

    with pytest.raises(PermanentError, match="simulated"):
        await call(
            engine, inventory.reserve, reserve("o3", ("sku-pear", 1), simulate="out_of_stock")
        )
    timeout = reserve("o4", ("sku-pear", 1), simulate="inventory_timeout")
    assert await call(engine, inventory.reserve, timeout) is NO_REPLY


async def test_inventory_release_restores_stock_once_and_accepts_never_happened(
    engine: AsyncEngine,
) -> None:
    figs = await stock_of(engine, "sku-fig")
    await call(engine, inventory.reserve, reserve("o1", ("sku-fig", 2)))
    release = ReleaseInventory(order_id="o1", reservation_id="res-o1")
    assert await call(engine, inventory.release, release, compensation=True) == InventoryReleased(
        order_id="o1", released=True
    )
    assert await call(engine, inventory.release, release, compensation=True) == InventoryReleased(
        order_id="o1", released=True
    )
    assert await stock_of(engine, "sku-fig") == figs

    never = ReleaseInventory(order_id="o-never")
    assert await call(engine, inventory.release, never, compensation=True) == InventoryReleased(
        order_id="o-never", released=False
    )
    # The reserve that timed out arrives after its release: refused, stock untouched.
    with pytest.raises(PermanentError) as info:
        await call(engine, inventory.reserve, reserve("o-never", ("sku-fig", 1)))
    assert info.value.code == "inventory.reservation_cancelled"
    assert await stock_of(engine, "sku-fig") == figs


async def test_payments_authorize_decline_and_void(engine: AsyncEngine) -> None:
    cmd = AuthorizePayment(order_id="o1", customer_id="c1", amount_cents=1999)
    expected = PaymentAuthorized(authorization_id="auth-o1", order_id="o1", amount_cents=1999)
    assert await call(engine, payments.authorize, cmd) == expected
    assert await call(engine, payments.authorize, cmd) == expected

    declined = AuthorizePayment(
        order_id="o2", customer_id="c1", amount_cents=5, simulate="payment_declined"
    )
    with pytest.raises(PermanentError) as info:
        await call(engine, payments.authorize, declined)
    assert (info.value.code, info.value.retriable) == ("payment.declined", False)

    void = VoidPayment(order_id="o1", authorization_id="auth-o1")
    assert await call(engine, payments.void, void, compensation=True) == PaymentVoided(
        order_id="o1", voided=True
    )
    assert await call(engine, payments.void, void, compensation=True) == PaymentVoided(
        order_id="o1", voided=True
    )
    never = VoidPayment(order_id="o3")
    assert await call(engine, payments.void, never, compensation=True) == PaymentVoided(
        order_id="o3", voided=False
    )
    late = AuthorizePayment(order_id="o3", customer_id="c1", amount_cents=1)
    with pytest.raises(PermanentError, match=r"payment\.voided"):
        await call(engine, payments.authorize, late)


async def test_orders_confirm_is_idempotent(engine: AsyncEngine) -> None:
    cmd = ConfirmOrder(order_id="o1", customer_id="c1", total_cents=100, authorization_id="a")
    await call(engine, orders.confirm, cmd)
    result = await call(engine, orders.confirm, cmd)
    assert result.order_id == "o1"
    async with engine.connect() as conn:
        rows = (await conn.execute(select(orders.orders))).all()
    assert [(r.order_id, r.status, r.authorization_id) for r in rows] == [("o1", "confirmed", "a")]


async def test_shipping_is_flaky_for_the_first_attempts_then_schedules_once(
    engine: AsyncEngine,
) -> None:
    address = Address(name="Ada", line1="1 Main St", city="Bern", postal_code="3000", country="CH")
    cmd = ScheduleShipment(
        order_id="o1", address=address, simulate="shipping_flaky", flaky_attempts=2
    )
    for attempt in (1, 2):
        with pytest.raises(RetriableError) as info:
            await call(engine, shipping.schedule, cmd, attempt=attempt)
        assert info.value.retriable is True
        assert info.value.code == "shipping.carrier_unavailable"
    expected = ShipmentScheduled(shipment_id="ship-o1", order_id="o1", carrier=shipping.CARRIER)
    assert await call(engine, shipping.schedule, cmd, attempt=3) == expected
    assert await call(engine, shipping.schedule, cmd, attempt=4) == expected


@pytest.mark.kafka
@pytest.mark.slow
async def test_all_four_services_in_one_process_reply_over_kafka(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    settings = Settings(
        database_url=database_url,
        SAGA_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
    )
    topics = settings.topics
    await create_topics(kafka_bootstrap, topics, "inventory", "orders", "payments", "shipping")
    stop = asyncio.Event()
    runner = asyncio.create_task(run_services(settings, stop=stop))
    line = {"sku": "sku-apple", "quantity": 1}
    reserve_cmd = command("inventory.reserve", {"order_id": "o1", "lines": [line]})
    declined = command(
        "payments.authorize",
        {"order_id": "o1", "customer_id": "c", "amount_cents": 10, "simulate": "payment_declined"},
    )
    release_never = command(
        "inventory.release", {"order_id": "o-never"}, kind=MessageKind.COMPENSATION
    )
    confirm = command("orders.confirm", {"order_id": "o1", "customer_id": "c", "total_cents": 10})
    address = {"name": "A", "line1": "x", "city": "y", "postal_code": "1", "country": "CH"}
    ship = command("shipping.schedule", {"order_id": "o1", "address": address})
    try:
        await send(kafka_bootstrap, topics.commands("inventory"), [reserve_cmd, release_never])
        await send(kafka_bootstrap, topics.commands("payments"), [declined])
        await send(kafka_bootstrap, topics.commands("orders"), [confirm])
        await send(kafka_bootstrap, topics.commands("shipping"), [ship])
        replies = {
            r.causation_id: r for r in envelopes(await read(kafka_bootstrap, topics.replies, 5))
        }
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)

    assert len(replies) == 5
    assert replies[reserve_cmd.message_id].payload["output"]["reservation_id"] == "res-o1"
    assert replies[release_never.message_id].type == REPLY_SUCCEEDED
    assert replies[release_never.message_id].payload["output"] == {
        "order_id": "o-never",
        "released": False,
    }
    failed = replies[declined.message_id]
    assert failed.type == REPLY_FAILED
    assert StepFailed.model_validate(failed.payload).code == "payment.declined"
    assert replies[confirm.message_id].payload["output"]["status"] == "confirmed"
    assert replies[ship.message_id].payload["output"]["shipment_id"] == "ship-o1"


@pytest.mark.postgres
def test_a_service_with_a_wrong_database_name_exits_with_what_to_fix(postgres_url: str) -> None:
    # Waiting cannot fix it: `python -m services.<name>` ends at once, without a traceback.
    parts = urlsplit(postgres_url)._replace(path="/no_such_database")
    env = {**os.environ, "SAGA_DATABASE_URL": urlunsplit(parts)}
    done = subprocess.run(
        [sys.executable, "-m", "services.inventory"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert 'Error: create participant tables failed: Error: database "no_such_database"' in (
        done.stderr
    )
    assert "check the user, the password and the database name" in done.stderr
    assert "What to do:" in done.stderr
