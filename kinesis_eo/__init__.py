"""kinesis_eo: exactly-once side effects for Amazon Kinesis Data Streams consumers."""

from kinesis_eo.records import HashKeyRange, Position, Record

__all__ = ["HashKeyRange", "Position", "Record"]
__version__ = "0.1.0.dev0"
