"""The test back-ends themselves: where they listen and what they really do.

The rest of the suite trusts these facts (real sequence numbers and AWS-form
pagination on kinesis-mock, conditions over HTTP on moto): if an upgrade of
either emulator changes one, these fail first and say which.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kinesis_eo.errors import ConfigurationError
from kinesis_eo.harness import moto_transactions
from kinesis_eo.testing.backends import (
    KINESIS_MOCK_MAIN_ENV,
    KinesisMock,
    MotoServer,
    find_kinesis_mock,
)
from tests.streams import new_stream, wait_active


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket in LISTEN state on ``port``, from /proc."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(_decode_proc_address(address))
    return found


def _decode_proc_address(hex_address: str) -> str:
    # /proc/net/tcp prints each 32-bit word of the address in host byte order.
    raw = b"".join(
        int(hex_address[i : i + 8], 16).to_bytes(4, sys.byteorder)
        for i in range(0, len(hex_address), 8)
    )
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw)


def accepts_connection(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
@pytest.mark.parametrize("backend", ["kinesis_mock", "moto_server"])
def test_http_backend_listens_on_127_0_0_1_only(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server: Any = request.getfixturevalue(backend)
    ports = [server.plain_port, server.tls_port] if backend == "kinesis_mock" else [server.port]
    for port in ports:
        assert listening_addresses(port) == {"127.0.0.1"}, f"port {port}"
        assert accepts_connection("127.0.0.1", port)
        # All of 127/8 reaches this host, so a socket bound to 0.0.0.0 would answer here.
        assert not accepts_connection("127.0.0.2", port), f"port {port} answers on 127.0.0.2"


def test_kinesis_mock_sequence_numbers_have_56_digits_and_grow(kinesis_mock: KinesisMock) -> None:
    client = kinesis_mock.client()
    stream = new_stream(client, shards=1)
    numbers = [
        client.put_record(StreamName=stream, Data=f"{i}".encode(), PartitionKey="k")[
            "SequenceNumber"
        ]
        for i in range(12)
    ]
    assert all(len(n) == 56 and n.isdigit() for n in numbers), numbers
    assert [int(n) for n in numbers] == sorted(int(n) for n in set(numbers))
    # Fixed width: text order is numeric order, unlike moto's "9" > "10".
    assert numbers == sorted(numbers)

    shard_id = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    read = client.get_records(ShardIterator=iterator, Limit=100)["Records"]
    assert [r["SequenceNumber"] for r in read] == numbers


def test_kinesis_mock_list_shards_paginates_in_the_aws_form(kinesis_mock: KinesisMock) -> None:
    client = kinesis_mock.client()
    stream = new_stream(client, shards=5)

    page = client.list_shards(StreamName=stream, MaxResults=2)
    pages = [page]
    while "NextToken" in page:
        # The AWS form: the token alone, without StreamName.
        page = client.list_shards(NextToken=page["NextToken"], MaxResults=2)
        pages.append(page)

    assert [len(p["Shards"]) for p in pages] == [2, 2, 1]
    shard_ids = [s["ShardId"] for p in pages for s in p["Shards"]]
    assert len(set(shard_ids)) == 5


def test_kinesis_mock_split_closes_the_parent_and_names_its_children(
    kinesis_mock: KinesisMock,
) -> None:
    client = kinesis_mock.client()
    stream = new_stream(client, shards=1)
    parent = client.list_shards(StreamName=stream)["Shards"][0]
    client.put_record(StreamName=stream, Data=b"before", PartitionKey="k")
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=parent["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    low = int(parent["HashKeyRange"]["StartingHashKey"])
    high = int(parent["HashKeyRange"]["EndingHashKey"])
    client.split_shard(
        StreamName=stream,
        ShardToSplit=parent["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    wait_active(client, stream)

    response = client.get_records(ShardIterator=iterator)
    assert [r["Data"] for r in response["Records"]] == [b"before"]
    if "ChildShards" not in response:
        response = client.get_records(ShardIterator=response["NextShardIterator"])
    assert "NextShardIterator" not in response
    children = {c["ShardId"] for c in response["ChildShards"]}
    assert len(children) == 2
    assert all(c["ParentShards"] == [parent["ShardId"]] for c in response["ChildShards"])


@pytest.mark.asyncio
async def test_an_asyncio_conditional_put_fails_over_the_moto_server(
    moto_server_reset: MotoServer, async_client: Any
) -> None:
    async with async_client("dynamodb", **moto_server_reset.client_kwargs()) as dynamodb:
        await dynamodb.create_table(
            TableName="ledger",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        item = {"pk": {"S": "shard-0"}, "watermark": {"S": "0001"}}
        await dynamodb.put_item(
            TableName="ledger", Item=item, ConditionExpression="attribute_not_exists(pk)"
        )
        with pytest.raises(ClientError) as failed:
            await dynamodb.put_item(
                TableName="ledger",
                Item={**item, "watermark": {"S": "0002"}},
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        assert failed.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
        assert failed.value.response["Item"] == item
        stored = await dynamodb.get_item(TableName="ledger", Key={"pk": {"S": "shard-0"}})
        assert stored["Item"] == item


def test_moto_server_reset_deletes_everything(moto_server_reset: MotoServer) -> None:
    dynamodb = moto_server_reset.client("dynamodb")
    dynamodb.create_table(
        TableName="gone",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert dynamodb.list_tables()["TableNames"] == ["gone"]
    moto_server_reset.reset()
    assert dynamodb.list_tables()["TableNames"] == []


def test_botocore_client_on_in_process_moto_puts_and_reads_a_record(kinesis: Any) -> None:
    kinesis.create_stream(StreamName="in-process", ShardCount=1)
    wait_active(kinesis, "in-process")
    kinesis.put_record(StreamName="in-process", Data=b"hello", PartitionKey="k")
    shard_id = kinesis.list_shards(StreamName="in-process")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName="in-process", ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    assert [r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]] == [b"hello"]


def test_find_kinesis_mock_says_to_run_npm_ci_when_it_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KINESIS_MOCK_MAIN_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="npm ci"):
        find_kinesis_mock(search_from=[tmp_path])


def test_find_kinesis_mock_says_node_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = tmp_path / "node_modules" / "kinesis-local" / "main.js"
    main.parent.mkdir(parents=True)
    main.write_text("")
    monkeypatch.delenv(KINESIS_MOCK_MAIN_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigurationError, match=r"`node`"):
        find_kinesis_mock(search_from=[tmp_path / "node_modules"])


def test_find_kinesis_mock_prefers_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = tmp_path / "elsewhere.js"
    main.write_text("")
    monkeypatch.setenv(KINESIS_MOCK_MAIN_ENV, str(main))
    assert find_kinesis_mock() == main.resolve()
    monkeypatch.setenv(KINESIS_MOCK_MAIN_ENV, str(tmp_path / "missing.js"))
    with pytest.raises(ConfigurationError, match=KINESIS_MOCK_MAIN_ENV):
        find_kinesis_mock()


def test_kinesis_mock_that_fails_to_start_reports_its_output(tmp_path: Path) -> None:
    main = tmp_path / "main.js"
    main.write_text("console.error('emulator says: cannot read server.json'); process.exit(3);\n")
    mock = KinesisMock(main=main, start_timeout=20)
    with pytest.raises(ConfigurationError) as failed:
        mock.start()
    message = str(failed.value)
    assert "exited with status 3" in message
    assert "emulator says: cannot read server.json" in message
    assert mock.pid is None
    assert mock.log_path is not None
    mock.stop()
    assert mock.log_path is None


def test_kinesis_mock_stops_its_process_promptly() -> None:
    mock = KinesisMock().start()
    pid = mock.pid
    assert pid is not None
    mock.client().list_streams()
    started = time.monotonic()
    mock.stop()
    assert time.monotonic() - started < 5
    assert not accepts_connection("127.0.0.1", mock.plain_port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def stream_keys_seen_across_a_canceled_transaction(server: MotoServer) -> list[Any]:
    """Keys a stream iterator from before a canceled transaction sees of the commit after it.

    Stock moto swaps in a copied table on cancellation, stranding the iterator
    on the old one (it keeps the canceled write and misses the later one); the
    undo-log transactions keep the table, so the iterator sees the later write.
    """
    dynamodb, streams = server.client("dynamodb"), server.client("dynamodbstreams")
    dynamodb.create_table(
        TableName="accounts",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    arn = dynamodb.describe_table(TableName="accounts")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
    )["ShardIterator"]

    def put(key: str, condition: str = "attribute_not_exists(pk)") -> dict[str, Any]:
        item = {"pk": {"S": key}}
        return {"Put": {"TableName": "accounts", "Item": item, "ConditionExpression": condition}}

    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[put("canceled"), put("missing", "attribute_exists(pk)")]
        )
    dynamodb.transact_write_items(TransactItems=[put("committed")])
    records = streams.get_records(ShardIterator=iterator)["Records"]
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]


@pytest.mark.parametrize(("undo_log", "seen"), [(True, ["committed"]), (False, ["canceled"])])
def test_moto_server_in_a_child_process_serves_with_the_transactions_asked_for(
    undo_log: bool, seen: list[str]
) -> None:
    server = MotoServer(process=True, undo_log_transactions=undo_log).start()
    try:
        pid = server.pid
        assert pid is not None
        assert pid != os.getpid()
        assert stream_keys_seen_across_a_canceled_transaction(server) == seen
        server.reset()
        assert server.client("dynamodb").list_tables()["TableNames"] == []
    finally:
        server.stop()
    assert server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_threaded_moto_server_installs_undo_log_transactions_only_while_it_runs() -> None:
    assert not moto_transactions.installed()
    with MotoServer(undo_log_transactions=True) as server:
        assert moto_transactions.installed()
        assert stream_keys_seen_across_a_canceled_transaction(server) == ["committed"]
        server.reset()  # its state is this process's moto, which other tests share
    assert not moto_transactions.installed()
