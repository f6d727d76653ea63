"""Local AWS back-ends for tests, demos, the chaos harness and benchmarks.

Two emulators, because neither covers the whole of what kinesis_eo depends on
(see "Test back-ends" in docs/design.md):

- :class:`MotoServer`: moto's HTTP server in a thread of this process (or in a
  child process, for a benchmark that times client and emulator apart). DynamoDB
  conditions and transactions, and the only way to give aiobotocore a moto.
- :class:`KinesisMock`: the kinesis-mock emulator (npm ``kinesis-local``) in a
  child process. Real 56-digit sequence numbers, resharding that closes the
  parent shard, iterator expiry, ListShards pagination in the AWS form.
- :class:`EfoBridge`: a loopback proxy in front of kinesis-mock that adds the
  ``initial-response`` event its SubscribeToShard streams lack (and nothing else).

Both listen on 127.0.0.1 only and hand out clients with fixed fake credentials,
so they work before (and without) any fixture that sets AWS environment
variables, and a stray ``AWS_PROFILE`` cannot break or redirect them.
"""

from kinesis_eo.testing.backends.common import FAKE_CREDENTIALS, REGION, free_port
from kinesis_eo.testing.backends.efo_bridge import EfoBridge
from kinesis_eo.testing.backends.kinesis_mock import (
    FAST_DURATIONS,
    KINESIS_MOCK_MAIN_ENV,
    KinesisMock,
    find_kinesis_mock,
    find_node,
)
from kinesis_eo.testing.backends.moto import MotoServer, serialize_moto_requests

__all__ = [
    "FAKE_CREDENTIALS",
    "FAST_DURATIONS",
    "KINESIS_MOCK_MAIN_ENV",
    "REGION",
    "EfoBridge",
    "KinesisMock",
    "MotoServer",
    "find_kinesis_mock",
    "find_node",
    "free_port",
    "serialize_moto_requests",
]
