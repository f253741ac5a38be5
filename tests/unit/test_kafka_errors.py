"""aiokafka exceptions become saga.errors through one mapping table."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import errors as kafka_errors

from saga import errors
from saga.kafka import KAFKA_ERROR_MAP, map_kafka_error, translate_kafka_errors


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (kafka_errors.ProducerFenced(), errors.ProducerFenced),
        (kafka_errors.InvalidProducerEpoch(), errors.ProducerFenced),
        (kafka_errors.KafkaConnectionError("connection refused"), errors.TransportError),
        (kafka_errors.NodeNotReadyError("node 1"), errors.TransportError),
        (kafka_errors.RequestTimedOutError(), errors.TransportError),
        (kafka_errors.KafkaTimeoutError(), errors.TransportError),
        (kafka_errors.TopicAuthorizationFailedError(), errors.TransportError),
        (kafka_errors.UnknownTopicOrPartitionError(), errors.TransportError),
    ],
)
def test_aiokafka_errors_are_translated_with_the_cause_kept(
    raised: Exception, expected: type[errors.TransportError]
) -> None:
    with pytest.raises(expected) as info, translate_kafka_errors("commit transaction"):
        raise raised
    assert type(info.value) is expected, "the most specific saga error, not a parent"
    assert info.value.__cause__ is raised
    assert info.value.message.startswith(f"commit transaction: {type(raised).__name__}")


def test_fenced_is_final_while_transport_errors_are_retriable() -> None:
    assert errors.TransportError.retriable is True
    assert errors.ProducerFenced.retriable is False
    fenced = map_kafka_error(kafka_errors.InvalidProducerEpoch())
    assert isinstance(fenced, errors.ProducerFenced)
    assert not fenced.retriable


def test_the_former_spelling_retryable_still_reads_and_declares_retriable() -> None:
    assert errors.TransportError.retryable is True
    assert errors.ProducerFenced("fenced").retryable is False

    class Former(errors.SagaError):
        retryable = True

    class Again(Former):
        retriable = False

    assert Former.retriable is True
    assert Former("x").retryable is True
    assert Again.retryable is False


def test_specific_rows_come_before_their_parents() -> None:
    """First match wins, so no row may be shadowed by an earlier, more general one."""
    for i, (later, _) in enumerate(KAFKA_ERROR_MAP):
        for earlier, _ in KAFKA_ERROR_MAP[:i]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier}"
    assert KAFKA_ERROR_MAP[-1][0] is kafka_errors.KafkaError


def test_foreign_exceptions_pass_through_untouched() -> None:
    original = ValueError("not kafka")
    with pytest.raises(ValueError, match="not kafka") as info, translate_kafka_errors():
        raise original
    assert info.value is original
    assert map_kafka_error(original) is None


def test_nothing_raised_means_nothing_translated() -> None:
    with translate_kafka_errors():
        pass


async def test_a_cancelled_error_the_client_lets_out_becomes_a_transport_error() -> None:
    # aiokafka cancels its own futures when a connection dies (even while a client
    # starts); nobody cancelled the caller, so it is a transient Kafka failure.
    inner = asyncio.get_running_loop().create_future()
    inner.cancel()
    with (
        pytest.raises(
            errors.TransportError, match="start the producer: the Kafka client cancelled"
        ),
        translate_kafka_errors("start the producer"),
    ):
        await inner


async def test_a_real_cancellation_of_the_caller_still_cancels() -> None:
    async def waits() -> None:
        with translate_kafka_errors("poll"):
            await asyncio.sleep(10)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_close_quietly_gives_up_on_a_client_that_ignores_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import saga.kafka._clients as clients

    class Stubborn:
        stopped = False

        async def stop(self) -> None:
            while not self.stopped:  # swallows every cancellation, as a stuck client did
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)

    monkeypatch.setattr(clients, "CLOSE_TIMEOUT_S", 0.2)
    client = Stubborn()
    async with asyncio.timeout(5):
        await clients.close_quietly(client)  # type: ignore[arg-type]
    client.stopped = True  # let the task left behind end
    await asyncio.sleep(0.1)


async def test_an_admin_call_on_a_cluster_without_a_controller_is_a_retriable_transport_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Right after a broker restart aiokafka's admin client reads the controller off
    # metadata that has none yet and raises AttributeError: a relay must retry, not stop.
    import saga.kafka._clients as clients

    closed: list[bool] = []

    class NoController:
        def __init__(self, **_: object) -> None:
            pass

        async def start(self) -> None:
            pass

        async def create_topics(self, *_: object, **__: object) -> None:
            raise AttributeError("'NoneType' object has no attribute 'nodeId'")

        async def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(clients, "AIOKafkaAdminClient", NoController)
    spec = clients.TopicSpec(name="saga.replies", partitions=1)
    with pytest.raises(errors.TransportError) as info:
        await clients.ensure_topics("127.0.0.1:1", [spec])
    assert info.value.retriable
    assert info.value.message.startswith("create topics: the Kafka cluster has no controller")
    assert isinstance(info.value.__cause__, AttributeError)
    assert closed == [True], "the admin client is closed on the way out"


def test_an_assertion_inside_aiokafka_is_a_retriable_transport_error() -> None:
    # aiokafka checks the cluster's state with assert: after a broker resumes, starting a
    # producer can fail "Did we not perform bootstrap?" until metadata lists a broker.
    module: dict[str, object] = {"__name__": "aiokafka.client"}
    # A function whose frame is aiokafka's, as in the real failure.
    exec(
        compile(
            "def coordinator_lookup():\n"
            "    node_id = None\n"
            "    assert node_id is not None, 'Did we not perform bootstrap?'\n",
            "aiokafka/client.py",
            "exec",
        ),
        module,
    )
    lookup = module["coordinator_lookup"]
    assert callable(lookup)
    with pytest.raises(errors.TransportError) as info, translate_kafka_errors("connect relay"):
        lookup()
    assert info.value.retriable
    assert info.value.message == (
        "connect relay: the Kafka client is not ready (Did we not perform bootstrap?); retry"
    )
    assert isinstance(info.value.__cause__, AssertionError)


def test_an_assertion_of_our_own_code_is_not_translated() -> None:
    with pytest.raises(AssertionError), translate_kafka_errors("commit transaction"):
        raise AssertionError("a bug of ours")
