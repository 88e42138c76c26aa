"""Torch-free result records: what every measurement and trial produces and every report reads.

This package imports neither torch nor numpy, so a report (or any tool) can read results on a machine
without the training stack.
"""

from kwsbench.results.schema import (
    SCHEMA_VERSION,
    CountsRecord,
    LatencyRecord,
    Record,
    RecordError,
    StreamEvalRecord,
    TrainSpeedRecord,
    TrialRecord,
    record_from_dict,
)
from kwsbench.results.store import append_record, read_json, read_records, write_json

__all__ = [
    "SCHEMA_VERSION",
    "CountsRecord",
    "LatencyRecord",
    "Record",
    "RecordError",
    "StreamEvalRecord",
    "TrainSpeedRecord",
    "TrialRecord",
    "append_record",
    "read_json",
    "read_records",
    "record_from_dict",
    "write_json",
]
