"""Handlers that the CLI tests name with ``--handler tests.handlers:...``.

A ``kinesis-eo run`` subprocess imports this module by name, so the target
table comes from the environment rather than from the test's arguments.
"""

from __future__ import annotations

import os
from typing import Any

from kinesis_eo.records import Record
from kinesis_eo.sinks import EffectContext, update

EFFECTS_TABLE_ENV = "KINESIS_EO_TEST_EFFECTS_TABLE"

NOT_A_FUNCTION = 42


def count_effect(record: Record, ctx: EffectContext) -> list[Any]:
    # Deliberately not idempotent: a second application shows as applied == 2.
    return [
        update(
            os.environ[EFFECTS_TABLE_ENV],
            {"id": record.event_id},
            "ADD applied :one",
            values={":one": 1},
        )
    ]


async def async_effect(record: Record, ctx: EffectContext) -> None:
    return None
