"""KPL aggregation: many user records in one Kinesis record, and back.

The Kinesis Producer Library packs user records into one Kinesis record as::

    MAGIC (f3 89 9a c2) + protobuf AggregatedRecord + MD5 digest of the protobuf bytes

    message AggregatedRecord {
      repeated string partition_key_table = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records = 3;
    }
    message Record {
      required uint64 partition_key_index = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes data = 3;
      repeated Tag tags = 4;
    }
    message Tag { required string key = 1; optional string value = 2; }

The protobuf reader and writer here are a few dozen lines so that the package
needs no protobuf runtime; tags and unknown fields are skipped.

Corrupt aggregates. When the bytes start with the magic but are not a valid
aggregate (too short, MD5 mismatch, protobuf that does not parse, a missing
required field, a table index out of range, an explicit hash key that is not a
128-bit decimal, or no user records at all), :func:`deaggregate` delivers the
Kinesis record whole and unchanged, with ``deaggregation_error`` set to a short
reason. It never raises for bad bytes. The KCL also passes such bytes through
as a plain record, because a user payload may legitimately start with those
four bytes; the flag is added so that a failure policy can dead-letter the
record instead of it vanishing or being half-delivered. An aggregate with no
user records counts as corrupt for the same reason: delivering nothing would
make a stored record disappear without a trace (the KPL never writes one).

Aggregate bombs. A 1 MiB aggregate of empty user records unpacks into some
175,000 records (about 40 MiB of Python objects), a 10 MiB one into ten times
that. :class:`AggregateLimits` caps the user records and bytes one aggregate
may unpack into, and those of a whole batch; decoding stops at the cap, it
does not unpack everything and count afterwards. An aggregate over its own cap
is delivered whole with ``deaggregation_error`` set, like a corrupt one, so
the sinks dead-letter it with its payload. An aggregate that fits its own cap
but not what is left of the batch's comes back with ``batch_full`` set and no
records: the reader ends the batch before it and reads it again first thing
in the next one.
"""

from kinesis_eo.aggregation.decoder import Deaggregated, deaggregate, deaggregate_all
from kinesis_eo.aggregation.encoder import AggregatedRecord, UserRecord, aggregate
from kinesis_eo.aggregation.limits import DEFAULT_LIMITS, MIB, AggregateLimits, DecodeBudget
from kinesis_eo.aggregation.wire import MAGIC

__all__ = [
    "DEFAULT_LIMITS",
    "MAGIC",
    "MIB",
    "AggregateLimits",
    "AggregatedRecord",
    "Deaggregated",
    "DecodeBudget",
    "UserRecord",
    "aggregate",
    "deaggregate",
    "deaggregate_all",
]
