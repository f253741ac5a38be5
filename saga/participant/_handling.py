"""Running handlers and building their replies: the part both modes share.

A batch's decoded items are walked in order. Dead letters pass through; a command
whose message id was handled before (the caller says which ids it has seen) is
skipped; every other command runs its handler inside the command's scope and gets one
reply: ``reply.succeeded`` with the handler's output, or ``reply.failed`` with the
code of a :class:`~saga.participant.ParticipantError`, ``handler.exception`` for any
other exception, or ``participant.invalid_command`` for a payload that failed its
model. A handler that returns :data:`~saga.participant.NO_REPLY` gets none. The
interceptor then sees the batch's outgoing records before the mode makes them durable.

With a connection (transactional mode) a handler runs either in a SAVEPOINT of its
own, so a failure rolls back only its writes, or, in the cheaper first run of a batch,
without one: then a failure raises :class:`Isolate` for the batch to be redone with
savepoints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import StepFailed, StepSucceeded
from saga.errors import StoreUnavailable
from saga.participant._context import NO_REPLY, CommandContext, HandlerResult
from saga.participant._decoding import Command, Decoded
from saga.participant._errors import HANDLER_EXCEPTION, INVALID_COMMAND, ParticipantError
from saga.participant._headers import CommandScope, HeadersHook
from saga.participant._records import OutgoingRecord, ReplyInterceptor, reply_envelope, saga_key
from saga.store import classify

log = logging.getLogger("saga.participant")


class Isolate(Exception):
    """A handler failed in a batch run without savepoints: redo it with them."""


async def no_interception(records: Sequence[OutgoingRecord]) -> Sequence[OutgoingRecord]:
    """The default :data:`ReplyInterceptor`: send the records unchanged."""
    return records


@dataclass(frozen=True, kw_only=True)
class CommandRunner:
    """Runs the handlers of a batch's new commands and builds their replies."""

    participant: str
    """Name of the participant (in logs and in each handler's context)."""
    replies_topic: str
    """Where replies go."""
    headers: HeadersHook
    """Builds a reply's Kafka headers from the command's."""
    scope: CommandScope
    """Opens the context each handler runs and its reply is built in."""
    interceptor: ReplyInterceptor = no_interception
    """Sees each batch's outgoing records before they are made durable."""

    async def handle_batch(
        self,
        items: Iterable[Decoded],
        seen: set[str],
        conn: AsyncConnection | None,
        *,
        isolate: bool = True,
    ) -> tuple[list[str], Sequence[OutgoingRecord]]:
        """Handle the commands of ``items`` not in ``seen`` (which grows by them).

        Returns:
            The message ids handled, and the outgoing records (replies and dead letters)
            as the interceptor returned them.
        """
        handled: list[str] = []
        outgoing: list[OutgoingRecord] = []
        for item in items:
            if isinstance(item, OutgoingRecord):
                outgoing.append(item)
                continue
            message_id = str(item.envelope.message_id)
            if message_id in seen:
                # Already handled; its reply was sent (or is in the outbox) already.
                log.info("%s: duplicate command %s skipped", self.participant, message_id)
                continue
            seen.add(message_id)
            handled.append(message_id)
            reply = await self.handle(item, conn, isolate=isolate)
            if reply is not None:
                outgoing.append(reply)
        return handled, await self.interceptor(outgoing)

    async def handle(
        self, item: Command, conn: AsyncConnection | None, *, isolate: bool = True
    ) -> OutgoingRecord | None:
        """Run the handler and build its reply inside the command's scope."""
        with self.scope(item.envelope, item.record):
            return await self._handle_in_scope(item, conn, isolate=isolate)

    async def _handle_in_scope(
        self, item: Command, conn: AsyncConnection | None, *, isolate: bool
    ) -> OutgoingRecord | None:
        """Run the handler and build its reply.

        Never raises for a handler's failure, except without ``isolate`` (no savepoint
        to roll back to): then it raises :class:`Isolate` for the batch to be redone.
        """
        body: StepSucceeded | StepFailed
        if item.invalid is not None:
            return self._reply(
                item, StepFailed(code=INVALID_COMMAND, message=item.invalid, retriable=False)
            )
        try:
            result = await self._invoke(item, conn, isolate=isolate)
        except Isolate:
            raise
        except ParticipantError as exc:
            body = StepFailed(
                code=exc.code,
                message=exc.message,
                retriable=exc.retriable,
                retry_after_ms=exc.retry_after_ms,
            )
        except Exception as exc:
            if conn is not None and classify(exc) is StoreUnavailable:
                # The database went away under the handler: not the handler's failure.
                # The batch fails as a whole (its transaction is gone) and is retried.
                raise StoreUnavailable(
                    f"{self.participant}: the database failed under the handler of"
                    f" {item.envelope.type}: {type(exc).__name__}: {exc}"[:500]
                ) from exc
            log.exception("%s: handler of %s raised", self.participant, item.envelope.type)
            body = StepFailed(
                code=HANDLER_EXCEPTION, message=f"{type(exc).__name__}: {exc}", retriable=True
            )
        else:
            if result is NO_REPLY:
                return None
            try:
                body = StepSucceeded(output=_output(result))
                return self._reply(item, body)
            except (ValueError, TypeError) as exc:
                body = StepFailed(code="handler.bad_output", message=f"{type(exc).__name__}: {exc}")
        return self._reply(item, body)

    async def _invoke(
        self, item: Command, conn: AsyncConnection | None, *, isolate: bool
    ) -> HandlerResult:
        ctx = CommandContext(
            envelope=item.envelope,
            participant=self.participant,
            topic=item.record.topic,
            partition=item.record.partition,
            offset=item.record.offset,
            headers=tuple(item.record.headers or ()),
            connection=conn,
        )
        if conn is None:
            return await item.registration.handler(item.command, ctx)
        if not isolate:
            try:
                return await item.registration.handler(item.command, ctx)
            except Exception as exc:
                raise Isolate from exc
        async with conn.begin_nested():  # a failing handler rolls back only its writes
            return await item.registration.handler(item.command, ctx)

    def _reply(self, item: Command, body: StepSucceeded | StepFailed) -> OutgoingRecord:
        envelope = reply_envelope(item.envelope, body)
        return OutgoingRecord(
            topic=self.replies_topic,
            key=saga_key(envelope),
            value=envelope.to_bytes(),
            headers=tuple(self.headers(tuple(item.record.headers or ()))),
            row_id=str(envelope.message_id),
            envelope=envelope,
            shard=item.record.partition,
        )


def _output(result: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return dict(result)
