"""Client CPU per record, botocore included, against an endpoint that answers at once.

Every case runs its first pass with real boto3 clients whose requests are
answered by :class:`CannedEndpoint`, a botocore ``before-send`` hook: botocore
builds, validates, serializes and signs each request as it would for AWS, and
parses the canned response as it would AWS's; only the socket is skipped (no
urllib3 send and receive). That is fair to every case alike: each pays its own
requests' building and parsing, and no case waits on a server whose CPU would
be mixed in (a moto in this process would be). The endpoint itself does next
to nothing: writes get ``{}``, reads find nothing (so every record is new), and
``GetRecords`` answers with bodies built before timing; the only request it
reads is the iterator of a ``GetRecords`` (a few hundred bytes of JSON per batch).

botocore's ``Stubber`` would be cheaper still and so flatter every case: it
answers from ``before-call``, after serialization but before any parsing of a
response, so the largest response of all (``GetRecords``) would cost nothing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from _cases import CASES, Env, payload
from botocore.awsrequest import AWSResponse

from kinesis_eo.cli import _aws_clients
from kinesis_eo.cli.run import fewer_collections
from kinesis_eo.envelope import wrap

STREAM = "bench-cpu"
_SEQUENCE_BASE = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
_ARRIVAL = 1_767_225_600.0
_PLACEHOLDER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
# read_only is the read side alone: GetRecords parsed, records decoded, nothing applied.
CPU_CASES = (
    "read_only",
    "watermark",
    "per_record",
    "keyed_watermark",
    "claim",
    "powertools",
    "naive",
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class CannedEndpoint:
    """Answers Kinesis and DynamoDB requests from canned bodies, in this process."""

    def __init__(self, records: int, shards: int, batch: int) -> None:
        self.shards = [f"shardId-{i:012d}" for i in range(shards)]
        per_shard: list[list[dict[str, Any]]] = [[] for _ in range(shards)]
        for index in range(records):
            event_id, data = payload(index)
            per_shard[index % shards].append(
                {
                    "SequenceNumber": str(_SEQUENCE_BASE + index * 1_000_003),
                    "ApproximateArrivalTimestamp": _ARRIVAL,
                    "Data": base64.b64encode(wrap(event_id, data)).decode(),
                    "PartitionKey": f"pk-{index}",
                }
            )
        # (shard index, batch index) -> response body; one past the last batch: caught up.
        self.pages: dict[tuple[int, int], bytes] = {}
        for shard, stored in enumerate(per_shard):
            pages = [stored[i : i + batch] for i in range(0, len(stored), batch)]
            for number, page in enumerate([*pages, []]):
                body = {
                    "Records": page,
                    "NextShardIterator": f"it|{shard}|{number + 1}",
                    "MillisBehindLatest": 0 if number >= len(pages) - 1 else 1000,
                }
                self.pages[(shard, number)] = json.dumps(body).encode()
        self.summary = json.dumps(
            {
                "StreamDescriptionSummary": {
                    "StreamName": STREAM,
                    "StreamARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}",
                    "StreamStatus": "ACTIVE",
                    "RetentionPeriodHours": 24,
                    "StreamCreationTimestamp": _ARRIVAL,
                    "EnhancedMonitoring": [],
                    "OpenShardCount": shards,
                }
            }
        ).encode()
        self.list_shards = json.dumps(
            {
                "Shards": [
                    {
                        "ShardId": shard,
                        "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                        "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                    }
                    for shard in self.shards
                ]
            }
        ).encode()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send", self._answer)
        return client

    @staticmethod
    def operation(request: Any) -> str:
        """The API operation a request is for (``GetRecords``, ``TransactWriteItems``, ...)."""
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        return str(target).rsplit(".", 1)[-1]

    def _answer(self, request: Any, **_: Any) -> AWSResponse:
        operation = self.operation(request)
        if operation == "GetRecords":
            iterator = json.loads(request.body)["ShardIterator"]
            _, shard, number = iterator.split("|")
            body = self.pages[(int(shard), int(number))]
        elif operation == "GetShardIterator":
            shard_id = json.loads(request.body)["ShardId"]
            body = json.dumps({"ShardIterator": f"it|{self.shards.index(shard_id)}|0"}).encode()
        elif operation == "ListShards":
            body = self.list_shards
        elif operation == "DescribeStreamSummary":
            body = self.summary
        elif operation == "Scan":
            body = b'{"Items": [], "Count": 0, "ScannedCount": 0}'
        elif operation == "BatchGetItem":
            body = b'{"Responses": {}, "UnprocessedKeys": {}}'
        else:  # every write succeeds; GetItem finds nothing
            body = b"{}"
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "canned"}
        return AWSResponse(request.url, 200, headers, _Raw(body))


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """The process environment with ``values`` set, as it was again afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def canned_clients(endpoint: CannedEndpoint, product: bool) -> tuple[Any, Any]:
    """Clients answered by ``endpoint``: boto3's defaults, or made as ``kinesis-eo run`` makes them.

    The credentials are placeholders: nothing leaves this process.
    """
    with environ(_PLACEHOLDER_CREDENTIALS):
        if product:
            args = argparse.Namespace(region="us-east-1", endpoint_url=None)
            kinesis, dynamodb = _aws_clients(args, "kinesis", "dynamodb")
        else:
            session = boto3.session.Session(region_name="us-east-1")
            kinesis, dynamodb = session.client("kinesis"), session.client("dynamodb")
    return endpoint.attach(kinesis), endpoint.attach(dynamodb)


def _one_pass(name: str, env: Env) -> float:
    """CPU seconds of one first pass of case ``name`` against the canned endpoint."""
    cls, title = CASES[name]
    case = cls(name, title, env)
    if name == "powertools":
        case.stream_arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"  # type: ignore[attr-defined]
    gc.collect()
    started = time.process_time()
    stats = case.run_pass(1)
    cpu = time.process_time() - started
    if stats.delivered != env.records:
        raise AssertionError(f"canned {name}: {stats.delivered} delivered of {env.records}")
    return cpu


def measure(
    records: int,
    shards: int,
    batch: int,
    names: tuple[str, ...] = CPU_CASES,
    repeat: int = 3,
    product: bool = True,
) -> dict[str, float]:
    """Client CPU µs per record of each case's first pass (best of ``repeat``)."""
    endpoint = CannedEndpoint(records, shards, batch)
    kinesis, dynamodb = canned_clients(endpoint, product)
    if product:
        fewer_collections()  # as ``kinesis-eo run`` sets up its process
    env = Env(kinesis, dynamodb, STREAM, records, batch)
    result: dict[str, float] = {}
    for name in names:
        best = min(_one_pass(name, env) for _ in range(repeat))
        result[name] = round(best / records * 1e6, 1)
    return result


def main() -> None:
    """Prints one kind of clients' CPU per record as JSON (bench/run.py runs this)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--cases", default=",".join(CPU_CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", choices=("boto3", "kinesis-eo-run"), default="kinesis-eo-run")
    args = parser.parse_args()
    names = tuple(n for n in args.cases.split(",") if n)
    product = args.clients == "kinesis-eo-run"
    print(json.dumps(measure(args.records, args.shards, args.batch, names, args.repeat, product)))


if __name__ == "__main__":
    main()
