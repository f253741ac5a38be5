"""Scripted participants for coordinator tests: plain aiokafka, replies decided by a script.

A script maps a command type to a function ``(envelope) -> Reply | None``; ``None``
means "do not answer" (to exercise timeouts). Every command received is recorded in
order, so tests can assert what was sent, in which order, and how often.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts import (
    REPLY_FAILED,
    REPLY_SUCCEEDED,
    Envelope,
    MessageKind,
    StepFailed,
    StepSucceeded,
)
from saga.coordinator import CoordinatorConfig, RuntimeConfig
from saga.definition import StepSpec, compensatable
from saga.relay import RelayConfig
from saga.store import SagaRow, SqlStore
from saga.topics import Topics


@dataclass
class Reply:
    ok: bool = True
    output: dict[str, Any] = field(default_factory=dict)
    code: str = "failed"
    retriable: bool = False


def ok(**output: Any) -> Callable[[Envelope], Reply]:
    return lambda _env: Reply(ok=True, output=output)


def fail(code: str, *, retriable: bool = False) -> Callable[[Envelope], Reply]:
    return lambda _env: Reply(ok=False, code=code, retriable=retriable)


def silent(_env: Envelope) -> Reply | None:
    return None


def fail_first(n: int, code: str = "flaky") -> Callable[[Envelope], Reply]:
    """Fail (retriably) attempts 1..n, then succeed."""
    return lambda env: Reply(ok=False, code=code, retriable=True) if env.attempt <= n else Reply()


class ScriptedParticipants:
    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        participants: list[str],
        script: dict[str, Callable[[Envelope], Reply | None]],
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.participants = participants
        self.script = script
        self.received: list[Envelope] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> ScriptedParticipants:
        self._consumer = AIOKafkaConsumer(
            *[self.topics.commands(p) for p in self.participants],
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.topics.prefix}scripted",
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._consumer.start()
        await self._producer.start()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    def of_type(self, type_: str) -> list[Envelope]:
        return [e for e in self.received if e.type == type_]

    async def _loop(self) -> None:
        assert self._consumer is not None
        assert self._producer is not None
        async for record in self._consumer:
            env = Envelope.from_bytes(record.value)
            self.received.append(env)
            handler = self.script.get(env.type, ok())
            reply = handler(env)
            if reply is None:
                continue
            body: dict[str, Any]
            if reply.ok:
                body = StepSucceeded(output=reply.output).model_dump(mode="json")
            else:
                body = StepFailed(code=reply.code, retriable=reply.retriable).model_dump(
                    mode="json"
                )
            out = Envelope(
                saga_id=env.saga_id,
                saga_type=env.saga_type,
                saga_version=env.saga_version,
                step=env.step,
                attempt=env.attempt,
                kind=MessageKind.REPLY,
                type=REPLY_SUCCEEDED if reply.ok else REPLY_FAILED,
                payload=body,
                causation_id=env.message_id,
                correlation_id=env.correlation_id,
            )
            await self._producer.send_and_wait(
                self.topics.replies, out.to_bytes(), key=str(env.saga_id).encode()
            )


def fast_runtime_config(
    database_url: str,
    bootstrap: str,
    topics: Topics,
    *,
    partitions: int,
    **coordinator: Any,
) -> RuntimeConfig:
    """A coordinator runtime tuned for tests: short polls, no linger; extra
    ``CoordinatorConfig`` options (a breaker policy, ...) as keywords."""
    return RuntimeConfig(
        database_url=database_url,
        bootstrap_servers=bootstrap,
        topics=topics,
        coordinator=CoordinatorConfig(poll_timeout_ms=50, **coordinator),
        relay=RelayConfig(poll_interval_ms=20, linger_ms=0),
        partitions=partitions,
    )


class Loop(Protocol):
    """Something that runs until told to stop: a coordinator runtime, a participant."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def looping(loop: Loop) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``loop.run()`` in a task; on the way out stop it and wait (30 s) for the task."""
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


async def saga_in(
    store: SqlStore, saga_id: object, statuses: Collection[str], within_s: float = 60
) -> SagaRow:
    """The saga's row once its status is one of ``statuses`` (TimeoutError after ``within_s``)."""
    async with asyncio.timeout(within_s):
        while (row := await store.get_saga(str(saga_id))) is None or row.status not in statuses:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    return row


def booking(what: str, participant: str, **options: Any) -> StepSpec:
    """A trip's ``book_<what>`` step: ``<what>.book``, compensated by ``<what>.cancel``."""
    return compensatable(
        f"book_{what}",
        participant=participant,
        command=f"{what}.book",
        compensation=f"{what}.cancel",
        **options,
    )
