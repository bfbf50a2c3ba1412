"""Durable storage: the write-ahead log and its records. Import from here.

`journeyd.store.wal` holds the segment format, writer and reader; `journeyd.store.records`
the record kinds the log carries.
"""

from journeyd.store.records import (
    ConfigRecord,
    EventRecord,
    IntentRecord,
    OutcomeRecord,
    Record,
    TickRecord,
    decode_record,
    encode_record,
)
from journeyd.store.wal import (
    WalWriter,
    find_torn_tail,
    last_seq,
    prune,
    read_wal,
    segments,
    truncate_after,
    truncate_torn_tail,
    wal_stats,
)

__all__ = [
    "ConfigRecord",
    "EventRecord",
    "IntentRecord",
    "OutcomeRecord",
    "Record",
    "TickRecord",
    "WalWriter",
    "decode_record",
    "encode_record",
    "find_torn_tail",
    "last_seq",
    "prune",
    "read_wal",
    "segments",
    "truncate_after",
    "truncate_torn_tail",
    "wal_stats",
]
