"""The fault injector makes clients fail the way AWS does, and leaves the stream as AWS would."""

from __future__ import annotations

import contextlib
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from kinesis_eo.errors import (
    AwsCallError,
    ConnectionFailedError,
    IteratorExpiredError,
    ThrottledError,
    translate_aws_error,
)
from kinesis_eo.testing.backends import MotoServer
from kinesis_eo.testing.faults import (
    ANY_OPERATION,
    FaultInjector,
    FaultKind,
    NextCalls,
    NthCall,
    Probability,
    injected_entries,
)
from kinesis_eo.testing.lambda_esm import read_stream

REGION = "us-east-1"
STREAM = "faults"


def make_stream(client: Any, name: str = STREAM, shards: int = 1) -> None:
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )


def read_all(client: Any, name: str = STREAM) -> list[bytes]:
    """Every record's data in the stream, shard after shard."""
    return [record.data for record in read_stream(client, name)]


def entries(count: int, prefix: str = "e") -> list[dict[str, Any]]:
    return [{"Data": f"{prefix}{i}".encode(), "PartitionKey": f"pk{i}"} for i in range(count)]


@pytest.fixture
def stream(kinesis: Any) -> Any:
    make_stream(kinesis)
    return kinesis


# --- error responses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "translated"),
    [
        ("ProvisionedThroughputExceededException", ThrottledError),
        ("ThrottlingException", ThrottledError),
        ("LimitExceededException", ThrottledError),
        ("KMSThrottlingException", ThrottledError),
        ("InternalFailure", AwsCallError),
    ],
)
def test_error_response_raises_the_modeled_error_and_nothing_is_stored(
    stream: Any, code: str, translated: type[Exception]
) -> None:
    faults = FaultInjector().attach(stream)
    faults.fail("PutRecord", code)

    with pytest.raises(ClientError) as caught:
        stream.put_record(StreamName=STREAM, Data=b"x", PartitionKey="p")

    modeled = getattr(stream.exceptions, code, ClientError)
    assert type(caught.value) is modeled
    assert caught.value.response["Error"]["Code"] == code
    status = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == (500 if code == "InternalFailure" else 400)
    error = translate_aws_error(caught.value, resource="s", action="a")
    assert isinstance(error, translated)
    assert error.retryable
    assert read_all(stream) == []
    assert faults.injected == {FaultKind.ERROR_RESPONSE: 1}


def test_expired_iterator_on_get_records(stream: Any) -> None:
    stream.put_record(StreamName=STREAM, Data=b"x", PartitionKey="p")
    iterator = stream.get_shard_iterator(
        StreamName=STREAM, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    faults = FaultInjector().attach(stream)
    faults.fail("GetRecords", "ExpiredIteratorException", schedule=NextCalls(1))

    with pytest.raises(stream.exceptions.ExpiredIteratorException) as caught:
        stream.get_records(ShardIterator=iterator)
    assert isinstance(
        translate_aws_error(caught.value, resource="s", action="GetRecords"), IteratorExpiredError
    )
    # The rule is spent: the same iterator works again, as a fresh one would.
    assert [r["Data"] for r in stream.get_records(ShardIterator=iterator)["Records"]] == [b"x"]


# --- connection errors ----------------------------------------------------------------------


def test_refused_connection_sends_nothing(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.disconnect("PutRecords")

    with pytest.raises(EndpointConnectionError) as caught:
        stream.put_records(StreamName=STREAM, Records=entries(3))

    assert "kinesis.us-east-1.amazonaws.com" in str(caught.value)
    assert isinstance(
        translate_aws_error(caught.value, resource="s", action="a"), ConnectionFailedError
    )
    assert read_all(stream) == []
    assert faults.injected == {FaultKind.CONNECTION_REFUSED: 1}


def test_lost_connection_after_send_stores_the_records(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.disconnect("PutRecords", after_send=True)

    with pytest.raises(ConnectionClosedError):
        stream.put_records(StreamName=STREAM, Records=entries(3))

    # The caller saw a failure, but the stream took the records: a retry would duplicate them.
    assert read_all(stream) == [b"e0", b"e1", b"e2"]
    assert faults.injected == {FaultKind.CONNECTION_LOST: 1}


# --- partial PutRecords failures --------------------------------------------------------------


def test_dropped_entries_are_not_stored_and_reported_at_their_index(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.drop_entries(entries=[1, 3], code="InternalFailure", schedule=NextCalls(1))
    sent = entries(5)

    response = stream.put_records(StreamName=STREAM, Records=sent)

    assert response["FailedRecordCount"] == 2
    codes = [r.get("ErrorCode") for r in response["Records"]]
    assert codes == [None, "InternalFailure", None, "InternalFailure", None]
    assert all("ErrorMessage" in response["Records"][i] for i in (1, 3))
    assert all("SequenceNumber" in response["Records"][i] for i in (0, 2, 4))
    assert read_all(stream) == [b"e0", b"e2", b"e4"]
    assert sent == entries(5), "the caller's request must not be changed"
    assert faults.injected == {FaultKind.ENTRY_NOT_STORED: 2}
    assert [e["Data"] for e in injected_entries(faults.log, FaultKind.ENTRY_NOT_STORED)] == [
        b"e1",
        b"e3",
    ]


def test_dropping_every_entry_sends_no_request(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.drop_entries(entries=1.0, schedule=NextCalls(1))
    sends: list[str] = []
    stream.meta.events.register("before-send.kinesis", lambda **kw: sends.append("sent"))

    response = stream.put_records(StreamName=STREAM, Records=entries(3))

    assert response["FailedRecordCount"] == 3
    assert {r["ErrorCode"] for r in response["Records"]} == {
        "ProvisionedThroughputExceededException"
    }
    assert sends == []
    assert read_all(stream) == []


def test_stored_entries_reported_failed_are_in_the_stream(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.fail_stored_entries(entries=[0, 2], schedule=NextCalls(1))

    response = stream.put_records(StreamName=STREAM, Records=entries(3))

    assert response["FailedRecordCount"] == 2
    assert [r.get("ErrorCode") for r in response["Records"]] == [
        "ProvisionedThroughputExceededException",
        None,
        "ProvisionedThroughputExceededException",
    ]
    assert read_all(stream) == [b"e0", b"e1", b"e2"]

    # The retry a producer makes stores them a second time: the classic inbound duplicate.
    retry = [entries(3)[0], entries(3)[2]]
    assert stream.put_records(StreamName=STREAM, Records=retry)["FailedRecordCount"] == 0
    assert sorted(read_all(stream)) == [b"e0", b"e0", b"e1", b"e2", b"e2"]
    assert faults.injected == {FaultKind.ENTRY_STORED_REPORTED_FAILED: 2}


def test_random_partial_failures_keep_the_response_consistent(stream: Any) -> None:
    faults = FaultInjector(seed=3).attach(stream)
    faults.drop_entries(entries=0.3, schedule=Probability(0.5))
    faults.fail_stored_entries(entries=0.3)
    stored: list[bytes] = []
    for call in range(20):
        sent = entries(10, prefix=f"c{call}-")
        response = stream.put_records(StreamName=STREAM, Records=sent)
        failed = [i for i, r in enumerate(response["Records"]) if "ErrorCode" in r]
        assert response["FailedRecordCount"] == len(failed)
        assert len(response["Records"]) == len(sent)
        stored.extend(sent[i]["Data"] for i, r in enumerate(response["Records"]) if "ShardId" in r)

    dropped = {e["Data"] for e in injected_entries(faults.log, FaultKind.ENTRY_NOT_STORED)}
    flipped = {
        e["Data"] for e in injected_entries(faults.log, FaultKind.ENTRY_STORED_REPORTED_FAILED)
    }
    in_stream = read_all(stream)
    assert dropped
    assert flipped
    assert not dropped & set(in_stream)
    assert flipped <= set(in_stream)
    assert sorted(in_stream) == sorted(stored + sorted(flipped))


# --- schedules ----------------------------------------------------------------------------------


def put_outcomes(client: Any, calls: int) -> list[str]:
    """'ok' or the error code, for ``calls`` single-record puts."""
    outcomes = []
    for i in range(calls):
        try:
            client.put_record(StreamName=STREAM, Data=b"%d" % i, PartitionKey="p")
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    return outcomes


def test_nth_call_counts_from_when_the_rule_was_added(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    put_outcomes(stream, 2)
    faults.fail("PutRecord", "ThrottlingException", schedule=NthCall(2, 4))
    t = "ThrottlingException"
    assert put_outcomes(stream, 5) == ["ok", t, "ok", t, "ok"]
    # The log numbers calls since the injector was attached.
    assert [i.call_number for i in faults.log] == [4, 6]


def test_next_calls_then_the_rule_is_spent(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.fail("PutRecord", "ThrottlingException", schedule=NextCalls(2))
    assert put_outcomes(stream, 4) == ["ThrottlingException", "ThrottlingException", "ok", "ok"]


def test_a_disabled_rule_injects_nothing(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    rule = faults.throttle("PutRecord")
    assert put_outcomes(stream, 1) == ["ProvisionedThroughputExceededException"]
    rule.disable()
    assert put_outcomes(stream, 2) == ["ok", "ok"]
    rule.enable()
    assert put_outcomes(stream, 1) == ["ProvisionedThroughputExceededException"]
    faults.remove(rule)
    assert put_outcomes(stream, 1) == ["ok"]


def test_the_first_matching_rule_wins(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.fail("PutRecord", "ThrottlingException", schedule=NthCall(2))
    faults.fail(ANY_OPERATION, "InternalFailure", schedule=NextCalls(2))
    assert put_outcomes(stream, 4) == [
        "InternalFailure",
        "ThrottlingException",
        "InternalFailure",
        "ok",
    ]


def test_detach_stops_injection_and_other_clients_are_untouched(stream: Any) -> None:
    faults = FaultInjector().attach(stream)
    faults.throttle("PutRecord")
    assert put_outcomes(stream, 1) == ["ProvisionedThroughputExceededException"]
    # Each client has its own copy of the session's emitter, so hooks stay on one client.
    other = boto3.client("kinesis", region_name=REGION)
    assert put_outcomes(other, 1) == ["ok"]
    faults.detach(stream)
    assert put_outcomes(stream, 1) == ["ok"]
    assert faults.calls["PutRecord"] == 1


def schedule_of(client: Any, seed: int) -> list[tuple[int, FaultKind, tuple[int, ...]]]:
    faults = FaultInjector(seed=seed).attach(client)
    faults.throttle("PutRecords", schedule=Probability(0.2))
    faults.drop_entries(entries=0.2, schedule=Probability(0.5))
    faults.fail_stored_entries(entries=0.2)
    for call in range(30):
        with contextlib.suppress(ClientError):
            client.put_records(StreamName=STREAM, Records=entries(8, prefix=f"{call}-"))
    faults.detach(client)
    return [(i.call_number, i.kind, i.indexes) for i in faults.log]


def test_the_same_seed_gives_the_same_faults(stream: Any) -> None:
    first = schedule_of(stream, seed=42)
    again = schedule_of(stream, seed=42)
    other = schedule_of(stream, seed=43)

    assert first == again
    assert first != other
    assert {kind for _, kind, _ in first} == {
        FaultKind.ERROR_RESPONSE,
        FaultKind.ENTRY_NOT_STORED,
        FaultKind.ENTRY_STORED_REPORTED_FAILED,
    }


def test_rule_arguments_are_checked() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="400"):
        faults.fail("PutRecord", "Whatever", status_code=200)
    with pytest.raises(TypeError, match="sequence"):
        faults.drop_entries(entries=1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        faults.drop_entries(entries=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Probability(-0.1)
    with pytest.raises(ValueError, match="start at 1"):
        NthCall(0)
    with pytest.raises(ValueError, match="at least 1"):
        NextCalls(0)


# --- asyncio clients (aiobotocore or aioboto3) over the moto HTTP server ----------------------


@pytest.mark.asyncio
async def test_an_asyncio_client_gets_every_fault_kind(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    name = "faults-async"
    sync = moto_server_reset.client("kinesis")
    make_stream(sync, name)
    async with async_client("kinesis", **moto_server_reset.client_kwargs()) as client:
        faults = FaultInjector(seed=1).attach(client)

        throttle = faults.throttle("PutRecords", schedule=NextCalls(1))
        with pytest.raises(client.exceptions.ProvisionedThroughputExceededException):
            await client.put_records(StreamName=name, Records=entries(2, "t"))
        throttle.disable()

        faults.disconnect("PutRecords", schedule=NextCalls(1))
        with pytest.raises(EndpointConnectionError):
            await client.put_records(StreamName=name, Records=entries(2, "r"))

        faults.disconnect("PutRecords", schedule=NextCalls(1), after_send=True)
        with pytest.raises(ConnectionClosedError):
            await client.put_records(StreamName=name, Records=entries(2, "l"))

        faults.drop_entries(entries=[0], schedule=NextCalls(1))
        faults.fail_stored_entries(entries=[2], schedule=NthCall(2))
        dropped = await client.put_records(StreamName=name, Records=entries(3, "d"))
        flipped = await client.put_records(StreamName=name, Records=entries(3, "f"))

    assert [r.get("ErrorCode") is not None for r in dropped["Records"]] == [True, False, False]
    assert [r.get("ErrorCode") is not None for r in flipped["Records"]] == [False, False, True]
    assert dropped["FailedRecordCount"] == flipped["FailedRecordCount"] == 1
    assert read_all(sync, name) == [b"l0", b"l1", b"d1", b"d2", b"f0", b"f1", b"f2"]
    assert faults.injected == {
        FaultKind.ERROR_RESPONSE: 1,
        FaultKind.CONNECTION_REFUSED: 1,
        FaultKind.CONNECTION_LOST: 1,
        FaultKind.ENTRY_NOT_STORED: 1,
        FaultKind.ENTRY_STORED_REPORTED_FAILED: 1,
    }
